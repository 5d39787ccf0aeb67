"""BatchNorm statistics recomputed on the target data before fine-tuning.

An encoder trained on other imagery (torchgeo's SSL4EO-S12 weights: Sentinel-2 L1C top-of-atmosphere,
other places and seasons) normalises every activation with that imagery's means and variances. Frozen
(`head2`, `head`), it would keep them on BigEarthNet's L2A patches, which are darker, most of all in the
short wavelengths; one forward pass over the training patches replaces them, and touches no weight.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from simclr_s2.bigearthnet.bands import ZSCORE


def recalibration_wanted(setting: str, scaling: str) -> bool:
    """The `bn_recalibrate` parameter (config.BN_RECALIBRATE) for an encoder that expects `scaling`: auto
    recalibrates exactly the encoders trained on other data, those expecting inputs other than this
    project's BigEarthNet z-score (bands.SCALINGS)."""
    return setting == "true" or (setting == "auto" and scaling != ZSCORE)


def recalibrate(encoder: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                device: str = "cpu") -> int:
    """Replace every BatchNorm's running mean and variance in `encoder` by their average over `batches`
    of (images, labels), in one forward pass in training mode with momentum None (torch's update_bn: each
    batch weighs the same). Weights, `requires_grad` and the modules' modes are kept; the encoder is left
    on `device`. Returns the number of images seen."""
    seen = 0

    def images() -> Iterator[torch.Tensor]:
        nonlocal seen
        for x, _ in batches:
            seen += len(x)
            yield x

    update_bn(images(), encoder.to(device), device)
    return seen
