"""Checkpoint files: a tree comes back as it went in, from safetensors without pickle; the same tree gives
the same bytes; a tensor held twice is stored once; the earlier torch.save format is read; a fused optimiser
resumes exactly; snapshots do not change with the training and reuse their buffers once dropped."""

import math

import pytest
import torch
from safetensors import safe_open
from torch.utils._python_dispatch import TorchDispatchMode

from simclr_s2.errors import UserError
from simclr_s2.learning.checkpoints import Snapshots, read_tree, resumable, write_tree
from simclr_s2.learning.runtime import adam, load_optimizer_state


def _tree() -> dict:
    weights = {"conv.weight": torch.arange(24.0).reshape(2, 3, 2, 2), "bn.num_batches_tracked": torch.tensor(7)}
    optimizer = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2)}},
                 "param_groups": [{"params": [0], "betas": (0.9, 0.999), "foreach": None, "lr": 5e-5}]}
    history = [(0, {"val_auc": math.nan, "val_loss": 0.5})]
    state = {"epoch": 1, "best_auc": -math.inf, "best_model": weights, "history": history}
    return {"config": {"lr": 5e-5, "amp": False}, "model": weights, "optimizer": optimizer,
            "rng": [torch.get_rng_state()], "state": state}


def _assert_same(a, b) -> None:
    assert type(a) is type(b) or (isinstance(a, dict) and isinstance(b, dict))
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    else:
        assert a == b


def test_a_tree_comes_back_as_written_with_a_shared_tensor_stored_once(tmp_path):
    tree = _tree()
    write_tree(tree, tmp_path / "a.safetensors")
    _assert_same(read_tree(tmp_path / "a.safetensors"), tree)
    with safe_open(str(tmp_path / "a.safetensors"), framework="pt") as f:
        assert sorted(f.keys()) == ["model/bn.num_batches_tracked", "model/conv.weight",
                                    "optimizer/state/0/exp_avg", "optimizer/state/0/step", "rng/0"]


def test_the_same_tree_gives_the_same_bytes(tmp_path):
    write_tree(_tree(), tmp_path / "a.safetensors")
    write_tree(_tree(), tmp_path / "b.safetensors")
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()


def test_a_checkpoint_of_the_earlier_torch_save_format_is_read(tmp_path):
    torch.save(_tree(), tmp_path / "train.pt")
    _assert_same(read_tree(tmp_path / "train.pt"), _tree())


def test_a_resume_finds_the_earlier_name_only_when_the_new_one_is_missing(tmp_path):
    new = tmp_path / "train.safetensors"
    assert resumable(new) == new and resumable(None) is None  # neither: the new name (every rank gets a path)
    (tmp_path / "train.pt").touch()
    assert resumable(new) == tmp_path / "train.pt"
    new.touch()
    assert resumable(new) == new


def test_a_file_that_is_no_checkpoint_is_one_line(tmp_path):
    (tmp_path / "train.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match=r"^checkpoint .*train.pt: not a checkpoint file") as raised:
        read_tree(tmp_path / "train.pt")
    assert "\n" not in str(raised.value)


def test_a_snapshot_keeps_its_moment_and_its_buffers_are_reused_once_dropped():
    snapshots, weights = Snapshots(), {"w": torch.zeros(1000)}
    first = snapshots.take(weights)
    weights["w"] += 1  # training goes on
    assert torch.equal(first.tree["w"], torch.zeros(1000))
    both = snapshots.take({"model": weights, "best": first})  # an embedded snapshot is not copied again
    assert both.tree["best"]["w"] is first.tree["w"]
    buffer = both.tree["model"]["w"].data_ptr()
    del both
    assert snapshots.take({"model": weights}).tree["model"]["w"].data_ptr() == buffer


def test_a_snapshot_collected_while_a_model_is_traced_adds_no_op_to_the_trace():
    """A collection can drop a snapshot anywhere, torch.export's tracing of the registered model included
    (CI saw `is_pinned` on a lifted tensor break the export): handing its buffers back runs no tensor op."""

    class Recorded(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: list = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(func)
            return func(*args, **(kwargs or {}))

    snapshot = Snapshots().take({"w": torch.zeros(10)})
    with Recorded() as recorded:
        del snapshot
    assert recorded.ops == []


def test_a_fused_optimiser_resumed_from_a_file_steps_as_the_unbroken_one(tmp_path):
    """A checkpoint stores a channels_last weight's moments contiguous; the fused Adam walks weight and moments
    as flat memory, so load_optimizer_state lays them out as the weight again (without it the steps differ)."""
    torch.manual_seed(0)
    start = torch.randn(4, 3, 2, 2).contiguous(memory_format=torch.channels_last)
    grads = [torch.randn(4, 3, 2, 2).contiguous(memory_format=torch.channels_last) for _ in range(4)]

    def stepped(weight: torch.nn.Parameter, optimizer: torch.optim.Optimizer, steps: list) -> None:
        for grad in steps:
            weight.grad = grad.clone()
            optimizer.step()

    unbroken = torch.nn.Parameter(start.clone())
    stepped(unbroken, adam([unbroken], 0.1), grads)
    first = torch.nn.Parameter(start.clone())
    optimizer = adam([first], 0.1)
    stepped(first, optimizer, grads[:2])
    write_tree({"weight": first.detach(), "optimizer": optimizer.state_dict()}, tmp_path / "c.safetensors")
    saved = read_tree(tmp_path / "c.safetensors")
    assert saved["optimizer"]["state"][0]["exp_avg"].is_contiguous()  # not as the weight is
    resumed = torch.nn.Parameter(saved["weight"].contiguous(memory_format=torch.channels_last))
    optimizer = adam([resumed], 0.1)
    load_optimizer_state(optimizer, saved["optimizer"])
    assert optimizer.state[resumed]["exp_avg"].stride() == resumed.stride()
    stepped(resumed, optimizer, grads[2:])
    assert torch.equal(resumed, unbroken)
