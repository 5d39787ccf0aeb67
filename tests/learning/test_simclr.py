import math

import pytest
import torch
from safetensors import safe_open
from torch.utils.data import DataLoader, TensorDataset

from simclr_s2.errors import UserError
from simclr_s2.learning.checkpoints import read_tree
from simclr_s2.learning.config import AugmentConfig
from simclr_s2.learning.datasets import BatchLoader, MemoryDataset
from simclr_s2.learning.imported_weights import read_state_dict
from simclr_s2.learning.models import build_simclr
from simclr_s2.learning.runtime import Recorder
from simclr_s2.learning.simclr import LARS, make_optimizer, nt_xent_loss, param_groups, pretrain
from simclr_s2.settings.spec import build
from simclr_s2.settings.specs import Pretrain


def reference_nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> float:
    """Straight from Chen et al. 2020, eq. (1), with z_{2k-1}, z_{2k} the two views of sample k."""
    z = [v for pair in zip(z1.tolist(), z2.tolist()) for v in pair]  # z_1 ... z_2N, pairs adjacent

    def sim(u, v):
        return sum(a * b for a, b in zip(u, v)) / (
            math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v))
        )

    def loss(i, j):
        denominator = sum(math.exp(sim(z[i], z[k]) / tau) for k in range(len(z)) if k != i)
        return -math.log(math.exp(sim(z[i], z[j]) / tau) / denominator)

    n = len(z1)
    return sum(loss(2 * k, 2 * k + 1) + loss(2 * k + 1, 2 * k) for k in range(n)) / (2 * n)


@pytest.mark.parametrize("n", [1, 2, 5, 16])
@pytest.mark.parametrize("tau", [0.05, 0.1, 0.5, 1.0])
def test_nt_xent_matches_the_paper(n, tau):
    g = torch.Generator().manual_seed(n)
    z1, z2 = (
        torch.randn(n, 7, generator=g, dtype=torch.float64),
        torch.randn(n, 7, generator=g, dtype=torch.float64),
    )
    assert nt_xent_loss(z1, z2, tau).item() == pytest.approx(reference_nt_xent(z1, z2, tau), rel=1e-9)


def test_nt_xent_properties():
    z = torch.randn(8, 16)
    assert nt_xent_loss(z, 3 * z).item() < nt_xent_loss(z, torch.randn(8, 16)).item()
    assert torch.allclose(nt_xent_loss(z, z * 2), nt_xent_loss(z, z))  # cosine similarity: scale-free
    z1 = torch.randn(4, 16, requires_grad=True)
    nt_xent_loss(z1, torch.randn(4, 16)).backward()
    assert torch.isfinite(z1.grad).all()
    with pytest.raises(UserError, match="temperature"):
        nt_xent_loss(z, z, 0.0)


def test_lars_scales_each_layer_by_its_trust_ratio():
    weight = torch.nn.Parameter(torch.full((2, 2), 3.0))  # ||w|| = 6
    bias = torch.nn.Parameter(torch.ones(2))
    optimizer = LARS(
        [{"params": [weight]}, {"params": [bias], "lars": False}], lr=0.5, momentum=0.9, eta=0.01
    )
    weight.grad, bias.grad = torch.full((2, 2), 0.5), torch.full((2,), 0.5)  # ||g|| = 1
    optimizer.step()
    assert torch.allclose(weight, torch.full((2, 2), 3.0 - 0.5 * 0.01 * 6 * 0.5))
    assert torch.allclose(bias, torch.full((2,), 1.0 - 0.5 * 0.5))


def test_param_groups_keep_biases_and_norms_apart():
    model = build_simclr("resnet18", 3)
    decayed, plain = param_groups(model, 1e-6)
    assert (
        all(p.ndim > 1 for p in decayed["params"]) and plain["lars"] is False and plain["weight_decay"] == 0
    )
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))
    with pytest.raises(UserError, match="optimizer.*sgd, adam, lars"):
        make_optimizer(model, "rmsprop", 0.1)


