"""The classifier as a user receives it: archive DN in, probability out, nothing of this package needed.

`ServedClassifier` holds the input scaling (`bands.InputTransform`'s constants, as buffers) in front of the
classifier and a sigmoid behind it, so it can be exported with `torch.export` and served as it is. The
package itself rebuilds a trainable `IrrigationClassifier` from two plain files instead: its weights
(safetensors, no pickle) and an architecture spec (JSON) naming what `from_scratch` needs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save
from torch import nn

from simclr_s2.bigearthnet.bands import InputTransform
from simclr_s2.learning.models import IrrigationClassifier, loaded

ARCHITECTURE_FILE = "architecture.json"
WEIGHTS_FILE = "weights.safetensors"
ARCHITECTURE_FORMAT = 1
DN_EXPECTED = "inputs: expected archive DN, every value finite (no NaN for no data)"


class ServedClassifier(nn.Module):
    """float32 DN (N, C, 120, 120), every band on the 10 m grid in `bands` order -> probability (N,).

    The scaling is `InputTransform`'s, operation for operation (z-score in float32, then the scaling's
    affine), so a served patch gets the probability the package's loaders give it."""

    OUTPUT: tuple[int, ...] = ()  # an item's output shape (one probability): the signature's, with no forward

    def __init__(self, classifier: IrrigationClassifier, bands: Sequence[str], scaling: str) -> None:
        super().__init__()
        transform = InputTransform(bands, scaling)
        self.classifier = classifier
        self.bands, self.scaling = transform.bands, transform.scaling
        self.register_buffer("mean", torch.from_numpy(transform.mean))
        self.register_buffer("std", torch.from_numpy(transform.std))
        self.has_affine = transform.affine is not None
        scale, offset = transform.affine or (np.ones_like(transform.mean), np.zeros_like(transform.mean))
        self.register_buffer("scale", torch.from_numpy(scale))
        self.register_buffer("offset", torch.from_numpy(offset))

    def forward(self, dn: torch.Tensor) -> torch.Tensor:
        # Checked in the graph, so the exported model refuses NaN no-data rather than answering NaN (which is
        # not JSON). The range is not: a 20 m band resampled to 10 m overshoots below 0 and above its pixels.
        torch._assert_async(torch.isfinite(dn).all(), DN_EXPECTED)
        z = (dn - self.mean) / self.std
        if self.has_affine:
            z = z * self.scale + self.offset
        return torch.sigmoid(self.classifier(z))

    def dn_of(self, inputs: np.ndarray) -> np.ndarray:
        """The float32 DN that model inputs (scaled, as the loaders give them) were made from: an input
        example in the served model's own terms. The archive's DN are integers (the loaders round them as
        the packed store keeps them): rounding takes away the float error of undoing the scaling, and MLflow
        writes the example as JSON twice (half the characters and the CPU of unrounded floats)."""
        z = (inputs - self.offset.numpy()) / self.scale.numpy() if self.has_affine else inputs
        return np.rint(z * self.std.numpy() + self.mean.numpy()).astype(np.float32)


def save_rebuildable(model: IrrigationClassifier, folder: Path) -> list[Path]:
    """Write `model`'s weights and architecture spec into `folder`; returns both paths."""
    head = model.head
    spec = {"format": ARCHITECTURE_FORMAT, "class": IrrigationClassifier.__name__, "arch": model.encoder.arch,
            "in_channels": model.encoder.in_channels, "head_dims": list(head.dims),
            "hidden": model.classifier[0].out_features, "dropout": model.classifier[2].p}
    architecture, weights = folder / ARCHITECTURE_FILE, folder / WEIGHTS_FILE
    architecture.write_text(json.dumps(spec, indent=2) + "\n")
    # safetensors' save_file (0.8) writes its file 0600 whatever the umask: the registered version's weights
    # could be read by no one else; written here, they get the umask's mode, as its architecture does
    weights.write_bytes(save({k: v.contiguous() for k, v in model.state_dict().items()}))
    return [architecture, weights]


def is_rebuildable(folder: Path) -> bool:
    return (folder / ARCHITECTURE_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()


def rebuild(folder: Path) -> IrrigationClassifier:
    """The trainable classifier `save_rebuildable` wrote into `folder` (every layer trainable, eval mode)."""
    spec = json.loads((folder / ARCHITECTURE_FILE).read_text())
    if spec.get("format") != ARCHITECTURE_FORMAT or spec.get("class") != IrrigationClassifier.__name__:
        raise ValueError(f"{folder / ARCHITECTURE_FILE}: format {spec.get('format')} of {spec.get('class')}, "
                         f"expected format {ARCHITECTURE_FORMAT} of {IrrigationClassifier.__name__}")
    with torch.device("meta"):
        model = IrrigationClassifier.from_scratch(spec["arch"], spec["in_channels"], spec["head_dims"],
                                                  spec["hidden"], spec["dropout"])
    return loaded(model, load_file(str(folder / WEIGHTS_FILE))).eval()

