"""Encoders pretrained elsewhere, in the layout the field publishes them: torchgeo's Sentinel-2 ResNets.

torchgeo (torchgeo/models/resnet.py, `ResNet50_Weights.SENTINEL2_ALL_MOCO`, `_DINO`, `_DECUR`, ...; also
`ResNet18_Weights.SENTINEL2_ALL_MOCO`) publishes SSL4EO-S12 encoders as state dicts of a timm ResNet built
with `in_chans=13`. timm keeps torchvision's parameter names ("weight compat requires it"): `conv1.weight`,
`bn1.*`, `layer1.0.conv1.weight`, ..., `layer4.2.bn3.*`, and `fc.*` when the file has a classifier. Its
first convolution takes the 13 Sentinel-2 L1C (top-of-atmosphere) bands in torchgeo's
`_sentinel2_toa_bands` order B1 ... B8, B8a, B9, B10, B11, B12, and its inputs are L1C digital numbers
divided by 10,000 (`_ssl4eo_s12_transforms_s2_10k`: Normalize(mean=0, std=10000)).

BigEarthNet is L2A (surface reflectance): the same DN / 10,000 scaling of a darker product, without B10
(cirrus, a top-of-atmosphere band L2A drops). So the data's bands default to the other 12, all of them
(`auto`), and `batchnorm` recalibrates the encoder's statistics on the target data before fine-tuning.
torchgeo's `SENTINEL2_ALL_SECO_ECO` takes DN / 10,000 of 12 bands, BigEarthNet's own in archive order
(`SOURCE_BANDS["all"]`). Weights that take other inputs (SoftCon's per-band z-score of L1C statistics,
`_ssl4eo_s12_transforms_s2_stats`; RGB) would be fed the wrong values, and are not importable as such.

This module turns such a state dict into the one `models.load_encoder_state` takes: the ResNet under
`encoder.`, the first convolution's input channels picked by band name for the data's bands, and a
freshly initialised projection head under `head.` (seeded, so the result is the same every time), which
the model marks as never trained (`head_pretrained` False: fine-tuning draws and trains it, never freezes
it). It also tells that layout from this project's own, and names the scaling each expects.
"""

from __future__ import annotations

import logging
import pickle
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from simclr_s2.bigearthnet.bands import BANDS, STUDY_BANDS, ZSCORE, Bands
from simclr_s2.errors import UserError
from simclr_s2.learning.checkpoints import METADATA_KEY, SUFFIX, read_tree
from simclr_s2.learning.models import (
    ARCHS,
    HEAD_DIMS,
    Encoder,
    ProjectionHead,
    SimCLRModel,
    load_encoder_state,
)

log = logging.getLogger(__name__)

TORCHGEO_S2_BANDS = (
    "B01",
    "B02",
    "B03",
    "B04",
    "B05",
    "B06",
    "B07",
    "B08",
    "B8A",
    "B09",
    "B10",
    "B11",
    "B12",
)
"""torchgeo's `_sentinel2_toa_bands` (B1 ... B8a ... B12) in this project's spelling: conv1's channels."""
TORCHGEO_S2_SCALING = "reflectance/10000"
"""What torchgeo's SSL4EO-S12 Sentinel-2 weights expect: digital numbers / 10,000 (of L1C products)."""
SOURCE_BANDS = {"ssl4eo13": TORCHGEO_S2_BANDS, "all": BANDS}
"""import_encoder's `source_bands`: the bands a timm-layout file's conv1 takes, in channel order, by name.
ssl4eo13: torchgeo's SSL4EO-S12 Sentinel-2 weights (MoCo, DINO, DeCUR, ...); all: BigEarthNet's 12 L2A bands
in archive order (torchgeo's SENTINEL2_ALL_SECO_ECO). Both take DN / 10,000 (TORCHGEO_S2_SCALING)."""
_IMPORTABLE = ("import_encoder takes ResNets whose inputs are Sentinel-2 DN / 10,000 of torchgeo's 13 SSL4EO-S12 "
               "bands (source_bands=ssl4eo13, the default, as a file given to finetune) or of BigEarthNet's 12 "
               "L2A bands in archive order (source_bands=all, as torchgeo's SENTINEL2_ALL_SECO_ECO); weights of "
               "other bands (RGB) or another input scaling (SoftCon's per-band statistics) cannot be imported")
