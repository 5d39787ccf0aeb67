"""BatchNorm recalibration: the running statistics become the target data's, nothing else changes."""

from __future__ import annotations

import pytest
import torch

from simclr_s2.bigearthnet.bands import SCALINGS, ZSCORE
from simclr_s2.learning.batchnorm import recalibrate, recalibration_wanted
from simclr_s2.learning.models import build_encoder


def test_recalibration_gives_the_target_datas_statistics_and_keeps_the_rest():
    torch.manual_seed(0)
    encoder = build_encoder("resnet18", 3).eval().requires_grad_(False)
    weights = {k: v.clone() for k, v in encoder.state_dict().items() if "running" not in k and "tracked" not in k}
    target = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 + 5  # not the z-score
    with torch.no_grad():
        conv1 = encoder.conv1(target)
    true_mean = conv1.mean(dim=(0, 2, 3))
    before = (encoder.bn1.running_mean - true_mean).abs().mean()

    seen = recalibrate(encoder, [(target[:4], torch.zeros(4)), (target[4:], torch.ones(4))])

    assert seen == 8
    # two batches of equal size, momentum None: the mean of batch means, the mean of unbiased batch variances
    torch.testing.assert_close(encoder.bn1.running_mean, true_mean, rtol=1e-4, atol=1e-4)
    halves = torch.stack([conv1[:4].var(dim=(0, 2, 3)), conv1[4:].var(dim=(0, 2, 3))]).mean(0)
    torch.testing.assert_close(encoder.bn1.running_var, halves * (4 * 16 * 16) / (4 * 16 * 16 - 1), rtol=1e-3,
                               atol=1e-4)
    assert (encoder.bn1.running_mean - true_mean).abs().mean() < before / 100
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())
    assert all(torch.equal(v, encoder.state_dict()[k]) for k, v in weights.items())
    assert encoder.bn1.momentum == 0.1  # torch's default, restored
    with torch.no_grad():  # in eval mode bn1 now normalises the target data: its output is bn1's own affine
        normalised = (encoder.bn1(conv1) - encoder.bn1.bias[:, None, None]) / encoder.bn1.weight[:, None, None]
    assert normalised.mean().abs() < 1e-3 and abs(normalised.std().item() - 1) < 0.01


@pytest.mark.parametrize(("setting", "scaling", "policy", "wanted"), [
    ("auto", ZSCORE, "all", False), ("auto", ZSCORE, "head2", True), ("auto", ZSCORE, "head", True),
    ("auto", "reflectance/10000", "all", True), ("true", ZSCORE, "all", True),
    ("false", "reflectance/10000", "head2", False),
])
def test_auto_recalibrates_encoders_trained_on_other_data_or_frozen(setting, scaling, policy, wanted):
    assert scaling in SCALINGS
    assert recalibration_wanted(setting, scaling, policy) is wanted
