"""learning.resnet against its oracle, torchvision: the same state dict keys and shapes, the same initial
weights under the same seed, the same outputs. torchvision is imported inside the tests, so collecting
this file (in every xdist worker) does not pay for it."""

import subprocess
import sys

import pytest
import torch

from simclr_s2.learning.config import ARCHS
from simclr_s2.learning.models import channels_last
from simclr_s2.learning.resnet import resnet


def seeded_pair(arch: str) -> tuple[torch.nn.Module, torch.nn.Module, torch.Tensor, torch.Tensor]:
    """Ours and torchvision's `arch`, each built right after the same seed, and a draw of the generator
    after each (equal only if both consumed the same random numbers)."""
    import torchvision

    torch.manual_seed(3)
    ours, after_ours = resnet(arch), torch.rand(4)
    torch.manual_seed(3)
    theirs, after_theirs = getattr(torchvision.models, arch)(weights=None), torch.rand(4)
    return ours, theirs, after_ours, after_theirs


def assert_same_state(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    mine, reference = ours.state_dict(), theirs.state_dict()
    assert list(mine) == list(reference)
    for key, value in reference.items():
        assert mine[key].shape == value.shape and torch.equal(mine[key], value), key


@pytest.mark.parametrize("arch", ARCHS)
def test_same_keys_weights_and_outputs_as_torchvision(arch):
    ours, theirs, after_ours, after_theirs = seeded_pair(arch)
    assert torch.equal(after_ours, after_theirs)
    assert_same_state(ours, theirs)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for model in (ours, theirs):
            model.eval()
        assert torch.equal(ours(x), theirs(x))
        for model in (ours, theirs):
            model.train()
        assert torch.equal(ours(x), theirs(x))
        assert_same_state(ours, theirs)  # the BatchNorm statistics moved alike
        ours, theirs, x = channels_last(ours), channels_last(theirs), channels_last(x)
        assert torch.equal(ours(x), theirs(x))


def test_building_a_model_imports_neither_torchvision_nor_dynamo():
    code = (
        "import sys, torch; from simclr_s2.learning.models import IrrigationClassifier; "
        "IrrigationClassifier.from_scratch('resnet18', 12).eval()(torch.zeros(1, 12, 32, 32)); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torchvision' or m.startswith('torch._dynamo')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
