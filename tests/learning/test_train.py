"""The supervised loop: the feature cache gives the plain path's result, a resumed run equals an unbroken
one, early stopping keeps the best epoch's weights."""

import copy
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from simclr_s2.errors import NonFiniteError, UserError
from simclr_s2.learning import runtime
from simclr_s2.learning import train as train_module
from simclr_s2.learning.checkpoints import read_tree, write_tree
from simclr_s2.learning.datasets import BatchLoader, MemoryDataset
from simclr_s2.learning.feature_cache import cached_training_set
from simclr_s2.learning.metrics import roc_auc
from simclr_s2.learning.models import IrrigationClassifier, apply_trainable
from simclr_s2.learning.runtime import Recorder
from simclr_s2.learning.train import FitConfig, FitResult, fit


def _data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = (torch.arange(n) % 2).float()
    x = torch.randn(n, 10, 24, 24, generator=g) + y[:, None, None, None] * 0.5
    return x, y


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = IrrigationClassifier.from_scratch("resnet18", 10)
    return model, _data(32, 1), _data(16, 2)


def _loaders(train, val, batch_size=8, seed=0):
    return (BatchLoader(MemoryDataset(*train), batch_size, shuffle=True, seed=seed),
            BatchLoader(MemoryDataset(*val), batch_size))


