"""A short SimCLR pretraining on the demo archive (real GeoTIFFs through the loader) lowers the loss. On the
demo's 64 px views (pretrain's default view_size): 120 px views cost about 2.5x the CPU and show the same."""

import numpy as np
import torch

from simclr_s2.bigearthnet.index import load_index
from simclr_s2.learning.config import AugmentConfig
from simclr_s2.learning.datasets import make_loader
from simclr_s2.learning.models import build_simclr
from simclr_s2.learning.simclr import pretrain
from simclr_s2.settings.specs import Pretrain


def test_pretraining_on_the_demo_archive_lowers_the_loss(demo_archive, demo_index):
    names = sorted(load_index(demo_index)["name"])[:32]
    loader = make_loader(demo_archive, names, None, batch_size=16, shuffle=True, seed=0)
    torch.manual_seed(0)  # the initial weights, whatever ran before in this process
    model = build_simclr("resnet18", 10)
    result = pretrain(model, loader, epochs=3, optimizer="adam", lr=1e-3, seed=0,
                      augment=AugmentConfig(view_size=Pretrain.view_size))
    assert len(result.epoch_losses) == 3 and np.all(np.isfinite(result.epoch_losses))
    assert result.epoch_losses[-1] < result.epoch_losses[0]
