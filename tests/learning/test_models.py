import pytest
import torch

from simclr_s2.errors import UserError
from simclr_s2.learning.models import (
    ARCHS,
    IrrigationClassifier,
    ProjectionHead,
    apply_trainable,
    build_encoder,
    build_simclr,
    channels_last,
    load_encoder_state,
    split_for_cache,
)
from simclr_s2.learning.serving import rebuild, save_rebuildable


def batch(n: int = 4, bands: int = 10, size: int = 32) -> torch.Tensor:
    return torch.randn(n, bands, size, size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(("arch", "dim"), [("resnet18", 512), ("resnet50", 2048)])
def test_encoder_features(arch, dim):
    encoder = build_encoder(arch, 10).eval()
    assert (encoder.arch, encoder.in_channels, encoder.feature_dim) == (arch, 10, dim)
    assert encoder(batch()).shape == (4, dim)


def test_encoder_keys_are_torchvision_without_fc():
    import torchvision  # here, not at collection: only this test pays for it

    encoder = build_encoder("resnet18", 12)
    reference = torchvision.models.resnet18(weights=None).state_dict()
    assert list(encoder.state_dict()) == [k for k in reference if not k.startswith("fc.")]
    assert encoder.conv1.weight.shape == (64, 12, 7, 7)


def test_unknown_arch_and_bands():
    assert "resnet152" in ARCHS
    with pytest.raises(UserError, match="resnet34.*resnet18, resnet50"):
        build_encoder("resnet34", 10)
    with pytest.raises(UserError, match="in_channels"):
        build_encoder("resnet18", 0)


def test_projection_head_shapes():
    head = ProjectionHead(512)
    linears = [m for m in head.layers if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 1024), (1024, 512), (512, 128)]
    features = torch.randn(3, 512)
    assert head(features).shape == (3, 128)
    hidden = head.hidden(features)
    assert hidden.shape == (3, 512) and (hidden >= 0).all()  # after the ReLU
    assert ProjectionHead(64, (32, 16)).hidden(torch.randn(2, 64)).shape == (2, 32)
    with pytest.raises(UserError, match="head dims"):
        ProjectionHead(64, (16,))


def test_simclr_model_keys_and_output():
    model = build_simclr("resnet18", 10).eval()
    assert {k.split(".")[0] for k in model.state_dict()} == {"encoder", "head"}
    assert model(batch()).shape == (4, 128)


def classifier(policy: str = "all") -> IrrigationClassifier:
    torch.manual_seed(0)
    model = IrrigationClassifier.from_scratch("resnet18", 10)
    apply_trainable(model, policy)
    return model


def test_classifier_outputs_logits_and_shares_pretrained_weights():
    simclr = build_simclr("resnet18", 10)
    model = IrrigationClassifier.from_simclr(simclr).eval()
    assert model.encoder is simclr.encoder and model.head is simclr.head
    assert model(batch()).shape == (4,)
    sizes = [(m.in_features, m.out_features) for m in model.classifier if isinstance(m, torch.nn.Linear)]
    assert sizes == [(512, 256), (256, 256), (256, 1)]


def numel(*modules) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


@pytest.mark.parametrize("policy", ["head2", "head", "all"])
def test_trainable_counts(policy):
    model = classifier()
    counts = apply_trainable(model, policy)
    layers = model.head.layers
    expected = {
        "head2": numel(layers[2], model.classifier),
        "head": numel(layers[0], layers[2], model.classifier),
        "all": numel(model) - numel(layers[4]),  # the head's last Dense (128) feeds nothing
    }[policy]
    assert counts.trainable == expected == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert counts.trainable + counts.frozen == numel(model)


def test_unknown_policy():
    with pytest.raises(UserError, match="trainable.*head2, head, all"):
        apply_trainable(classifier(), "last2")


def test_train_mode_keeps_frozen_parts_in_eval():
    model = classifier("head2").train()
    assert not model.encoder.training and not model.encoder.bn1.training
    assert model.classifier.training and model.head.layers[2].training
    assert not classifier("head").train().encoder.training
    assert classifier("all").train().encoder.bn1.training
    apply_trainable(model, "all")
    assert model.encoder.bn1.training  # re-applying a policy updates the modes


@pytest.mark.parametrize("policy", ["head2", "head", "all"])
def test_one_step_changes_only_trainable_weights(policy):
    model = classifier(policy).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch(8)), torch.tensor([0.0, 1.0] * 4))
    loss.backward()
    optimizer.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    trainable = {k for k, p in model.named_parameters() if p.requires_grad}
    assert {k for k in changed if k in dict(model.named_parameters())} == trainable
    bn_stats = {k for k in before if k.startswith("encoder.") and k.endswith(("running_mean", "running_var"))}
    if policy == "all":
        assert bn_stats <= changed
    else:
        assert not bn_stats & changed
    assert not {k for k in changed if k.startswith("head.layers.4.")}


@pytest.mark.parametrize("policy", ["head2", "head"])
def test_split_for_cache_is_exact(policy):
    model = classifier(policy).eval()
    prefix, suffix = split_for_cache(model, policy)
    x = batch()
    with torch.no_grad():
        features = prefix(x)
        assert torch.equal(suffix(features), model(x))
    assert features.shape == (4, 1024 if policy == "head2" else 512)
    assert all(p.requires_grad for p in suffix.parameters())
    assert not any(p.requires_grad for p in prefix.parameters())