SIMCLR_SCALING = ZSCORE
"""What this project's encoders expect: the per-band BigEarthNet z-score ("bigearthnet-zscore")."""
SIMCLR, TIMM = "simclr", "timm"
_EXPECTED = (
    "this project's SimCLR layout (encoder.*, head.*) or a timm/torchvision ResNet "
    "(conv1.weight, bn1.*, layer1.* ... layer4.*, optionally fc.*) as torchgeo publishes"
)


@dataclass(frozen=True)
class ImportedEncoder:
    """A SimCLR model built from an imported state dict, with what a run must record about it."""

    model: SimCLRModel
    arch: str
    bands: Bands  # the data's bands, in conv1's channel order
    scaling: str  # the input scaling the encoder was trained with
    layout: str  # SIMCLR or TIMM: the layout the state dict came in


class StateDict(dict[str, torch.Tensor]):
    """A state dict read from a file, with the bands the file records in channel order (a pretrain
    checkpoint's; None when it records none): the only right answer to `auto`, whatever the channel count."""

    def __init__(self, state: Mapping[str, torch.Tensor], bands: Bands | None = None) -> None:
        super().__init__(state)
        self.bands = bands


def _checked(state: object, source: str) -> dict[str, torch.Tensor]:
    """`state` as a plain dict of tensors without a DataParallel `module.` prefix, or a one-line UserError."""
    if not isinstance(state, Mapping) or not state:
        what = f"a {type(state).__name__}" if not isinstance(state, Mapping) else "an empty mapping"
        raise UserError(f"{source}: expected a state dict (parameter name -> tensor), got {what}")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise UserError(f"{source}: expected a state dict (parameter name -> tensor); {bad[0]!r} is not one")
    if all(k.startswith("module.") for k in state):
        return {k.removeprefix("module."): v for k, v in state.items()}
    return dict(state)


