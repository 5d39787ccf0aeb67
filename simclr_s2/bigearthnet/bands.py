"""Sentinel-2 bands of BigEarthNet-S2 v1.0: names, resolutions, published statistics, resampling, scaling.

Every path that turns native rasters into 120 x 120 inputs (the patch reader, the packed store) calls
`resample` here, so a model sees identical pixels whichever path fed it, and `InputTransform` turns those
digital numbers (DN) into the values a model expects: our BigEarthNet z-score, or the scaling an encoder
trained elsewhere was trained with (SCALINGS).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Literal, Self

import numpy as np

from simclr_s2.errors import UserError

if TYPE_CHECKING:  # torch loads where a function needs it: band names are checked while parsing, without it
    import torch

RESOLUTION_M: dict[str, int] = {
    **dict.fromkeys(("B02", "B03", "B04", "B08"), 10),
    **dict.fromkeys(("B05", "B06", "B07", "B8A", "B11", "B12"), 20),
    **dict.fromkeys(("B01", "B09"), 60),
}
PATCH_SIZE = 120
"""Side in pixels of a patch at 10 m (1.2 km)."""
NATIVE_SIZE: dict[str, int] = {b: PATCH_SIZE * 10 // m for b, m in RESOLUTION_M.items()}


class BandError(UserError):
    """An unknown band name, band set, resampling method or input scaling."""


class Bands(tuple[str, ...]):
    """Band names in channel order: made once, where a `bands` parameter or a record of one comes in
    (`parse`), then passed down, so no floor below parses the text again.

    A tuple of the names, so it compares, joins and indexes as the tuples it replaced (BANDS and
    STUDY_BANDS stay plain tuples). Records hold the names, never this class: `text` in run parameters
    and tags, a list in JSON, `tuple(bands)` in a checkpoint (`torch.load(weights_only=True)` reads no
    other class).
    """

    def __new__(cls, names: Iterable[str]) -> Self:
        names = tuple(names)
        unknown = [n for n in names if n not in RESOLUTION_M]
        if not names or unknown:
            raise BandError(
                f"bands: {f'unknown band(s) {unknown}' if unknown else 'no band named'}; expected {_EXPECTED}"
            )
        if len(set(names)) != len(names):
            raise BandError(f"bands: {','.join(names)} names a band twice")
        return super().__new__(cls, names)

    @classmethod
    def parse(cls, value: str | Iterable[str]) -> Bands:
        """A band-set parameter or record: "study", "all" (BANDS order), "B04,B03,B02", or names; a Bands
        is returned as it is. The order is kept as given: it is the channel order of the model input."""
        if isinstance(value, Bands):
            return value
        if isinstance(value, str):
            key = value.strip().lower()
            if key in _NAMED:
                return _NAMED[key]
            value = [n for n in value.split(",") if n.strip()]
        return cls(str(n).strip().upper() for n in value)

    @property
    def text(self) -> str:
        """The names joined by ',': how run parameters, tags and store keys spell this band list."""
        return ",".join(self)

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Ground sampling distance of each band in metres, in channel order."""
        return tuple(RESOLUTION_M[b] for b in self)


def bands_or_auto(value: str) -> Bands | None:
    """A `bands` parameter that may be `auto` (an encoder's own bands, known once it is loaded): None for
    auto, else the Bands it names."""
    return None if value.strip().lower() == "auto" else Bands.parse(value)


BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
"""The 12 bands of BigEarthNet-S2, which is Sentinel-2 L2A (surface reflectance): every band but B10
(cirrus), a top-of-atmosphere band that L2A products drop."""
_EXPECTED = f"study, all, or distinct band names among {','.join(BANDS)} joined by ','"

