"""Imported encoders: a state dict in the exact layout torchgeo publishes its Sentinel-2 ResNets in (a timm
ResNet with 13 input channels; timm keeps torchvision's parameter names), built here from torchvision since
no weights can be downloaded, converts into our SimCLR layout with conv1's channels picked by band name."""

from __future__ import annotations

import re
from dataclasses import asdict

import pytest
import torch

from simclr_s2.bigearthnet.bands import BANDS, SCALINGS, STUDY_BANDS, Bands
from simclr_s2.errors import UserError
from simclr_s2.learning.config import TRAINABLE, AugmentConfig
from simclr_s2.learning.imported_weights import (
    SIMCLR,
    SIMCLR_SCALING,
    TIMM,
    TORCHGEO_S2_BANDS,
    TORCHGEO_S2_SCALING,
    data_bands,
    import_encoder_state,
    read_state_dict,
    state_dict_layout,
    timm_to_simclr,
)
from simclr_s2.learning.models import (
    HEAD_DIMS,
    IrrigationClassifier,
    apply_trainable,
    build_simclr,
    load_encoder_state,
)

# torchgeo/models/resnet.py, `_sentinel2_toa_bands` (SSL4EO-S12 L1C), as torchgeo spells them
TORCHGEO_TOA = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8a", "B9", "B10", "B11", "B12"]


def _torchgeo_resnet(arch: str = "resnet50", fc: bool = True) -> tuple[torch.nn.Module, dict]:
    """A ResNet whose state dict has the keys and shapes of torchgeo's SENTINEL2_ALL_* files."""
    torch.manual_seed(0)
    import torchvision  # here, not at collection: every xdist worker would pay its import

    net = getattr(torchvision.models, arch)(weights=None)
    net.conv1 = torch.nn.Conv2d(13, 64, kernel_size=7, stride=2, padding=3, bias=False)
    with torch.no_grad():  # BatchNorm statistics that are not the identity, as trained weights have
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    state = net.state_dict()
    return net.eval(), state if fc else {k: v for k, v in state.items() if not k.startswith("fc.")}


@pytest.fixture(scope="module")
def torchgeo_resnet50() -> tuple[torch.nn.Module, dict]:
    return _torchgeo_resnet()


def test_band_order_and_scaling_are_torchgeos():
    spelled = [re.sub(r"^B(\d)$", r"B0\1", b).upper() for b in TORCHGEO_TOA]
    assert list(TORCHGEO_S2_BANDS) == spelled
    assert TORCHGEO_S2_SCALING in SCALINGS and SIMCLR_SCALING in SCALINGS  # the loader applies both


def test_layouts_are_told_apart(torchgeo_resnet50):
    _, state = torchgeo_resnet50
    assert state_dict_layout(state) == TIMM
    assert state_dict_layout({f"module.{k}": v for k, v in state.items()}) == TIMM
    assert state_dict_layout(build_simclr("resnet18", 10).state_dict()) == SIMCLR


def test_conversion_picks_conv1_channels_by_band_name(torchgeo_resnet50):
    net, state = torchgeo_resnet50
    converted = timm_to_simclr(state, Bands.parse("study"))
    picked = converted["encoder.conv1.weight"]
    assert picked.shape == (64, len(STUDY_BANDS), 7, 7)
    for i, band in enumerate(STUDY_BANDS):
        assert torch.equal(picked[:, i], state["conv1.weight"][:, TORCHGEO_S2_BANDS.index(band)])
    for key, value in state.items():
        if key != "conv1.weight" and not key.startswith("fc."):
            assert torch.equal(converted[f"encoder.{key}"], value), key
    assert not any(k.startswith(("fc.", "encoder.fc.")) for k in converted)
    assert [converted[f"head.layers.{i}.weight"].shape[0] for i in (0, 2, 4)] == list(HEAD_DIMS)

    # the same network: our encoder on the 10 study bands equals the 13-band ResNet's features with the
    # bands in torchgeo's channels and B01, B09, B10 (absent from the data) at zero
    model = load_encoder_state(converted, "resnet50", len(STUDY_BANDS)).eval()
    x = torch.randn(2, len(STUDY_BANDS), 64, 64)
    full = torch.zeros(2, 13, 64, 64)
    full[:, [TORCHGEO_S2_BANDS.index(b) for b in STUDY_BANDS]] = x
    features = torch.nn.Sequential(*list(net.children())[:-1])  # all but fc: ends with global average pooling
    with torch.no_grad():  # summing 10 channels or 13 (3 of them zero) rounds differently: 1e-4, not exact
        torch.testing.assert_close(model.encoder(x), features(full).flatten(1), rtol=1e-4, atol=1e-4)