def test_split_for_cache_all_is_none():
    assert split_for_cache(classifier(), "all") is None


def test_load_encoder_state_round_trip():
    source = build_simclr("resnet18", 10, head_dims=(64, 32, 16)).eval()
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    loaded = load_encoder_state(state, "resnet18", 10).eval()
    assert loaded.head.dims == (64, 32, 16)
    x = batch()
    assert torch.equal(loaded(x), source(x))


def test_loading_draws_no_weights_and_shares_no_memory(tmp_path):
    """A model about to hold given weights is built on the meta device: torch's generator is where it was
    (a seeded step after the load draws what it would have), and the model owns its tensors."""
    source = IrrigationClassifier.from_scratch("resnet18", 10).eval()
    save_rebuildable(source, tmp_path)
    state, simclr = source.state_dict(), build_simclr("resnet18", 10).state_dict()
    before = torch.random.get_rng_state()
    encoder, served = load_encoder_state(simclr, "resnet18", 10), rebuild(tmp_path)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(state[k], v) for k, v in served.state_dict().items())
    assert all(p.device.type == "cpu" and p.requires_grad for p in encoder.parameters())
    assert [p.requires_grad for p in served.parameters()] == [p.requires_grad for p in source.parameters()]
    assert not {p.data_ptr() for p in served.parameters()} & {v.data_ptr() for v in state.values()}
    # as copying into drawn weights did: the module's dtype, contiguous
    stored = {k: channels_last(v.half() if v.is_floating_point() else v) for k, v in simclr.items()}
    again = load_encoder_state(stored, "resnet18", 10)
    assert all(v.dtype == simclr[k].dtype and v.is_contiguous() for k, v in again.state_dict().items())


def test_load_encoder_state_band_mismatch():
    state = build_simclr("resnet18", 12).state_dict()
    with pytest.raises(UserError, match="^encoder expects 12 bands, data has 10$"):
        load_encoder_state(state, "resnet18", 10)


def test_load_encoder_state_lists_keys_and_shapes():
    state = build_simclr("resnet18", 10).state_dict()
    with pytest.raises(UserError) as error:
        load_encoder_state(state, "resnet50", 10)
    message = str(error.value)
    assert "\n" not in message and "resnet50 with 10 bands" in message
    assert "missing keys (encoder.layer1.0.conv3.weight" in message
    assert (
        "shape mismatches" in message
        and "encoder.layer1.0.conv1.weight (64, 64, 3, 3) vs (64, 64, 1, 1)" in message
    )

    del state["head.layers.0.bias"]
    state["encoder.fc.weight"] = torch.zeros(1)
    with pytest.raises(
        UserError, match=r"1 missing keys \(head.layers.0.bias\); 1 unexpected keys \(encoder.fc.weight\)"
    ):
        load_encoder_state(state, "resnet18", 10)


def test_channels_last():
    model = channels_last(build_encoder("resnet18", 10))
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert channels_last(batch()).is_contiguous(memory_format=torch.channels_last)
    flat = torch.randn(3, 4)
    assert channels_last(flat) is flat


def frozen_names(model: IrrigationClassifier) -> set[str]:
    return {name for name, p in model.named_parameters() if not p.requires_grad}


@pytest.mark.parametrize("policy", ["head2", "head", "all"])
def test_a_head_never_pretrained_is_never_frozen(policy):
    simclr = build_simclr("resnet18", 10)
    simclr.head_pretrained = False  # as an encoder imported without a head comes
    model = IrrigationClassifier.from_simclr(simclr)
    apply_trainable(model, policy)
    unused = {"head.layers.4.weight", "head.layers.4.bias"}  # the last Dense (128) feeds nothing
    encoder = {f"encoder.{name}" for name, _ in model.encoder.named_parameters()}
    assert frozen_names(model) == (unused if policy == "all" else encoder | unused)
    if policy != "all":  # head2 equals head here, and the cache cuts right after the encoder, exactly
        prefix, suffix = split_for_cache(model.eval(), policy)
        with torch.no_grad():
            features = prefix(batch())
            assert features.shape == (4, 512) and torch.equal(suffix(features), model(batch()))


def test_a_pretrained_head_keeps_its_weights_and_a_new_one_is_drawn_from_the_seed():
    def head_weight(pretrained: bool, seed: int) -> torch.Tensor:
        torch.manual_seed(0)
        simclr = build_simclr("resnet18", 10)
        simclr.head_pretrained = pretrained
        torch.manual_seed(seed)
        return IrrigationClassifier.from_simclr(simclr).head.layers[0].weight.detach().clone()

    assert torch.equal(head_weight(True, 1), head_weight(True, 2))  # pretrained: kept as it is
    assert torch.equal(head_weight(False, 1), head_weight(False, 1))
    assert not torch.equal(head_weight(False, 1), head_weight(False, 2))
    assert not torch.equal(head_weight(False, 1), head_weight(True, 1))