# Distinct smooth 10-band 32 x 32 patches: each is its own instance, which SimCLR learns to tell apart.
def structured_data(n: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    coarse = torch.randn(n, 10, 8, 8, generator=g)
    return torch.nn.functional.interpolate(coarse, size=32, mode="bilinear") + 0.1 * torch.randn(
        n, 10, 32, 32, generator=g
    )


LIGHT = AugmentConfig(crop_scale=(0.5, 1.0), jitter_p=0.0, blur_p=0.0)


def loader(n: int = 32, batch_size: int = 8) -> BatchLoader:
    """The stage's loader (shuffled by (seed, epoch), so a resumed run must tell it the epoch), read inline."""
    return BatchLoader(MemoryDataset(structured_data(n), torch.zeros(n)), batch_size, shuffle=True, drop_last=True,
                       prefetch=0)


def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_simclr("resnet18", 10, head_dims=(64, 32, 16))


def test_pretraining_lowers_the_loss():
    log = Recorder()
    result = pretrain(small_model(), loader(), 8, optimizer="sgd", lr=0.01, augment=LIGHT, progress=log)
    logged = log.entries
    # log(2N - 1) is the loss of embeddings that cannot tell the 2N views apart (N = 8 here).
    final = sum(result.epoch_losses[-2:]) / 2
    assert final < math.log(15) - 0.2 and final < result.epoch_losses[0] - 0.3
    assert result.global_step == 32 and result.start_epoch == 0
    assert [s for s, m in logged if "loss" in m] == list(range(1, 33))
    assert [(s, m["epoch"]) for s, m in logged if "epoch_loss" in m] == [(4 * e, e) for e in range(1, 9)]


@pytest.mark.parametrize("optimizer", ["sgd", "lars"])
def test_cosine_schedule_and_optimizers(optimizer):
    log = Recorder()
    pretrain(small_model(), loader(16), 2, optimizer=optimizer, lr=0.1, augment=LIGHT, progress=log)
    lrs = [m["lr"] for m in log.metrics() if "lr" in m]
    assert lrs[0] == pytest.approx(0.1) and lrs == sorted(lrs, reverse=True)
    assert lrs[-1] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 3 / 4)))


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def unbroken() -> tuple[list, dict[str, torch.Tensor]]:
    """What an uninterrupted 2-epoch run logged and its trained weights: made once, for both checkpoint formats."""
    full = Recorder()
    reference = small_model()
    pretrain(reference, loader(), 2, optimizer="sgd", lr=0.05, augment=LIGHT, progress=full)
    return full.entries, reference.state_dict()


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> tuple[bytes, Recorder]:
    """The checkpoint's bytes and the log of a run stopped after its first epoch: made once, each resume test
    writes its own copy (and form) of that checkpoint."""
    def stop_after_epoch_one(epoch):
        raise Interrupt

    first = Recorder(on_epoch=stop_after_epoch_one)
    checkpoint = tmp_path_factory.mktemp("interrupted") / "pretrain.safetensors"
    with pytest.raises(Interrupt):
        pretrain(small_model(), loader(), 2, optimizer="sgd", lr=0.05, augment=LIGHT, checkpoint_path=checkpoint,
                 progress=first)
    assert not checkpoint.with_name("pretrain.safetensors.tmp").exists()
    with safe_open(str(checkpoint), framework="pt") as f:
        assert {"model/encoder.conv1.weight", "optimizer/state/0/momentum_buffer"} <= set(f.keys())
    assert read_state_dict(checkpoint).keys() == small_model().state_dict().keys()  # import_encoder takes it
    return checkpoint.read_bytes(), first