def test_head_is_seeded_and_file_without_fc_or_counters_converts(torchgeo_resnet50):
    _, state = torchgeo_resnet50
    a, b = timm_to_simclr(state, Bands.parse("all"), seed=3), timm_to_simclr(state, Bands.parse("all"), seed=3)
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = timm_to_simclr(state, Bands.parse("all"), seed=4)
    assert not torch.equal(a["head.layers.0.weight"], other["head.layers.0.weight"])
    bare = {
        k: v for k, v in state.items() if not k.startswith("fc.") and not k.endswith("num_batches_tracked")
    }
    assert timm_to_simclr(bare, Bands.parse("all"), seed=3).keys() == a.keys()


def test_import_takes_either_layout():
    _, state = _torchgeo_resnet(
        "resnet18", fc=False
    )  # torchgeo also publishes a ResNet-18 SENTINEL2_ALL_MOCO
    imported = import_encoder_state(state, Bands.parse("B04,B03,B02"))
    assert (imported.arch, imported.bands, imported.scaling, imported.layout) == (
        "resnet18",
        ("B04", "B03", "B02"),
        TORCHGEO_S2_SCALING,
        TIMM,
    )
    assert imported.model.encoder.in_channels == 3
    own = build_simclr("resnet18", 10).state_dict()
    imported = import_encoder_state(own, Bands.parse("study"))
    assert (imported.arch, imported.scaling, imported.layout) == ("resnet18", SIMCLR_SCALING, SIMCLR)
    assert all(torch.equal(v, imported.model.state_dict()[k]) for k, v in own.items())


def test_file_round_trip_and_random_bytes(tmp_path, torchgeo_resnet50):
    _, state = torchgeo_resnet50
    torch.save(state, tmp_path / "moco.pth")
    assert state_dict_layout(read_state_dict(tmp_path / "moco.pth")) == TIMM
    (tmp_path / "noise.pth").write_bytes(bytes(range(256)) * 40)
    with pytest.raises(UserError, match=r"noise.pth is not a PyTorch state-dict file"):
        read_state_dict(tmp_path / "noise.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(
        UserError, match=r"list.pth: expected a state dict \(parameter name -> tensor\), got a list"
    ):
        read_state_dict(tmp_path / "list.pth")
    with pytest.raises(UserError, match="does not exist"):
        read_state_dict(tmp_path / "missing.pth")


def _with(state: dict, **changes) -> dict:
    return {**state, **{k.replace("__", "."): v for k, v in changes.items()}}


@pytest.mark.parametrize(
    ("make", "bands", "match"),
    [
        (lambda s: [1, 2], "study", "got a list"),
        (lambda s: {}, "study", "got an empty mapping"),
        (lambda s: _with(s, bn1__weight="not a tensor"), "study", "'bn1.weight' is not one"),
        (
            lambda s: {"blocks.0.attn.qkv.weight": torch.ones(3)},
            "study",
            r"keys blocks.0.attn.qkv.weight, ... are neither",
        ),
        (
            lambda s: _with(s, conv1__weight=torch.ones(64, 12, 7, 7)),
            "study",
            r"shape \(64, 12, 7, 7\), expected \(64, 13, 7, 7\)",
        ),
        (
            lambda s: _with(s, layer2__0__conv1__weight=torch.ones(7, 256, 1, 1)),
            "study",
            r"a resnet50 with 10 input bands but layer2.0.conv1.weight \(7, 256, 1, 1\) \(expected \(128, ",
        ),
        (
            lambda s: {k: v for k, v in s.items() if not k.startswith("layer4.2.")},
            "study",
            r"\[3, 4, 6, 2\] blocks per stage",
        ),
        (lambda s: s, "B04,B10X", "bands"),
        (lambda s: build_simclr("resnet18", 10).state_dict(), "all", "encoder expects 10 bands, data has 12"),
    ],
    ids=[
        "list",
        "empty",
        "not_tensor",
        "vit",
        "conv1_12",
        "layer_shape",
        "missing_block",
        "unknown_band",
        "simclr_bands",
    ],
)
def test_bad_state_dicts_are_one_clear_line(torchgeo_resnet50, make, bands, match):
    _, state = torchgeo_resnet50
    with pytest.raises(UserError, match=match) as info:
        import_encoder_state(make(state), Bands.parse(bands))
    assert "\n" not in str(info.value)


