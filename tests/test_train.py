"""The supervised loop: the feature cache gives the plain path's result, a resumed run equals an unbroken
one, early stopping keeps the best epoch's weights."""

import copy

import numpy as np
import pytest
import torch

from simclr_s2.data import BatchLoader
from simclr_s2.errors import UserError
from simclr_s2.feature_cache import TensorSource, cached_training_set
from simclr_s2.models import IrrigationClassifier, apply_trainable
from simclr_s2.train import FitConfig, fit


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
    return (BatchLoader(TensorSource(*train), batch_size, shuffle=True, seed=seed),
            BatchLoader(TensorSource(*val), batch_size))


@pytest.mark.parametrize("policy", ["head2", "head"])
def test_cached_features_give_the_plain_result(tiny, policy):
    base, train, val = tiny
    cfg = FitConfig(epochs=3, lr=1e-3, patience=10, seed=0)
    plain, cached = copy.deepcopy(base), copy.deepcopy(base)
    plain_log, cached_log = [], []

    apply_trainable(plain, policy)
    fit(plain, *_loaders(train, val), cfg, log_fn=lambda m, s: plain_log.append(dict(m)))

    apply_trainable(cached, policy)
    suffix, train_b, val_b = cached_training_set(cached, policy, BatchLoader(TensorSource(*train), 8),
                                                 BatchLoader(TensorSource(*val), 8), 8, 0)
    fit(suffix, train_b, val_b, cfg, log_fn=lambda m, s: cached_log.append(dict(m)))

    for a, b in zip(plain_log, cached_log, strict=True):
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), key
    for (name, p), (_, q) in zip(plain.state_dict().items(), cached.state_dict().items(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4, msg=lambda m, name=name: f"{name}: {m}")


def test_cache_is_not_offered_when_everything_trains(tiny):
    model, train, val = tiny
    assert cached_training_set(copy.deepcopy(model), "all", [], [], 8, 0) is None


class _Killed(Exception):
    pass


def test_resume_after_a_kill_equals_an_unbroken_run(tiny, tmp_path):
    base, train, val = tiny
    cfg = FitConfig(epochs=3, lr=1e-3, patience=10, seed=0)
    unbroken, log_unbroken = copy.deepcopy(base), {}
    fit(unbroken, *_loaders(train, val), cfg, log_fn=lambda m, s: log_unbroken.update({s: dict(m)}))

    resumed, log_resumed = copy.deepcopy(base), {}
    checkpoint = tmp_path / "train.pt"

    def kill_after_first_epoch(path):
        raise _Killed

    with pytest.raises(_Killed):
        fit(copy.deepcopy(base), *_loaders(train, val), cfg, checkpoint_path=checkpoint,
            log_fn=lambda m, s: log_resumed.update({s: dict(m)}), on_checkpoint=kill_after_first_epoch)
    assert list(log_resumed) == [0]
    result = fit(resumed, *_loaders(train, val), cfg, checkpoint_path=checkpoint,
                 log_fn=lambda m, s: log_resumed.update({s: dict(m)}))
    assert result.start_epoch == 1
    assert list(log_resumed) == [0, 1, 2]
    for step in range(3):
        assert log_resumed[step] == pytest.approx(log_unbroken[step])
    for (name, p), (_, q) in zip(unbroken.state_dict().items(), resumed.state_dict().items(), strict=True):
        torch.testing.assert_close(p, q, msg=name)


def test_resume_refuses_a_checkpoint_of_other_settings(tiny, tmp_path):
    base, train, val = tiny
    checkpoint = tmp_path / "train.pt"
    fit(copy.deepcopy(base), *_loaders(train, val), FitConfig(epochs=1, lr=1e-3), checkpoint_path=checkpoint)
    with pytest.raises(UserError, match="other settings"):
        fit(copy.deepcopy(base), *_loaders(train, val), FitConfig(epochs=1, lr=1e-2), checkpoint_path=checkpoint)


def test_early_stopping_keeps_the_best_epoch(tiny):
    base, train, val = tiny
    model, history = copy.deepcopy(base), []
    result = fit(model, *_loaders(train, val), FitConfig(epochs=6, lr=1e-3, patience=2),
                 log_fn=lambda m, s: history.append(m["val_auc"]))
    assert result.best_epoch == int(np.argmax(history))
    assert result.epochs_run == len(history)
    assert result.stopped_early == (len(history) < 6)


@pytest.mark.parametrize("bad", [dict(lr=0), dict(epochs=0), dict(patience=0), dict(weight_decay=-1)])
def test_bad_settings_are_user_errors(bad):
    with pytest.raises(UserError):
        FitConfig(**bad)
