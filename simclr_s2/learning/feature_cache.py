"""Train on cached features when nothing before the trainable layers can change.

With the encoder (and for `head2` the head's first layer) frozen in evaluation mode and no augmentation,
the frozen prefix maps each patch to the same vector every epoch: computing it once per split turns an
epoch of ResNet forwards into an epoch of small matrix products, with the same result.

Under torchrun each rank computes the features of its shard, receives everyone's, and trains the
trainable part with DistributedDataParallel on its shard of the same batches as one process.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from torch import nn
from tqdm import tqdm

from simclr_s2.learning import distributed
from simclr_s2.learning.datasets import BatchLoader, MemoryDataset, gather_epoch
from simclr_s2.learning.models import IrrigationClassifier, split_for_cache

log = logging.getLogger(__name__)


@torch.no_grad()
def compute_features(prefix: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                     device: str = "cpu", desc: str = "features") -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs of the frozen `prefix` for every batch, in the order given, with their labels."""
    prefix.eval().to(device)
    features, labels = [], []
    for x, y in tqdm(batches, desc=desc, disable=distributed.quiet(), leave=False):
        features.append(prefix(x.to(device).contiguous(memory_format=torch.channels_last)).float().cpu())
        labels.append(y.float())
    return torch.cat(features), torch.cat(labels)


def cached_training_set(model: IrrigationClassifier, policy: str,
                        train: Iterable[tuple[torch.Tensor, torch.Tensor]],
                        val: Iterable[tuple[torch.Tensor, torch.Tensor]],
                        batch_size: int, seed: int, device: str = "cpu",
                        ) -> tuple[nn.Module, BatchLoader, BatchLoader] | None:
    """(trainable part, train batches, val batches) over cached features, or None when `policy` trains
    the whole network. `train` and `val` must iterate in a fixed order (no shuffling); sharded ones
    give every rank the features of all, and the batches returned are this rank's shard."""
    split = split_for_cache(model, policy)
    if split is None:
        return None
    prefix, suffix = split
    train_x, train_y = (gather_epoch(train, t)
                        for t in compute_features(prefix, train, device, "features (train)"))
    val_x, val_y = (gather_epoch(val, t) for t in compute_features(prefix, val, device, "features (val)"))
    log.info("cached %d-d features of %d train and %d val patches", train_x.shape[1], len(train_y), len(val_y))
    return (suffix, BatchLoader(MemoryDataset(train_x, train_y), batch_size, shuffle=True, seed=seed).sharded(),
            BatchLoader(MemoryDataset(val_x, val_y), batch_size).sharded())