def test_bands_the_encoder_never_saw(torchgeo_resnet50):
    _, state = torchgeo_resnet50
    rgb = ("B04", "B03", "B02")
    with pytest.raises(UserError, match="bands: B8A not among the encoder's bands B04,B03,B02"):
        timm_to_simclr(_with(state, conv1__weight=torch.ones(64, 3, 7, 7)), Bands.parse("B04,B8A"), source_bands=rgb)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_weights_that_are_not_finite_are_refused(torchgeo_resnet50, bad):
    _, state = torchgeo_resnet50
    own = build_simclr("resnet18", 3).state_dict()
    for weights in (_with(state, layer1__0__conv1__weight=torch.full((64, 64, 1, 1), bad)),
                    {k: torch.full_like(v, bad) if v.is_floating_point() else v for k, v in own.items()}):
        with pytest.raises(UserError, match=r"^w.pt: \d+ of \d+ tensors hold NaN or infinite values \(") as info:
            import_encoder_state(weights, Bands.parse("B04,B03,B02"), source="w.pt")
        assert "expected finite weights" in str(info.value) and "\n" not in str(info.value)


def test_a_checkpoint_is_read_only_for_the_bands_it_records(tmp_path):
    rgb = ("B04", "B03", "B02")
    model = build_simclr("resnet18", 3).state_dict()
    torch.save({"config": {"augment": asdict(AugmentConfig(bands=rgb))}, "model": model}, tmp_path / "ckpt.pt")
    with pytest.raises(UserError, match=rf"^bands: {tmp_path / 'ckpt.pt'} was pretrained on B04,B03,B02; "
                                        r"expected that list \(names and order\), got B02,B03,B04$"):
        read_state_dict(tmp_path / "ckpt.pt", "state_dict", Bands.parse("B02,B03,B04"))
    assert read_state_dict(tmp_path / "ckpt.pt", "state_dict", Bands(rgb)).keys() == model.keys()
    assert read_state_dict(tmp_path / "ckpt.pt").keys() == model.keys()  # no bands asked: nothing to contradict


def test_a_checkpoints_recorded_band_order_is_the_answer_to_auto_and_checks_the_bands_given(tmp_path):
    """Ten bands in another order than the study's: counting channels would feed blue where red was learnt.
    The same by import_encoder (read_state_dict, then import_encoder_state) and by a fine-tune's pretrained."""
    from simclr_s2.tracking.registry import load_pretrained  # a file needs no tracking store

    recorded = Bands.parse("B02,B03,B04,B08,B05,B06,B07,B8A,B11,B12")
    path = tmp_path / "pretrain.pt"
    torch.save({"config": {"augment": asdict(AugmentConfig(bands=tuple(recorded)))},
                "model": build_simclr("resnet18", len(recorded)).state_dict()}, path)
    assert import_encoder_state(read_state_dict(path, "state_dict"), None).bands == recorded
    assert load_pretrained(None, str(path)).bands == recorded
    assert load_pretrained(None, str(path), recorded).bands == recorded
    with pytest.raises(UserError, match=rf"^bands: {path} was pretrained on {recorded.text}; expected that list "
                                        rf"\(names and order\), got {Bands(STUDY_BANDS).text}$"):
        load_pretrained(None, str(path), Bands(STUDY_BANDS))


