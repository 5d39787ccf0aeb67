"""The learning code's settings and named choices, apart from the code that needs torch: the settings layer
checks them while it parses a command line, before torch is imported."""

from __future__ import annotations

from dataclasses import dataclass

from simclr_s2.bigearthnet.bands import MEAN, STUDY_BANDS
from simclr_s2.errors import UserError

ARCHS = ("resnet18", "resnet50", "resnet101", "resnet152")
TRAINABLE = ("head2", "head", "all")
BN_RECALIBRATE = ("auto", "true", "false")
OPTIMIZERS = ("sgd", "adam", "lars")
EPOCH_METRICS = ("loss", "accuracy", "precision", "recall", "f1", "auc")  # each set's, every epoch
JITTER_MODES = ("spectral", "per_band")


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities (`*_p`, per sample) and ranges of the augmentations, in the order they run.

    Defaults follow SimCLR (Chen et al. 2020) where it has one: crop scale (0.08, 1), aspect ratio
    (3/4, 4/3), blur sigma (0.1, 2.0) with a kernel of about 10 % of the image side. The data are
    z-scored per band, so brightness and noise are in units of a band's standard deviation.
    """

    crop_p: float = 1.0  # probability of a random resized crop
    crop_scale: tuple[float, float] = (0.08, 1.0)  # range of the crop's area, as a share of the patch
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # range of the crop's aspect ratio (width / height)
    hflip_p: float = 0.5  # probability of a horizontal flip
    vflip_p: float = 0.5  # probability of a vertical flip
    rot90_p: float = 0.5  # probability of a rotation by 90, 180 or 270 degrees
    jitter_p: float = 0.8  # probability of the colour change chosen by `jitter`
    jitter: str = "spectral"  # "spectral": one gain for all bands (keeps band ratios); "per_band": SimCLR's
    gain: float = 0.4  # gain factor drawn from [1 - gain, 1 + gain]: per sample (spectral) or per band
    brightness: float = 0.0  # per_band only: shift drawn from [-brightness, brightness] std units per band
    contrast: float = 0.0  # per_band only: factor from [1 - contrast, 1 + contrast] around each band's mean
    bands: tuple[str, ...] = STUDY_BANDS  # band of each channel, in order: locates zero reflectance (spectral)
    blur_p: float = 0.5  # probability of a Gaussian blur
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # range of the blur's sigma, in pixels
    noise_p: float = 0.5  # probability of additive Gaussian noise
    noise_std: float = 0.05  # standard deviation of that noise, in std units of each band
    view_size: int | None = None  # side of the square views the crop resizes to; None: the patch's own size

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if name.endswith("_p") and not 0.0 <= value <= 1.0:
                raise UserError(f"augment {name}: expected a probability in [0, 1], got {value}")
        for name in ("crop_scale", "crop_ratio", "blur_sigma"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise UserError(f"augment {name}: expected 0 < low <= high, got ({low}, {high})")
        if self.crop_scale[1] > 1:
            raise UserError(
                f"augment crop_scale: the largest crop is the whole image (1.0), got {self.crop_scale[1]}"
            )
        for name in ("brightness", "contrast", "gain", "noise_std"):
            if getattr(self, name) < 0:
                raise UserError(f"augment {name}: expected a non-negative amount, got {getattr(self, name)}")
        if self.jitter not in JITTER_MODES:
            raise UserError(f"augment jitter: expected one of {', '.join(JITTER_MODES)}, got {self.jitter!r}")
        if self.gain >= 1:
            raise UserError(f"augment gain: expected less than 1 (a factor 1 - gain must stay positive), "
                            f"got {self.gain}")
        for name in ("brightness", "contrast"):
            if self.jitter == "spectral" and getattr(self, name):
                raise UserError(f"augment {name}: only with jitter='per_band' (it changes band ratios), "
                                f"got {getattr(self, name)} with jitter='spectral'")
        if self.view_size is not None and self.view_size < 8:
            raise UserError(f"augment view_size: expected at least 8 pixels, got {self.view_size}")
        if unknown := [b for b in self.bands if b not in MEAN]:
            raise UserError(f"augment bands: unknown bands {unknown}, expected names among {', '.join(MEAN)}")