@pytest.mark.parametrize("earlier_format", [False, True])
def test_resume_continues_exactly(tmp_path, earlier_format, unbroken, interrupted):
    """The checkpoint is one safetensors file; one of the earlier format and name (pretrain.pt, torch.save of
    the same tree) is found and resumed from too."""
    full_entries, reference = unbroken
    written, first = interrupted
    second = Recorder()
    checkpoint = tmp_path / "run" / "pretrain.safetensors"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(written)
    if earlier_format:
        torch.save(read_tree(checkpoint), checkpoint.with_suffix(".pt"))
        checkpoint.unlink()
    torch.manual_seed(1234)  # whatever the global RNG holds now, the checkpoint's states win
    resumed = small_model()
    result = pretrain(resumed, loader(), 2, optimizer="sgd", lr=0.05, augment=LIGHT, checkpoint_path=checkpoint,
                      progress=second)
    # Steps 1-4 and epoch 1 come from the first call, steps 5-8 and epoch 2 from the resumed one, which
    # found the first epoch's steps in the checkpoint.
    assert result.start_epoch == 1 and result.global_step == 8
    assert second.restored == first.entries
    assert first.entries + second.entries == full_entries
    for key, value in reference.items():
        assert torch.equal(resumed.state_dict()[key], value), key

    with safe_open(str(checkpoint), framework="pt") as f:  # the last epoch's: nothing trains on from it
        stored = set(f.keys())
    assert "model/encoder.conv1.weight" in stored and not any(k.startswith("optimizer/") for k in stored)
    again = small_model()
    finished = pretrain(again, loader(), 2, optimizer="sgd", lr=0.05, augment=LIGHT, checkpoint_path=checkpoint)
    assert finished.epoch_losses == result.epoch_losses  # a finished run has nothing left to do
    for key, value in reference.items():
        assert torch.equal(again.state_dict()[key], value), key
    with pytest.raises(UserError, match="optimizer='sgd' there, 'adam' here"):
        pretrain(
            small_model(), loader(), 2, optimizer="adam", lr=0.05, augment=LIGHT, checkpoint_path=checkpoint
        )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"lr": 0.0}, "lr"),
        ({"temperature": -1.0}, "temperature"),
        ({"epochs": 0}, "epochs"),
    ],
)
def test_bad_parameters(kwargs, match):
    kwargs = {"epochs": 1, **kwargs}
    with pytest.raises(UserError, match=match):
        pretrain(small_model(), loader(), kwargs.pop("epochs"), **kwargs)


def test_empty_loader():
    with pytest.raises(UserError, match="no batches"):
        pretrain(small_model(), DataLoader(TensorDataset(torch.zeros(0, 10, 8, 8))), 1)


def test_every_step_contrasts_two_patches_or_more():
    """NT-Xent of a single patch is 0 whatever the weights: batch_size 1 is refused, a last batch of one patch is
    dropped (here 5 patches in batches of 4: one step), and a DataLoader's batch of one stops the run."""
    with pytest.raises(UserError, match="batch_size: NT-Xent needs at least 2"):
        pretrain(small_model(), loader(4, batch_size=1), 1)
    five = BatchLoader(MemoryDataset(structured_data(5), torch.zeros(5)), 4, shuffle=True, prefetch=0)
    assert pretrain(small_model(), five, 1, augment=LIGHT).global_step == 1
    with pytest.raises(UserError, match="batch_size: .* got a batch of 1"):
        pretrain(small_model(), DataLoader(TensorDataset(structured_data(3)), batch_size=2), 1, augment=LIGHT)


def test_the_epoch_loss_is_the_mean_over_its_patches():
    log = Recorder()
    six = BatchLoader(MemoryDataset(structured_data(6), torch.zeros(6)), 4, prefetch=0)
    result = pretrain(small_model(), six, 1, augment=LIGHT, progress=log)
    first, last = (m["loss"] for m in log.metrics() if "loss" in m)
    assert result.epoch_losses == [pytest.approx((4 * first + 2 * last) / 6)]


@pytest.mark.parametrize(("name", "value"), [
    ("batch_size", "1"), ("temperature", "1e-300"), ("crop_min_scale", "1.5"), ("view_size", "20000")])
def test_pretrain_parameters_out_of_range_are_refused_by_name(name, value):
    with pytest.raises(UserError, match=f"^{name}: expected"):
        build(Pretrain, {name: value})