def test_auto_maps_every_band_of_the_encoder_that_l2a_has(caplog):
    _, state = _torchgeo_resnet("resnet18", fc=False)  # torchgeo also publishes a ResNet-18 SENTINEL2_ALL_MOCO
    imported = import_encoder_state(state, None)
    assert imported.bands == BANDS and len(BANDS) == 12  # all of torchgeo's 13 but B10 (cirrus, L1C only)
    assert set(TORCHGEO_S2_BANDS) - set(imported.bands) == {"B10"}
    conv1 = imported.model.encoder.conv1.weight
    for i, band in enumerate(BANDS):
        assert torch.equal(conv1[:, i], state["conv1.weight"][:, TORCHGEO_S2_BANDS.index(band)])
    assert not caplog.records
    with caplog.at_level("WARNING", logger="simclr_s2.learning.imported_weights"):
        import_encoder_state(state, Bands.parse("study"))  # a choice kept, but B01 and B09 are not dropped unsaid
    assert "the encoder also takes B01,B09, which the archive has; bands=auto gives it all 12" in caplog.text


def test_auto_bands_of_this_projects_encoders_follow_their_channels():
    assert data_bands(build_simclr("resnet18", 10).state_dict(), None) == STUDY_BANDS
    assert data_bands(build_simclr("resnet18", 12).state_dict(), None) == BANDS
    assert data_bands(build_simclr("resnet18", 3).state_dict(), Bands.parse("B04,B03,B02")) == ("B04", "B03", "B02")
    with pytest.raises(UserError, match=r"^bands: the encoder takes 3 channels; auto knows 10 \(study\)"):
        data_bands(build_simclr("resnet18", 3).state_dict(), None)


def _unused(model: IrrigationClassifier) -> set[str]:
    """Parameters the classifier's output never reads (no gradient reaches them)."""
    apply_trainable(model, "all")
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()(torch.randn(2, model.encoder.in_channels, 32, 32)).sum().backward()
    unused = {name for name, p in model.named_parameters() if p.grad is None}
    model.zero_grad(set_to_none=True)
    return unused


def test_no_randomly_initialised_parameter_is_frozen_under_any_policy():
    _, state = _torchgeo_resnet("resnet18", fc=False)
    imported = import_encoder_state(state, None)
    assert imported.model.head_pretrained is False
    model = IrrigationClassifier.from_simclr(imported.model)
    unused = _unused(model)
    assert unused == {"head.layers.4.weight", "head.layers.4.bias"}
    pretrained = {f"encoder.{k}" for k in state}
    encoder = {name for name, _ in model.named_parameters() if name.startswith("encoder.")}
    for policy in TRAINABLE:
        apply_trainable(model, policy)
        frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
        assert frozen - unused <= pretrained, policy  # only weights from the file, or weights nothing reads
        assert frozen - unused == (set() if policy == "all" else encoder), policy  # head2: head.layers.0 trains
    own = import_encoder_state(build_simclr("resnet18", 10).state_dict(), None)
    assert own.model.head_pretrained is True  # this project's layout carries its pretrained head


def test_a_torchgeo_file_given_as_pretrained_gets_every_l2a_band(tmp_path):
    from simclr_s2.tracking.registry import load_pretrained  # a file needs no tracking store

    _, state = _torchgeo_resnet("resnet18", fc=False)
    torch.save(state, tmp_path / "ssl4eo.pt")
    assert load_pretrained(None, str(tmp_path / "ssl4eo.pt")).bands == BANDS  # as import_encoder's auto