def _finite(state: Mapping[str, torch.Tensor], source: str) -> None:
    """Refuse weights holding NaN or infinity (a diverged training): registered, they would only make
    NaN features downstream."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise UserError(f"{source}: {len(bad)} of {len(state)} tensors hold NaN or infinite values "
                        f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); expected finite weights")


def state_dict_layout(state: Mapping[str, torch.Tensor], source: str = "state dict") -> str:
    """SIMCLR (keys `encoder.*` and `head.*`) or TIMM (a bare ResNet: `conv1.weight`, `layer1.*`, ...);
    anything else is a UserError naming `source`, what was found and what was expected."""
    keys = _checked(state, source).keys()
    if "encoder.conv1.weight" in keys:
        return SIMCLR
    if "conv1.weight" in keys and any(k.startswith("layer1.") for k in keys):
        return TIMM
    found = ", ".join(list(keys)[:3])
    raise UserError(f"{source}: keys {found}, ... are neither {_EXPECTED}")


def _match_arch(encoder_state: Mapping[str, torch.Tensor], in_channels: int, source: str) -> Encoder:
    """The encoder of ARCHS, built on the meta device (no memory, no weights), whose parameter names and
    shapes `encoder_state` has; else a UserError naming the shapes that differ, or the block counts."""
    given = {k: tuple(v.shape) for k, v in encoder_state.items()}
    for arch in ARCHS:
        with torch.device("meta"):
            encoder = Encoder(arch, in_channels)
        expected = {k: tuple(v.shape) for k, v in encoder.state_dict().items()}
        if given.keys() == expected.keys():
            wrong = [f"{k} {given[k]} (expected {v})" for k, v in expected.items() if given[k] != v]
            if not wrong:
                return encoder
            raise UserError(f"{source}: a {arch} with {in_channels} input bands but {', '.join(wrong[:3])}")
    blocks = [len({k.split(".")[1] for k in given if k.startswith(f"layer{i}.")}) for i in range(1, 5)]
    raise UserError(
        f"{source}: a ResNet with {blocks} blocks per stage and {len(given)} tensors is none of "
        f"{', '.join(ARCHS)} (parameter names differ)"
    )


def timm_to_simclr(
    state: Mapping[str, torch.Tensor],
    bands: Bands,
    *,
    source_bands: Sequence[str] = TORCHGEO_S2_BANDS,
    head_dims: Sequence[int] = HEAD_DIMS,
    seed: int = 0,
    source: str = "state dict",
) -> dict[str, torch.Tensor]:
    """A timm/torchvision ResNet state dict whose conv1 takes `source_bands` -> the SimCLR state dict for
    data with `bands` (conv1's channels picked by band name, in `bands` order; a band the archive has but
    `bands` leaves out is a warning), with a new projection head initialised from `seed`. `fc.*` is
    dropped; BatchNorm counters a file left out are restored as 0."""
    timm = {k: v for k, v in _checked(state, source).items() if not k.startswith("fc.")}
    if state_dict_layout(timm, source) != TIMM:
        raise UserError(f"{source}: already in this project's SimCLR layout; load it as it is")
    conv1 = timm["conv1.weight"]
    if conv1.ndim != 4 or conv1.shape[1] != len(source_bands):
        raise UserError(
            f"{source}: conv1.weight has shape {tuple(conv1.shape)}, expected (64, {len(source_bands)}, 7, 7)"
            f" for the bands {','.join(source_bands)}; {_IMPORTABLE}"
        )
    missing = [b for b in bands if b not in source_bands]
    if missing:
        raise UserError(f"bands: {','.join(missing)} not among the encoder's bands {','.join(source_bands)}")
    if dropped := [b for b in _archive_bands(source_bands) if b not in bands]:
        log.warning("bands: the encoder also takes %s, which the archive has; bands=auto gives it all %d",
                    ",".join(dropped), len(_archive_bands(source_bands)))
    timm["conv1.weight"] = conv1[:, [list(source_bands).index(b) for b in bands]].clone()
    for key in [k.removesuffix(".running_mean") for k in timm if k.endswith(".running_mean")]:
        timm.setdefault(f"{key}.num_batches_tracked", torch.tensor(0))
    feature_dim = _match_arch(timm, len(bands), source).feature_dim
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = ProjectionHead(feature_dim, head_dims).state_dict()
    return {**{f"encoder.{k}": v for k, v in timm.items()}, **{f"head.{k}": v for k, v in head.items()}}


def _archive_bands(source_bands: Sequence[str]) -> Bands:
    """The encoder's bands BigEarthNet has (every one but B10 for torchgeo's 13), in the encoder's order."""
    return Bands(b for b in source_bands if b in BANDS)


def data_bands(state: Mapping[str, torch.Tensor], bands: Bands | None,
               source_bands: Sequence[str] = TORCHGEO_S2_BANDS) -> Bands:
    """The data's bands for an encoder's state dict: as given, or for None (`auto`) the bands its file records
    (`StateDict`), every band of the encoder the archive has (a timm layout's `source_bands`), or this
    project's study 10 or all 12 by conv1's channels; a UserError when that says nothing."""
    if bands is not None:
        return bands
    if isinstance(state, StateDict) and state.bands is not None:
        return state.bands
    if state_dict_layout(state) == TIMM:
        return _archive_bands(source_bands)
    channels = int(_checked(state, "state dict")["encoder.conv1.weight"].shape[1])
    if channels not in (len(STUDY_BANDS), len(BANDS)):
        raise UserError(f"bands: the encoder takes {channels} channels; auto knows 10 (study) or 12 (all), so "
                        "name its bands in channel order")
    return Bands(STUDY_BANDS if channels == len(STUDY_BANDS) else BANDS)


