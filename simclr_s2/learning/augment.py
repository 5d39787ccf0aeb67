"""Augmentations for batches of multispectral patches (N, C, H, W), made for SimCLR views.

Nothing here assumes RGB (no hue, saturation or grayscale). Each op draws its parameters per sample, is
applied to a sample with its own probability, and runs on the whole batch at once. All randomness comes
from the torch.Generator passed in, so a seed gives the same views, whatever else uses torch's global RNG.

The default colour change is spectrally consistent: one gain per sample multiplies the reflectance of
every band, as a change of illumination would, so band ratios and the vegetation and moisture indices
built on them (NDVI, NDMI), where an irrigation signal lives, are kept. Batches are z-scored per band, so
the gain is applied around each band's zero reflectance, -mean/std. SimCLR's per-band jitter (contrast,
gain and brightness drawn per band) stays available as `jitter="per_band"`; it changes band ratios.
Of the other ops, crops, flips, rotations and blur act on every band alike and keep a uniform spectrum
uniform; additive noise is the one default op that perturbs band ratios (slightly, noise_std = 0.05).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from simclr_s2.bigearthnet.bands import MEAN, STD
from simclr_s2.errors import UserError
from simclr_s2.learning.config import AugmentConfig


def _uniform(
    shape: tuple[int, ...], low: float, high: float, g: torch.Generator, like: torch.Tensor
) -> torch.Tensor:
    """Uniform draws from `g` (on the generator's device), moved to `like`'s device and dtype."""
    u = torch.rand(shape, generator=g, device=g.device)
    return (low + (high - low) * u).to(device=like.device, dtype=like.dtype)


def _chosen(n: int, p: float, g: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """A (N, 1, 1, 1) boolean mask: which samples an op with probability p applies to."""
    return (torch.rand((n, 1, 1, 1), generator=g, device=g.device) < p).to(like.device)


def random_resized_crop(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Crop a random box of scale x area and aspect ratio in range, resized to the view's size (bilinear):
    `cfg.view_size` square, or back to H x W. A sample the crop skips is then the whole patch, resized.

    Boxes are drawn directly (no rejection loop as in torchvision) and clipped to the image, so the
    whole batch is one affine grid_sample.
    """
    n = x.shape[0]
    size = [*x.shape[:2], *((cfg.view_size,) * 2 if cfg.view_size else x.shape[-2:])]
    area = _uniform((n,), *cfg.crop_scale, g, x).float()
    log_ratio = _uniform((n,), math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]), g, x).float()
    width = torch.sqrt(area * torch.exp(log_ratio)).clamp(max=1.0)  # fractions of the side
    height = torch.sqrt(area / torch.exp(log_ratio)).clamp(max=1.0)
    centre_x = (1 - width) * _uniform((n,), -1.0, 1.0, g, x).float()  # in grid units [-1, 1]
    centre_y = (1 - height) * _uniform((n,), -1.0, 1.0, g, x).float()
    chosen = _chosen(n, cfg.crop_p, g, x)
    resized = size != list(x.shape)
    if resized:  # every sample is resampled: a skipped one through the whole-patch box
        keep = chosen.view(n)
        width, height = torch.where(keep, width, 1.0), torch.where(keep, height, 1.0)
        centre_x, centre_y = torch.where(keep, centre_x, 0.0), torch.where(keep, centre_y, 0.0)
    theta = torch.zeros((n, 2, 3), device=x.device)
    theta[:, 0, 0], theta[:, 0, 2] = width, centre_x
    theta[:, 1, 1], theta[:, 1, 2] = height, centre_y
    grid = F.affine_grid(theta, size, align_corners=False)
    cropped = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return cropped.to(x.dtype) if resized else torch.where(chosen, cropped.to(x.dtype), x)