def test_a_plain_safetensors_state_dict_is_read_as_it_is(tmp_path, torchgeo_resnet50):
    """A state dict as safetensors.torch.save_file writes it (no checkpoint metadata of this project; other
    metadata or none) reads as the same tensors; a pretrain checkpoint's safetensors is still a checkpoint."""
    from safetensors.torch import save_file

    from simclr_s2.learning.checkpoints import write_tree

    _, state = torchgeo_resnet50
    save_file(state, tmp_path / "moco.safetensors", metadata={"format": "pt"})
    save_file(state, tmp_path / "bare.safetensors")
    for name in ("moco", "bare"):
        read = read_state_dict(tmp_path / f"{name}.safetensors")
        assert read.keys() == state.keys() and all(torch.equal(read[k], v) for k, v in state.items())
    assert import_encoder_state(read, None).layout == TIMM
    rgb = ("B04", "B03", "B02")
    write_tree({"config": {"augment": asdict(AugmentConfig(bands=rgb))},
                "model": build_simclr("resnet18", 3).state_dict()}, tmp_path / "ckpt.safetensors")
    assert read_state_dict(tmp_path / "ckpt.safetensors").bands == rgb
    (tmp_path / "noise.safetensors").write_bytes(bytes(range(256)) * 40)
    with pytest.raises(UserError, match=r"noise.safetensors is not a PyTorch state-dict file") as info:
        read_state_dict(tmp_path / "noise.safetensors")
    assert "\n" not in str(info.value)


def test_weights_of_bigearthnets_12_bands_import_with_source_bands_all(torchgeo_resnet50):
    """torchgeo's SENTINEL2_ALL_SECO_ECO: conv1 takes DN / 10,000 of B01 ... B12 without B10, in the archive's
    order; by default (SSL4EO-S12's 13 bands) it is refused saying what import_encoder takes and how."""
    from simclr_s2.learning.imported_weights import SOURCE_BANDS
    from simclr_s2.settings import specs
    from simclr_s2.settings.spec import fields_of

    _, state = torchgeo_resnet50
    seco_eco = _with(state, conv1__weight=torch.randn(64, 12, 7, 7))
    imported = import_encoder_state(seco_eco, None, source_bands=SOURCE_BANDS["all"])
    assert (imported.bands, imported.scaling, imported.layout) == (BANDS, TORCHGEO_S2_SCALING, TIMM)
    assert torch.equal(imported.model.encoder.conv1.weight, seco_eco["conv1.weight"])
    study = import_encoder_state(seco_eco, Bands(STUDY_BANDS), source_bands=SOURCE_BANDS["all"])
    conv1 = study.model.encoder.conv1.weight
    assert all(torch.equal(conv1[:, i], seco_eco["conv1.weight"][:, BANDS.index(b)]) for i, b in enumerate(STUDY_BANDS))
    with pytest.raises(UserError, match=r"^w.pth: conv1.weight has shape \(64, 12, 7, 7\), expected \(64, 13, 7, 7\) "
                                        r"for the bands B01,.*,B12; import_encoder takes ResNets whose inputs are "
                                        r"Sentinel-2 DN / 10,000 of .*source_bands=all") as info:
        import_encoder_state(seco_eco, None, source="w.pth")
    assert "\n" not in str(info.value)
    [field] = [f for f in fields_of(specs.ImportEncoder) if f.name == "source_bands"]
    assert field.metadata["choices"] == tuple(SOURCE_BANDS) and field.default == "ssl4eo13"
    assert SOURCE_BANDS["ssl4eo13"] == TORCHGEO_S2_BANDS


@pytest.mark.parametrize("text", ["hello\n", "all", "Just", "version https://git-lfs.github.com/spec/v1\n"])
def test_a_text_file_is_no_state_dict_in_one_line(tmp_path, text):
    """The weights-only unpickler reads a text's letters as opcodes: 'hello' (KeyError 101), 'all' (IndexError)
    and 'Just' (struct.error) were tracebacks."""
    (tmp_path / "w.pt").write_text(text)
    with pytest.raises(UserError, match=r"^state_dict: .*w.pt is not a PyTorch state-dict file \((its bytes are "
                                        r"no pickle|Weights only load failed\. .*)\)$"):
        read_state_dict(tmp_path / "w.pt", "state_dict")


def test_a_folder_is_no_state_dict_file(tmp_path):
    """A logged model's folder (runs:/<id>/model, downloaded) was said not to exist."""
    with pytest.raises(UserError, match=rf"^state_dict: {tmp_path} is a folder; expected a state-dict file"):
        read_state_dict(tmp_path, "state_dict")
