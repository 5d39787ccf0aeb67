"""The 20 m bands' bicubic doubling without torch's kernel: the same float32 bits as `bands.stack_bands`, on
real patches (one v2.0, six v1.0) and on rasters made to find rounding differences."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from simclr_s2.bigearthnet import bands, bicubic, packed
from simclr_s2.bigearthnet.bands import BANDS, NATIVE_SIZE

REBEN_PATCH = (Path(__file__).parent / "fixtures" / "reben-sample" / "BigEarthNet-S2"
               / "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP" / "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_75_43")


def _random_patches(n: int, seed: int) -> dict[str, np.ndarray]:
    """Every band of `n` patches: full-range noise, dark water beside bright cloud (bicubic overshoots below
    0 there), flat fields, and the extremes at the edges the kernel clamps."""
    rng = np.random.default_rng(seed)
    native = {}
    for band in BANDS:
        size = NATIVE_SIZE[band]
        x = rng.integers(0, 65536, (n, size, size), dtype=np.uint16)
        x[1] = np.where(rng.random((size, size)) < 0.5, 3, 60000)
        x[2] = 1234
        x[3, :, 0], x[3, -1, :] = 65535, 0
        native[band] = x
    return native


def test_torchs_bits_on_rasters_made_to_round_differently():
    native = _random_patches(8, seed=0)
    for order in (BANDS, bands.STUDY_BANDS, ("B05", "B04", "B01")):
        assert np.array_equal(bicubic.stack_bands(native, order), bands.stack_bands(native, order)), order


def test_the_packers_rows_are_torchs_quantised_block_by_block():
    """`packed.store_rows` resamples a few patches at a time: 7 patches make blocks of 2 (6 or 8 resampled bands)
    and one of 1, and every block is the whole batch's rows."""
    native = _random_patches(7, seed=4)
    patches = [{band: x[i] for band, x in native.items()} for i in range(7)]
    for order in (BANDS, bands.STUDY_BANDS, ("B05", "B04", "B01")):
        expected = packed.quantise(bands.stack_bands(native, order))
        assert np.array_equal(packed.store_rows(patches, order, "bicubic"), expected), order


def test_torchs_bits_on_real_patches(real_archive):
    folders = [REBEN_PATCH, *sorted(p for p in real_archive.iterdir() if p.is_dir())]
    read = [packed.read_bands(folder, BANDS) for folder in folders]
    native = {band: np.stack([patch[band] for patch in read]) for band in BANDS}
    assert np.array_equal(bicubic.stack_bands(native, BANDS), bands.stack_bands(native, BANDS))


def test_the_form_picked_is_the_kernels():
    """Fails where torch's bicubic rounds in none of the forms: the values are still right (torch computes
    them) but the packer is back at torch's cost, which is worth knowing."""
    form = bicubic._rounding()
    assert form is not None, f"torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}) rounds " \
        "its bicubic in none of the forms"
    x = _random_patches(4, seed=1)["B05"].astype(np.float32)[:, None]
    expected = bands.resample(torch.from_numpy(x), "bicubic").numpy()
    assert np.array_equal(bicubic.double(x, form), expected)
    fused, plain = (bicubic.double(x, f) for f in ("float64", "plain"))
    assert not np.array_equal(fused, plain)  # the probe can tell them apart


def test_a_torch_in_no_form_does_the_work_itself(monkeypatch):
    monkeypatch.setattr(bicubic, "_rounding", lambda: None)
    monkeypatch.setattr(bicubic, "double", lambda *a: pytest.fail("doubled without a form equal to torch's"))
    native = _random_patches(4, seed=2)
    assert np.array_equal(bicubic.stack_bands(native, BANDS), bands.stack_bands(native, BANDS))


def test_other_methods_and_types_are_left_to_torch():
    native = _random_patches(4, seed=3)
    for method in ("bilinear", "nearest"):
        assert np.array_equal(bicubic.stack_bands(native, BANDS, method), bands.stack_bands(native, BANDS, method))
    floats = {band: x.astype(np.float32) + 0.25 for band, x in native.items()}
    assert np.array_equal(bicubic.stack_bands(floats, BANDS), bands.stack_bands(floats, BANDS))