def random_flip_rotate(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Horizontal and vertical flips, then a rotation by 90, 180 or 270 degrees (square patches)."""
    n = x.shape[0]
    x = torch.where(_chosen(n, cfg.hflip_p, g, x), x.flip(-1), x)
    x = torch.where(_chosen(n, cfg.vflip_p, g, x), x.flip(-2), x)
    rotate = _chosen(n, cfg.rot90_p, g, x)
    quarter_turns = torch.randint(1, 4, (n, 1, 1, 1), generator=g, device=g.device).to(x.device)
    if cfg.rot90_p > 0:
        if x.shape[-1] != x.shape[-2]:
            raise UserError(
                f"augment rot90_p: 90-degree rotations need square patches, got {tuple(x.shape[-2:])}"
            )
        for k in (1, 2, 3):
            x = torch.where(rotate & (quarter_turns == k), torch.rot90(x, k, dims=(-2, -1)), x)
    return x


def random_band_jitter(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """The colour change of `cfg.jitter` (see the module doc)."""
    jittered = (_spectral_gain if cfg.jitter == "spectral" else _per_band_jitter)(x, cfg, g)
    return torch.where(_chosen(x.shape[0], cfg.jitter_p, g, x), jittered, x)


def _spectral_gain(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """One gain per sample on every band's reflectance: z -> zero + gain * (z - zero), where a band's
    zero = -mean / std is where its z-score puts zero reflectance."""
    n, c = x.shape[:2]
    gain = _uniform((n, 1, 1, 1), 1 - cfg.gain, 1 + cfg.gain, g, x)
    if c != len(cfg.bands):
        if cfg.jitter_p == 0:
            return x
        raise UserError(f"augment bands: {len(cfg.bands)} bands {list(cfg.bands)} configured, but the batch "
                        f"has {c} channels; pass the data's bands")
    zero = torch.tensor([-MEAN[b] / STD[b] for b in cfg.bands], device=x.device, dtype=x.dtype)[:, None, None]
    return zero + gain * (x - zero)


def _per_band_jitter(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """SimCLR-style per-band jitter: contrast scales a band around its spatial mean, gain scales it around
    zero, brightness shifts it; each factor drawn per sample and per band."""
    n, c = x.shape[:2]
    contrast = _uniform((n, c, 1, 1), 1 - cfg.contrast, 1 + cfg.contrast, g, x)
    gain = _uniform((n, c, 1, 1), 1 - cfg.gain, 1 + cfg.gain, g, x)
    brightness = _uniform((n, c, 1, 1), -cfg.brightness, cfg.brightness, g, x)
    mean = x.mean(dim=(-2, -1), keepdim=True)
    return ((x - mean) * contrast + mean) * gain + brightness


def random_blur(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Gaussian blur, sigma drawn per sample; separable, as one grouped convolution for the batch."""
    n, c, h, w = x.shape
    # Kernel 2r+1, about 10 % of the side (SimCLR); reflect padding needs r < side.
    radius = min(max(1, round(0.05 * min(h, w))), min(h, w) - 1)
    sigma = _uniform((n,), *cfg.blur_sigma, g, x).float()
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=torch.float32)
    kernel = torch.exp(-(offsets[None, :] ** 2) / (2 * sigma[:, None] ** 2))
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (N*C, K)
    planes = x.float().reshape(1, n * c, h, w)
    planes = F.pad(planes, (radius, radius, radius, radius), mode="reflect")
    planes = F.conv2d(planes, kernel[:, None, None, :], groups=n * c)
    planes = F.conv2d(planes, kernel[:, None, :, None], groups=n * c)
    blurred = planes.reshape(n, c, h, w).to(x.dtype)
    return torch.where(_chosen(n, cfg.blur_p, g, x), blurred, x)


def random_noise(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Additive Gaussian noise of standard deviation noise_std."""
    noise = torch.randn(x.shape, generator=g, device=g.device).to(device=x.device, dtype=x.dtype)
    return torch.where(_chosen(x.shape[0], cfg.noise_p, g, x), x + cfg.noise_std * noise, x)


def augment(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """One random view of each patch of `x` (N, C, H, W): same shape and dtype.

    Every op draws its random numbers whether or not it applies, so the stream of draws, and hence
    the views, depend only on the generator's state and the batch shape.
    """
    if x.ndim != 4:
        raise UserError(f"augment: expected a batch (N, C, H, W), got shape {tuple(x.shape)}")
    for op in (random_resized_crop, random_flip_rotate, random_band_jitter, random_blur, random_noise):
        x = op(x, cfg, generator)
    return x
