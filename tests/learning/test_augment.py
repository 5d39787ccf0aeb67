import dataclasses

import pytest
import torch

from simclr_s2.bigearthnet.bands import MEAN, STD, STUDY_BANDS
from simclr_s2.errors import UserError
from simclr_s2.learning.augment import (
    AugmentConfig,
    augment,
    random_band_jitter,
    random_blur,
    random_flip_rotate,
    random_noise,
    random_resized_crop,
)

OFF = AugmentConfig(crop_p=0, hflip_p=0, vflip_p=0, rot90_p=0, jitter_p=0, blur_p=0, noise_p=0)
PER_BAND = dataclasses.replace(OFF, jitter_p=1, jitter="per_band", brightness=0.4, contrast=0.4)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def patches(n: int = 6, bands: int = 10, size: int = 24, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(n, bands, size, size, generator=gen(99), dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_and_dtype_kept(dtype):
    x = patches(dtype=dtype)
    y = augment(x, AugmentConfig(), gen())
    assert y.shape == x.shape and y.dtype == dtype
    assert torch.isfinite(y).all()


def test_channels_last_input():
    x = patches().contiguous(memory_format=torch.channels_last)
    assert torch.allclose(augment(x, AugmentConfig(), gen()), augment(x.contiguous(), AugmentConfig(), gen()))


def test_seeded():
    x = patches()
    assert torch.equal(augment(x, AugmentConfig(), gen(1)), augment(x, AugmentConfig(), gen(1)))
    assert not torch.allclose(augment(x, AugmentConfig(), gen(1)), augment(x, AugmentConfig(), gen(2)))


def test_global_rng_untouched():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    augment(patches(), AugmentConfig(), gen())
    assert torch.equal(torch.rand(3), expected)


def test_samples_get_different_views():
    x = patches(n=1).repeat(4, 1, 1, 1)
    y = augment(x, AugmentConfig(), gen())
    assert not torch.allclose(y[0], y[1])


def test_all_off_is_identity():
    x = patches()
    assert torch.equal(augment(x, OFF, gen()), x)


def only(**changes) -> AugmentConfig:
    return dataclasses.replace(OFF, **changes)


def test_flips_and_rotations_permute_pixels():
    x = patches()
    for cfg in (only(hflip_p=1), only(vflip_p=1), only(rot90_p=1)):
        y = random_flip_rotate(x, cfg, gen())
        assert not torch.equal(y, x)
        assert torch.equal(y.flatten(2).sort(dim=2).values, x.flatten(2).sort(dim=2).values)
    assert torch.equal(random_flip_rotate(x, only(hflip_p=1), gen()), x.flip(-1))
    rotated = random_flip_rotate(x, only(rot90_p=1), gen())
    assert all(
        any(torch.equal(r, torch.rot90(s, k, (-2, -1))) for k in (1, 2, 3)) for r, s in zip(rotated, x)
    )


def test_rotation_needs_square_patches():
    with pytest.raises(UserError, match="square"):
        random_flip_rotate(torch.zeros(2, 3, 8, 6), only(rot90_p=1), gen())


def test_full_crop_is_nearly_identity_and_small_crop_zooms():
    x = patches()
    whole = random_resized_crop(x, only(crop_p=1, crop_scale=(1, 1), crop_ratio=(1, 1)), gen())
    assert torch.allclose(whole, x, atol=1e-5)
    zoomed = random_resized_crop(x, only(crop_p=1, crop_scale=(0.1, 0.1), crop_ratio=(1, 1)), gen())
    # Upsampling a small box smooths: neighbouring pixels become much closer than in white noise.
    assert zoomed.diff(dim=-1).abs().mean() < 0.5 * x.diff(dim=-1).abs().mean()


def test_views_of_a_smaller_size():
    x = patches(size=24)
    small = augment(x, dataclasses.replace(AugmentConfig(), view_size=12), gen())
    assert small.shape == (6, 10, 12, 12) and torch.isfinite(small).all()
    # a sample the crop skips is the whole patch resized: 2 x 2 means of a smooth patch, near enough
    smooth = x.mean(dim=(-2, -1), keepdim=True) + torch.linspace(0, 1, 24).expand(6, 10, 24, 24)
    resized = random_resized_crop(smooth, only(crop_p=0, view_size=12), gen())
    assert torch.allclose(resized, torch.nn.functional.avg_pool2d(smooth, 2), atol=1e-5)
    # the patch's own size is no change: the same views as without view_size
    assert torch.equal(augment(x, dataclasses.replace(AugmentConfig(), view_size=24), gen()),
                       augment(x, AugmentConfig(), gen()))


def test_per_band_jitter_is_per_band_affine():
    x = patches()
    y = random_band_jitter(x, PER_BAND, gen())
    # Per sample and band, y = a * x + b: the correlation between x and y is exactly 1.
    xs, ys = x.flatten(2), y.flatten(2)
    xs, ys = xs - xs.mean(-1, keepdim=True), ys - ys.mean(-1, keepdim=True)
    corr = (xs * ys).sum(-1) / (xs.norm(dim=-1) * ys.norm(dim=-1))
    assert torch.allclose(corr, torch.ones_like(corr), atol=1e-5)
    scale = ys.norm(dim=-1) / xs.norm(dim=-1)
    assert scale.std() > 0.01  # bands and samples get different factors
    assert (scale > 0.6**2 - 1e-6).all() and (scale < 1.4**2 + 1e-6).all()


def reflectance(n: int = 6, size: int = 16, uniform: bool = False) -> torch.Tensor:
    """Raw uint16-like reflectances of the study's bands (float64, so ratios are checked tightly)."""
    shape = (n, len(STUDY_BANDS), 1 if uniform else size, 1 if uniform else size)
    r = 100 + 4900 * torch.rand(shape, generator=gen(7), dtype=torch.float64)
    return r.expand(n, len(STUDY_BANDS), size, size).clone()


MEANS = torch.tensor([MEAN[b] for b in STUDY_BANDS], dtype=torch.float64)[:, None, None]
STDS = torch.tensor([STD[b] for b in STUDY_BANDS], dtype=torch.float64)[:, None, None]


def to_z(r: torch.Tensor) -> torch.Tensor:
    """The pipeline's per-band z-score (bands.normalise), at float64 precision."""
    return (r - MEANS) / STDS


def to_reflectance(z: torch.Tensor) -> torch.Tensor:
    return z * STDS + MEANS


def band_ratios(r: torch.Tensor) -> torch.Tensor:
    """Every band over the first (B04), and NDVI = (B08 - B04) / (B08 + B04), per pixel."""
    nir, red = r[:, STUDY_BANDS.index("B08")], r[:, STUDY_BANDS.index("B04")]
    return torch.cat([r / r[:, :1], ((nir - red) / (nir + red))[:, None]], dim=1)


def test_default_jitter_is_one_gain_that_keeps_band_ratios():
    r = reflectance()
    y = to_reflectance(random_band_jitter(to_z(r), only(jitter_p=1), gen()))
    assert torch.allclose(band_ratios(y), band_ratios(r), rtol=1e-9)
    gain = (y / r).flatten(1)
    assert torch.allclose(gain, gain[:, :1].expand_as(gain), rtol=1e-9)  # one factor per sample
    assert gain[:, 0].std() > 0.01 and ((gain > 0.6 - 1e-9) & (gain < 1.4 + 1e-9)).all()


def test_default_views_keep_the_ratios_of_a_uniform_spectrum():
    """Crops, flips, rotations and blur act on all bands alike; only additive noise, the documented
    exception, changes band ratios."""
    r = reflectance(uniform=True)
    quiet = dataclasses.replace(AugmentConfig(), noise_p=0)
    y = to_reflectance(augment(to_z(r), quiet, gen()))
    assert torch.allclose(band_ratios(y), band_ratios(r), rtol=1e-5)  # crops and blur run in float32
    noisy = to_reflectance(augment(to_z(r), AugmentConfig(noise_p=1), gen()))
    assert not torch.allclose(band_ratios(noisy), band_ratios(r), rtol=1e-3)


def test_per_band_jitter_changes_band_ratios():
    r = reflectance()
    y = to_reflectance(random_band_jitter(to_z(r), PER_BAND, gen()))
    assert not torch.allclose(band_ratios(y), band_ratios(r), rtol=1e-2)


def test_spectral_gain_needs_the_data_bands():
    with pytest.raises(UserError, match=r"augment bands: 10 bands .* batch has 3 channels"):
        random_band_jitter(patches(bands=3), only(jitter_p=1), gen())
    assert torch.equal(random_band_jitter(patches(bands=3), OFF, gen()), patches(bands=3))
    rgb = only(jitter_p=1, bands=("B04", "B03", "B02"))  # the same bands as STUDY_BANDS[:3]
    r = reflectance()
    y = random_band_jitter(to_z(r)[:, :3], rgb, gen()) * STDS[:3] + MEANS[:3]
    assert torch.allclose(y / y[:, :1], r[:, :3] / r[:, :1], rtol=1e-9)


def test_blur_smooths_and_keeps_constants():
    x = patches()
    y = random_blur(x, only(blur_p=1, blur_sigma=(1.5, 2.0)), gen())
    assert y.std() < 0.7 * x.std()
    constant = torch.full((2, 3, 24, 24), 2.5)
    assert torch.allclose(random_blur(constant, only(blur_p=1), gen()), constant)


def test_noise_level():
    x = torch.zeros(8, 10, 32, 32)
    y = random_noise(x, only(noise_p=1, noise_std=0.2), gen())
    assert abs(y.std().item() - 0.2) < 0.01


def test_probability_selects_samples():
    x = patches(n=400, bands=1, size=4)
    y = random_noise(x, only(noise_p=0.3), gen())
    changed = (y != x).flatten(1).any(1).float().mean().item()
    assert 0.2 < changed < 0.4


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"blur_p": 1.5}, "blur_p"),
        ({"crop_scale": (0.5, 0.1)}, "crop_scale"),
        ({"crop_scale": (0.5, 2.0)}, "whole image"),
        ({"noise_std": -1.0}, "noise_std"),
        ({"jitter": "rgb"}, "jitter: expected one of spectral, per_band"),
        ({"brightness": 0.2}, "brightness: only with jitter='per_band'"),
        ({"gain": 1.0}, "gain: expected less than 1"),
        ({"bands": ("B04", "B10")}, r"unknown bands \['B10'\]"),
        ({"view_size": 4}, "view_size: expected at least 8"),
    ],
)
def test_config_checked(changes, match):
    with pytest.raises(UserError, match=match):
        AugmentConfig(**changes)


def test_batch_shape_checked():
    with pytest.raises(UserError, match="N, C, H, W"):
        augment(torch.zeros(3, 8, 8), AugmentConfig(), gen())