@pytest.mark.parametrize("policy", ["head2", "head"])
def test_cached_features_give_the_plain_result(tiny, policy):
    base, train, val = tiny
    cfg = FitConfig(epochs=3, lr=1e-3, patience=10, seed=0)
    plain, cached = copy.deepcopy(base), copy.deepcopy(base)
    plain_log, cached_log = Recorder(), Recorder()

    apply_trainable(plain, policy)
    fit(plain, *_loaders(train, val), cfg, progress=plain_log)

    apply_trainable(cached, policy)
    suffix, train_b, val_b = cached_training_set(cached, policy, BatchLoader(MemoryDataset(*train), 8),
                                                 BatchLoader(MemoryDataset(*val), 8), 8, 0)
    fit(suffix, train_b, val_b, cfg, progress=cached_log)

    for a, b in zip(plain_log.metrics(), cached_log.metrics(), strict=True):
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), key
    for (name, p), (_, q) in zip(plain.state_dict().items(), cached.state_dict().items(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4, msg=lambda m, name=name: f"{name}: {m}")


class _CountingThreads(BatchLoader):
    """Batches that note torch's intra-op thread count as each is drawn."""

    seen: list[int]

    def __iter__(self):
        for batch in super().__iter__():
            self.seen.append(torch.get_num_threads())
            yield batch


def test_a_head_on_cached_features_trains_on_one_thread_to_the_same_weights(tiny, monkeypatch):
    base, train, val = tiny
    model = copy.deepcopy(base)
    apply_trainable(model, "head2")
    suffix, train_b, val_b = cached_training_set(model, "head2", BatchLoader(MemoryDataset(*train), 8),
                                                 BatchLoader(MemoryDataset(*val), 8), 8, 0)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        results = []
        for small in (train_module.SMALL_MODEL_WEIGHTS, 0):  # one thread, then torch's two
            monkeypatch.setattr(train_module, "SMALL_MODEL_WEIGHTS", small)
            head, counted, log = copy.deepcopy(suffix), _CountingThreads(train_b.source, 8, shuffle=True), Recorder()
            counted.seen = []
            fit(head, counted, val_b, FitConfig(epochs=2, lr=1e-3), progress=log)
            assert torch.get_num_threads() == 2  # given back
            results.append((set(counted.seen), log.metrics(), head.state_dict()))
    finally:
        torch.set_num_threads(threads)
    (one_seen, one_log, one_weights), (two_seen, two_log, two_weights) = results
    assert (one_seen, two_seen) == ({1}, {2})
    assert one_log == two_log
    for name, weights in one_weights.items():
        assert torch.equal(weights, two_weights[name]), name


def test_cache_is_not_offered_when_everything_trains(tiny):
    model, _train, _val = tiny
    assert cached_training_set(copy.deepcopy(model), "all", [], [], 8, 0) is None


class _Killed(Exception):
    pass


RESUMED = FitConfig(epochs=3, lr=1e-3, patience=10, seed=0)


@dataclass(frozen=True)
class Unbroken:
    model: torch.nn.Module
    log: Recorder
    result: FitResult
    checkpoint: Path  # its last one


@pytest.fixture(scope="module")
def unbroken(tiny, tmp_path_factory) -> Unbroken:
    """`tiny` trained RESUMED's epochs without a stop, once for every checkpoint form: what a resumed run
    must equal, and the last checkpoint a finished run leaves."""
    base, train, val = tiny
    model, log = copy.deepcopy(base), Recorder()
    checkpoint = tmp_path_factory.mktemp("unbroken") / "train.safetensors"
    result = fit(model, *_loaders(train, val), RESUMED, checkpoint_path=checkpoint, progress=log)
    return Unbroken(model, log, result, checkpoint)


@pytest.fixture(scope="module")
def killed(tiny, tmp_path_factory) -> tuple[bytes, Recorder]:
    """The checkpoint's bytes and the log of a run killed after its first epoch: made once, each resume test
    writes its own copy (and form) of that checkpoint."""
    base, train, val = tiny

    def kill_after_first_epoch(epoch):
        raise _Killed

    first = Recorder(on_epoch=kill_after_first_epoch)
    checkpoint = tmp_path_factory.mktemp("killed") / "train.safetensors"
    with pytest.raises(_Killed):
        fit(copy.deepcopy(base), *_loaders(train, val), RESUMED, checkpoint_path=checkpoint, progress=first)
    assert [step for step, _ in first.entries] == [0]
    return checkpoint.read_bytes(), first


@pytest.mark.parametrize("written", ["now", "earlier_format", "cpu_rng_only", "on_a_gpu"])
def test_resume_after_a_kill_equals_an_unbroken_run(tiny, unbroken, killed, tmp_path, written, caplog):
    """Also from a checkpoint in the earlier format and name (train.pt: torch.save of the same tree, read with
    weights_only), found beside the new name, from one written before CUDA's RNG states were kept (each
    rank's CPU state alone), and from one whose settings say it was written on a GPU with autocast: the key
    of a run leaves the device out, so a run killed on a GPU node goes on here, with a warning (its weights
    here are the CPU's, so it equals the unbroken run)."""
    base, train, val = tiny
    unbroken, log_unbroken = unbroken.model, unbroken.log
    written_bytes, first = killed
    checkpoint = tmp_path / "train.safetensors"
    checkpoint.write_bytes(written_bytes)
    tree = read_tree(checkpoint)
    if written == "cpu_rng_only":
        write_tree({**tree, "rng": [rank["torch"] for rank in tree["rng"]]}, checkpoint)
    if written == "on_a_gpu":
        write_tree({**tree, "config": {**tree["config"], "device": "cuda", "amp": True}}, checkpoint)
    if written == "earlier_format":
        torch.save(tree, tmp_path / "train.pt")
        checkpoint.unlink()
    resumed, second = copy.deepcopy(base), Recorder()
    with caplog.at_level(logging.WARNING, "simclr_s2.learning.train"):
        result = fit(resumed, *_loaders(train, val), RESUMED, checkpoint_path=checkpoint, progress=second)
    assert ("device='cuda' there, 'cpu' here" in caplog.text) == (written == "on_a_gpu")
    assert result.start_epoch == 1 and second.restored == first.entries  # the checkpoint holds the history
    assert [step for step, _ in first.entries + second.entries] == [0, 1, 2]
    for (_, a), (_, b) in zip(first.entries + second.entries, log_unbroken.entries, strict=True):
        assert a == pytest.approx(b)
    for (name, p), (_, q) in zip(unbroken.state_dict().items(), resumed.state_dict().items(), strict=True):
        torch.testing.assert_close(p, q, msg=name)


def test_a_checkpoint_keeps_the_cuda_rng_states_of_a_training_on_a_gpu(monkeypatch, tmp_path):
    """On a GPU dropout draws its masks from CUDA's generators, so a resumed run needs them back. This machine
    may have no GPU: torch.cuda's two state calls stand in, and the states go through a checkpoint file."""
    cuda_states = [torch.arange(16, dtype=torch.uint8), torch.arange(16, 32, dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: cuda_states)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert runtime.rng_states(torch.device("cpu"))["cuda"] == []
    write_tree(runtime.rng_states(torch.device("cuda")), tmp_path / "rng.safetensors")
    cpu_state = torch.get_rng_state()
    torch.manual_seed(1)
    runtime.restore_rng(read_tree(tmp_path / "rng.safetensors"))
    assert torch.equal(torch.get_rng_state(), cpu_state)
    assert len(restored) == 1 and all(map(torch.equal, restored[0], cuda_states))


def test_a_checkpoint_resumed_under_another_thread_count_says_it_is_not_exact(monkeypatch, tmp_path, caplog):
    """OMP_NUM_THREADS=1 against 2 moves the losses in their 7th digit: a resume elsewhere warns, as one on
    fewer GPUs does; one under the same count, and one of a checkpoint that kept no count, say nothing."""
    write_tree(runtime.rng_states(torch.device("cpu")), tmp_path / "rng.safetensors")
    saved = read_tree(tmp_path / "rng.safetensors")
    with caplog.at_level(logging.WARNING, "simclr_s2.learning.runtime"):
        runtime.restore_rng(saved)
        runtime.restore_rng({"torch": saved["torch"], "cuda": []})
        assert caplog.text == ""
        monkeypatch.setattr(torch, "get_num_threads", lambda: saved["threads"] + 1)
        runtime.restore_rng(saved)
    assert f"written with {saved['threads']} CPU threads and this process has {saved['threads'] + 1}" in caplog.text


@pytest.mark.parametrize("visible", [0, 1])
def test_a_gpu_checkpoint_resumes_where_fewer_gpus_are_visible(monkeypatch, visible, caplog):
    """A checkpoint of two GPUs' states, resumed on one or on the CPU: the devices there take theirs, a
    warning says the run is not exact, nothing fails (torch's set_rng_state_all would, on a missing device)."""
    cuda_states = [torch.arange(16, dtype=torch.uint8), torch.arange(16, 32, dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: visible > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    with caplog.at_level(logging.WARNING, "simclr_s2.learning.runtime"):
        runtime.restore_rng({"torch": torch.get_rng_state(), "cuda": cuda_states})
    assert [len(states) for states in restored] == ([1] if visible else [])
    assert f"random states of 2 CUDA devices and this process sees {visible}" in caplog.text


def test_the_last_checkpoint_leaves_the_optimiser_out_and_resumes_to_the_best_weights(tiny, unbroken, tmp_path):
    base, train, val = tiny
    checkpoint = tmp_path / "train.safetensors"
    checkpoint.write_bytes(unbroken.checkpoint.read_bytes())
    saved = read_tree(checkpoint)
    assert saved["optimizer"] is None and saved["state"]["epoch"] == RESUMED.epochs
    again = copy.deepcopy(base)
    resumed = fit(again, *_loaders(train, val), RESUMED, checkpoint_path=checkpoint)  # nothing left to train
    assert (resumed.start_epoch, resumed.best_epoch, resumed.best_val) == \
        (RESUMED.epochs, unbroken.result.best_epoch, unbroken.result.best_val)
    for (name, p), (_, q) in zip(unbroken.model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(p, q), name


def test_resume_refuses_a_checkpoint_of_other_settings(tiny, tmp_path):
    base, train, val = tiny
    checkpoint = tmp_path / "train.safetensors"
    fit(copy.deepcopy(base), *_loaders(train, val), FitConfig(epochs=1, lr=1e-3), checkpoint_path=checkpoint)
    with pytest.raises(UserError, match=r"other settings \(lr=0.001 there, 0.01 here\): resume it with its own, or "
                                        "remove it to train afresh"):
        fit(copy.deepcopy(base), *_loaders(train, val), FitConfig(epochs=1, lr=1e-2), checkpoint_path=checkpoint)


def test_early_stopping_keeps_the_best_epoch(tiny):
    base, train, val = tiny
    model, log = copy.deepcopy(base), Recorder()
    result = fit(model, *_loaders(train, val), FitConfig(epochs=6, lr=1e-3, patience=2), progress=log)
    history = [m["val_auc"] for m in log.metrics()]
    assert result.best_epoch == int(np.argmax(history))
    assert result.epochs_run == len(history)
    assert result.stopped_early == (len(history) < 6)


def test_a_diverging_training_stops_before_its_checkpoint(tiny, tmp_path):
    base, train, val = tiny
    checkpoint = tmp_path / "train.safetensors"
    with pytest.raises(NonFiniteError, match="train_loss is nan at epoch 1"):
        fit(copy.deepcopy(base), *_loaders(train, val), FitConfig(epochs=2, lr=1e30), checkpoint_path=checkpoint)
    assert not checkpoint.exists()


@pytest.mark.parametrize("bad", [{"lr": 0}, {"epochs": 0}, {"patience": 0}, {"weight_decay": -1}])
def test_bad_settings_are_user_errors(bad):
    with pytest.raises(UserError):
        FitConfig(**bad)


def test_predicted_probabilities_keep_saturated_logits_apart():
    """In float32 every logit above about 17 is a probability of 1.0: the AUC must still see their order."""
    z, y = torch.tensor([30.0, 25.0, 20.0, 18.0, 17.5, 16.0, -3.0]), torch.tensor([1.0, 1, 1, 0, 1, 0, 0])
    labels, p, _ = train_module.predict(torch.nn.Identity(), BatchLoader(MemoryDataset(z, y), 4, prefetch=0))
    assert roc_auc(labels, p) == pytest.approx(roc_auc(labels, z.numpy())) == pytest.approx(11 / 12)