# Mean / std of the raw uint16 values over BigEarthNet-S2 v1.0, as published with the BigEarthNet
# authors' TensorFlow models (also in bigearthnet-common's BAND_STATS_S2).
MEAN: dict[str, float] = {
    "B01": 340.76769064, "B02": 429.9430203, "B03": 614.21682446, "B04": 590.23569706,
    "B05": 950.68368468, "B06": 1792.46290469, "B07": 2075.46795189, "B08": 2218.94553375,
    "B8A": 2266.46036911, "B09": 2246.0605464, "B11": 1594.42694882, "B12": 1009.32729131,
}  # fmt: skip
STD: dict[str, float] = {
    "B01": 554.81258967, "B02": 572.41639287, "B03": 582.87945694, "B04": 675.88746967,
    "B05": 729.89827633, "B06": 1096.01480586, "B07": 1273.45393088, "B08": 1365.45589904,
    "B8A": 1356.13789355, "B09": 1302.3292881, "B11": 1079.19066363, "B12": 818.86747235,
}  # fmt: skip

STUDY_BANDS = ("B04", "B03", "B02", "B08", "B05", "B06", "B07", "B8A", "B11", "B12")
"""The study's 10 bands in the study's channel order (10 m RGB+NIR, then the 20 m bands)."""
_NAMED = {"study": Bands(STUDY_BANDS), "all": Bands(BANDS)}

Resampling = Literal["bicubic", "bilinear", "nearest"]
"""How 20 m and 60 m bands reach the 10 m grid. Not a parameter: code picks it, and a store's record of it
is checked where it is read (`check_resampling`), so nothing checks it again on the way down."""
RESAMPLING_METHODS: tuple[Resampling, ...] = ("bicubic", "bilinear", "nearest")

ZSCORE = "bigearthnet-zscore"
SCALINGS = (ZSCORE, "reflectance/10000")
"""Input scalings a loader can give: the BigEarthNet z-score (MEAN/STD above; what this project's encoders
train on), or DN / 10,000, here L2A surface reflectance. torchgeo's SSL4EO-S12 Sentinel-2 weights expect
that scaling of L1C top-of-atmosphere DN, which are brighter (most of all in B01-B04): the same formula
on another product, a shift `learning.batchnorm` recalibrates for."""


def check_resampling(method: str) -> Resampling:
    """A resampling method named in a record (a store's meta.json), checked where it is read."""
    if method not in RESAMPLING_METHODS:
        raise BandError(f"resampling: {method!r} is not one of {', '.join(RESAMPLING_METHODS)}")
    return method  # type: ignore[return-value]  # one of RESAMPLING_METHODS, checked above


def resample(x: torch.Tensor, method: Resampling, size: int = PATCH_SIZE) -> torch.Tensor:
    """Resize float32 (N, C, h, w) rasters of one native size to (N, C, size, size).

    bicubic/bilinear use align_corners=False (pixel areas, as GDAL sees them); bicubic overshoots,
    which is kept: clipping would make the result depend on the value range of the input.
    """
    import torch.nn.functional as F

    if x.ndim != 4:
        raise ValueError(f"resample expects (N, C, h, w), got shape {tuple(x.shape)}")
    if x.shape[-2:] == (size, size):
        return x
    if method == "nearest":
        # "nearest-exact" picks the pixel whose centre is nearest; plain "nearest" is off by half a pixel.
        return F.interpolate(x, size=(size, size), mode="nearest-exact")
    return F.interpolate(x, size=(size, size), mode=method, align_corners=False)


def stack_bands(
    native: Mapping[str, np.ndarray], bands: Sequence[str], method: Resampling = "bicubic"
) -> np.ndarray:
    """Native rasters (band -> (h, w) or (N, h, w), any dtype) -> float32 (C, 120, 120) or (N, C, 120, 120).

    Bands of one native size are resampled together in one `resample` call; channel order is `bands`.
    """
    import torch

    first = np.asarray(native[bands[0]])
    lead = first.shape[:-2]
    out = np.empty((*lead, len(bands), PATCH_SIZE, PATCH_SIZE), dtype=np.float32)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, band in enumerate(bands):
        groups.setdefault(np.shape(native[band]), []).append(i)
    for shape, idx in groups.items():
        if shape[:-2] != lead:
            raise ValueError(f"stack_bands: band {bands[idx[0]]} has shape {shape}, others lead with {lead}")
        stack = np.stack([np.asarray(native[bands[i]], dtype=np.float32) for i in idx], axis=-3)
        x = torch.from_numpy(stack.reshape(-1, len(idx), *shape[-2:]))
        out[..., idx, :, :] = resample(x, method).numpy().reshape(*lead, len(idx), PATCH_SIZE, PATCH_SIZE)
    return out


