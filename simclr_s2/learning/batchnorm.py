"""BatchNorm statistics recomputed on the target data before fine-tuning.

An encoder normalises every activation with the means and variances of the inputs it was trained on. For
one trained on other imagery (torchgeo's SSL4EO-S12 weights: Sentinel-2 L1C top-of-atmosphere, other places
and seasons) those are another product's; BigEarthNet's L2A patches are darker, most of all in the short
wavelengths. For this project's SimCLR encoders they are the pretraining views': crops resized to 64 px,
blurred, noised and brightened, not the clean 120 px patches a fine-tune feeds them (the train-test
resolution discrepancy of FixRes, Touvron et al. 2019). Frozen (`head2`, `head`), an encoder would keep
them; one forward pass over the training patches replaces them, and touches no weight.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from simclr_s2.bigearthnet.bands import ZSCORE

logger = logging.getLogger(__name__)


def recalibration_wanted(setting: str, scaling: str, policy: str) -> bool:
    """The `bn_recalibrate` parameter (config.BN_RECALIBRATE) for an encoder that expects `scaling` and
    trains under `policy` (config.TRAINABLE): auto recalibrates every encoder trained on other data (inputs
    other than this project's BigEarthNet z-score, bands.SCALINGS) and every encoder kept frozen (`head2`,
    `head`), whose statistics are its pretraining views'. Under `all` this project's encoders keep theirs:
    their BatchNorm layers train, and their statistics move to the patches as they do."""
    return setting == "true" or (setting == "auto" and (scaling != ZSCORE or policy != "all"))


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
            yield x.contiguous(memory_format=torch.channels_last)  # as the feature cache: 0.74x the time

    update_bn(images(), encoder.to(device), device)
    logger.info("BatchNorm statistics recomputed on %d training patches", seen)
    return seen