def read_state_dict(path: Path, what: str = "pretrained", bands: Bands | None = None) -> StateDict:
    """A state-dict file (torch.save of parameter name -> tensor, or a plain safetensors file; a pretrain
    checkpoint's `model` entry too, with the bands the checkpoint records), read without running pickled
    code; `what` names the parameter in the one-line error. `bands`, when given (None: auto), must be the
    bands a pretrain checkpoint records (names and order: the channels)."""
    path = Path(path).expanduser()
    if path.is_dir():  # a logged model's folder (runs:/<id>/model) among them
        raise UserError(f"{what}: {path} is a folder; expected a state-dict file (.pt or .safetensors)")
    if not path.is_file():
        raise UserError(f"{what}: state-dict file {path} does not exist")
    try:
        state = (torch.load(path, map_location="cpu", weights_only=True) if path.suffix != SUFFIX
                 else load_file(path) if _plain_safetensors(path)
                 else read_tree(path))  # a pretrain checkpoint of today's format
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, SafetensorError) as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{what}: {path} is not a PyTorch state-dict file ({detail[:200]})") from None
    except (KeyError, IndexError, struct.error):  # the weights-only unpickler reading a text's letters as opcodes
        raise UserError(f"{what}: {path} is not a PyTorch state-dict file (its bytes are no pickle)") from None
    recorded = None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        recorded = _recorded_bands(state)
        if bands is not None and recorded and recorded != bands:
            raise UserError(f"bands: {path} was pretrained on {recorded.text}; expected that list (names "
                            f"and order), got {bands.text}")
        state = state["model"]  # a pretrain checkpoint: the weights are under "model"
    return StateDict(_checked(state, f"{what}: {path}"), recorded)


def _plain_safetensors(path: Path) -> bool:
    """Whether `path` is a safetensors file without this project's checkpoint metadata: a state dict as
    safetensors.torch.save_file writes it (torchgeo's and Hugging Face's weights), read as it is."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return METADATA_KEY not in (f.metadata() or {})
    except SafetensorError:
        return False  # no safetensors file: read_tree says what it is


def _recorded_bands(checkpoint: Mapping[str, object]) -> Bands | None:
    """The bands a pretrain checkpoint of this project records (in its augmentation settings), else None."""
    config = checkpoint.get("config")
    augment = config.get("augment") if isinstance(config, dict) else None
    return Bands(augment["bands"]) if isinstance(augment, dict) and augment.get("bands") else None


def import_encoder_state(
    state: Mapping[str, torch.Tensor],
    bands: Bands | None,
    *,
    source_bands: Sequence[str] = TORCHGEO_S2_BANDS,
    scaling: str = TORCHGEO_S2_SCALING,
    seed: int = 0,
    source: str = "state dict",
) -> ImportedEncoder:
    """A SimCLR model from a state dict in either layout, for data with `bands` (None, auto: `data_bands`).

    SIMCLR: loaded as it is (its conv1 must take len(bands) channels); it expects SIMCLR_SCALING. TIMM:
    converted with `timm_to_simclr` (`source_bands`, `seed`); it expects `scaling`, by default
    torchgeo's DN / 10,000, and its new head is marked as never trained."""
    layout = state_dict_layout(state, source)
    _finite(state, source)
    bands = data_bands(state, bands, source_bands)
    if layout == TIMM:
        state = timm_to_simclr(state, bands, source_bands=source_bands, seed=seed, source=source)
    else:
        state, scaling = _checked(state, source), SIMCLR_SCALING
    encoder = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
    arch = _match_arch(encoder, encoder["conv1.weight"].shape[1], source).arch
    model = load_encoder_state(state, arch, len(bands))
    model.head_pretrained = layout == SIMCLR
    return ImportedEncoder(model, arch, bands, scaling, layout)