def check_scaling(scaling: str) -> str:
    """Validate an input-scaling name early, before any file is read."""
    if scaling not in SCALINGS:
        raise BandError(f"scaling: {scaling!r} is not one of {', '.join(SCALINGS)}")
    return scaling


def scaling_affine(bands: Bands, scaling: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-band float64 (scale, offset) of shape (C,) that map our z-scores to `scaling`: z * scale + offset.

    With z = (DN - MEAN) / STD, DN = z * STD + MEAN, so reflectance DN / 10,000 = z * STD/1e4 + MEAN/1e4.
    """
    check_scaling(scaling)
    if scaling == ZSCORE:
        return np.ones(len(bands)), np.zeros(len(bands))
    return np.array([STD[b] for b in bands]) / 1e4, np.array([MEAN[b] for b in bands]) / 1e4


def _per_band(values: Sequence[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)[:, None, None]


class InputTransform:
    """DN -> model inputs: the z-score `(DN - MEAN) / STD` in float32, then `z * scale + offset` of the
    scaling (skipped for the z-score itself, so its values stay exactly `normalise`'s).

    One formula for numpy arrays (the CPU path: one thread, in place into `out`, no temporaries) and torch
    tensors (any device: on CUDA the loader converts there), so every path and device gives the same values.
    Channels are the third-from-last axis (..., C, H, W).
    """

    def __init__(self, bands: Bands | str, scaling: str = ZSCORE) -> None:
        self.bands = Bands.parse(bands)
        self.scaling = check_scaling(scaling)
        self.mean = _per_band([MEAN[b] for b in self.bands])
        self.std = _per_band([STD[b] for b in self.bands])
        scale, offset = scaling_affine(self.bands, scaling)
        self.affine = None if scaling == ZSCORE else (_per_band(scale), _per_band(offset))
        self._on_device: dict[torch.device, list[torch.Tensor | None]] = {}

    def __call__(
        self, dn: torch.Tensor | np.ndarray, out: np.ndarray | None = None
    ) -> torch.Tensor | np.ndarray:
        """float32 inputs of `dn` (any numeric dtype); numpy may write into a float32 `out` of dn's shape."""
        if dn.shape[-3] != len(self.bands):
            raise ValueError(f"{dn.shape[-3]} channels but {len(self.bands)} bands {self.bands}")
        if isinstance(dn, np.ndarray):
            # a cast, then in-place float32 arithmetic: about 1.4x faster than numpy's mixed-type subtract
            z = np.empty(dn.shape, np.float32) if out is None else out
            np.copyto(z, dn)
            mean, std, (scale, offset) = self.mean, self.std, self.affine or (None, None)
        else:
            import torch

            z, (mean, std, scale, offset) = dn.to(torch.float32, copy=True), self._constants(dn.device)
        z -= mean
        z /= std
        if scale is not None:
            z *= scale
            z += offset
        return z

    def _constants(self, device: torch.device) -> list[torch.Tensor | None]:
        """mean, std, scale, offset on `device`, copied there once (not per batch)."""
        import torch

        if device not in self._on_device:
            arrays = [self.mean, self.std, *(self.affine or (None, None))]
            self._on_device[device] = [None if a is None else torch.from_numpy(a).to(device) for a in arrays]
        return self._on_device[device]


def normalise(x: torch.Tensor | np.ndarray, bands: Bands) -> torch.Tensor | np.ndarray:
    """Per-band z-score with the published MEAN/STD, float32; channels are the third-from-last axis."""
    return InputTransform(bands)(x)
