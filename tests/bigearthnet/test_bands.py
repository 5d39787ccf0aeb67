from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from simclr_s2.bigearthnet import bands as B
from simclr_s2.bigearthnet.bands import BandError

# STUDY.md, "Input": the BigEarthNet v1 mean / std of the raw uint16 values
STUDY_STATS = {
    "B01": (340.77, 554.81), "B02": (429.94, 572.42), "B03": (614.22, 582.88), "B04": (590.24, 675.89),
    "B05": (950.68, 729.90), "B06": (1792.46, 1096.01), "B07": (2075.47, 1273.45), "B08": (2218.95, 1365.46),
    "B8A": (2266.46, 1356.14), "B09": (2246.06, 1302.33), "B11": (1594.43, 1079.19), "B12": (1009.33, 818.87),
}  # fmt: skip


def test_band_facts_match_the_v1_archive():
    assert B.BANDS == ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
    assert "B10" not in B.RESOLUTION_M
    assert {b for b in B.BANDS if B.NATIVE_SIZE[b] == 120} == {"B02", "B03", "B04", "B08"}
    assert {b for b in B.BANDS if B.NATIVE_SIZE[b] == 60} == {"B05", "B06", "B07", "B8A", "B11", "B12"}
    assert {b for b in B.BANDS if B.NATIVE_SIZE[b] == 20} == {"B01", "B09"}
    assert B.STUDY_BANDS == ("B04", "B03", "B02", "B08", "B05", "B06", "B07", "B8A", "B11", "B12")


@pytest.mark.parametrize("band", list(STUDY_STATS))
def test_statistics_are_the_published_ones(band):
    mean, std = STUDY_STATS[band]
    assert B.MEAN[band] == pytest.approx(mean, abs=0.006)
    assert B.STD[band] == pytest.approx(std, abs=0.006)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("study", B.STUDY_BANDS),
        ("all", B.BANDS),
        ("ALL", B.BANDS),
        ("B04,B03,B02", ("B04", "B03", "B02")),
        (" b12 , B8A ", ("B12", "B8A")),
        (["B08", "B01"], ("B08", "B01")),
    ],
)
def test_bands_parse(spec, expected):
    bands = B.Bands.parse(spec)
    assert bands == expected and isinstance(bands, B.Bands) and B.Bands.parse(bands) is bands
    assert bands.text == ",".join(expected)
    assert bands.resolutions == tuple(B.RESOLUTION_M[b] for b in expected)


@pytest.mark.parametrize("spec", ["B10", "B04,B13", "", "rgb", ["B04", "B04"]])
def test_bands_parse_rejects_bad_specs(spec):
    with pytest.raises(BandError, match="bands"):
        B.Bands.parse(spec)


def test_bands_or_auto():
    assert B.bands_or_auto("auto") is None and B.bands_or_auto(" AUTO ") is None
    assert B.bands_or_auto("study") == B.STUDY_BANDS


def test_resample_shapes_and_identity():
    x = torch.rand(3, 2, 60, 60)
    for method in B.RESAMPLING_METHODS:
        assert B.resample(x, method).shape == (3, 2, 120, 120)
    y = torch.rand(1, 4, 120, 120)
    assert B.resample(y, "bicubic") is y
    with pytest.raises(BandError, match="resampling"):
        B.check_resampling("cubic")


@pytest.mark.parametrize("native", [20, 60])
def test_nearest_repeats_each_native_pixel(native):
    x = torch.arange(native * native, dtype=torch.float32).reshape(1, 1, native, native)
    k = 120 // native
    expected = np.kron(x[0, 0].numpy(), np.ones((k, k), dtype=np.float32))
    np.testing.assert_array_equal(B.resample(x, "nearest")[0, 0].numpy(), expected)


@pytest.mark.parametrize("method", ["bilinear", "bicubic"])
def test_smooth_methods_are_torch_interpolate_without_corner_alignment(method):
    x = torch.rand(2, 3, 20, 20) * 1000
    expected = F.interpolate(x, size=(120, 120), mode=method, align_corners=False)
    torch.testing.assert_close(B.resample(x, method), expected)
    flat = torch.full((1, 1, 60, 60), 1234.0)
    torch.testing.assert_close(B.resample(flat, method), torch.full((1, 1, 120, 120), 1234.0))


def test_stack_bands_keeps_channel_order_and_batches():
    rng = np.random.default_rng(0)
    native = {
        b: rng.integers(0, 5000, size=(4, B.NATIVE_SIZE[b], B.NATIVE_SIZE[b])).astype(np.uint16)
        for b in B.BANDS
    }
    bands = ("B12", "B02", "B01", "B05")
    batch = B.stack_bands(native, bands, "bilinear")
    assert batch.shape == (4, 4, 120, 120) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[:, 1], native["B02"].astype(np.float32))
    one = B.stack_bands({b: native[b][2] for b in bands}, bands, "bilinear")
    np.testing.assert_allclose(one, batch[2], rtol=1e-6)
    b12 = B.resample(torch.from_numpy(native["B12"].astype(np.float32))[:, None], "bilinear")[:, 0].numpy()
    np.testing.assert_allclose(batch[:, 0], b12, rtol=1e-6)


def test_normalise_z_scores_per_band_for_numpy_and_torch():
    bands = ("B04", "B08")
    x = np.stack([np.full((120, 120), B.MEAN["B04"]), np.full((120, 120), B.MEAN["B08"] + B.STD["B08"])])
    x = x.astype(np.float32)
    z = B.normalise(x, bands)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z[0], 0.0, atol=1e-5)
    np.testing.assert_allclose(z[1], 1.0, atol=1e-5)
    zt = B.normalise(torch.from_numpy(np.stack([x, x])), bands)
    np.testing.assert_allclose(zt[1].numpy(), z, atol=1e-6)
    with pytest.raises(ValueError, match="channels"):
        B.normalise(x, ("B04",))


def _dn(bands, shape=(3,)) -> np.ndarray:
    """Resampled-looking DN: integers and fractions, dark and bright, per band."""
    rng = np.random.default_rng(1)
    return (rng.random((*shape, len(bands), 120, 120)) * 12000).astype(np.float32)


def test_scalings_and_their_affines():
    assert B.SCALINGS == ("bigearthnet-zscore", "reflectance/10000") and B.ZSCORE == B.SCALINGS[0]
    scale, offset = B.scaling_affine(B.Bands.parse("B04,B8A"), "bigearthnet-zscore")
    np.testing.assert_array_equal(scale, [1, 1])
    np.testing.assert_array_equal(offset, [0, 0])
    scale, offset = B.scaling_affine(B.Bands.parse("B04,B8A"), "reflectance/10000")
    np.testing.assert_allclose(scale, [B.STD["B04"] / 1e4, B.STD["B8A"] / 1e4])
    np.testing.assert_allclose(offset, [B.MEAN["B04"] / 1e4, B.MEAN["B8A"] / 1e4])
    for bad in ("minmax", "reflectance"):
        with pytest.raises(BandError, match="scaling"):
            B.check_scaling(bad)
        with pytest.raises(BandError, match="scaling"):
            B.InputTransform("study", bad)


@pytest.mark.parametrize("bands", [B.STUDY_BANDS, ("B12", "B01")])
def test_zscore_transform_is_the_plain_formula_and_normalise(bands):
    dn = _dn(bands)
    z = B.InputTransform(bands)(dn)
    mean = np.array([B.MEAN[b] for b in bands])[:, None, None]
    std = np.array([B.STD[b] for b in bands])[:, None, None]
    assert z.dtype == np.float32
    np.testing.assert_allclose(z, (dn.astype(np.float64) - mean) / std, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(z, B.normalise(dn, bands))  # the reader's normalise, bit for bit


@pytest.mark.parametrize("bands", [B.STUDY_BANDS, ("B12", "B01")])
def test_reflectance_transform_is_dn_over_10000(bands):
    dn = np.rint(_dn(bands)).astype(np.uint16)  # what the packed store holds
    got = B.InputTransform(bands, "reflectance/10000")(dn)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, dn / 1e4, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("scaling", B.SCALINGS)
def test_numpy_in_place_and_torch_give_the_same_values(scaling):
    bands = B.STUDY_BANDS
    dn = np.rint(_dn(bands)).astype(np.uint16)
    transform = B.InputTransform(bands, scaling)
    out = np.empty(dn.shape, np.float32)
    assert transform(dn, out=out) is out
    for tensor in (torch.from_numpy(dn), torch.from_numpy(dn.astype(np.float32))):
        got = transform(tensor)
        assert got.dtype == torch.float32
        np.testing.assert_array_equal(got.numpy(), out)
    rows = np.empty(dn.shape, np.float32)
    for k in range(len(dn)):  # the store converts a row at a time
        transform(dn[k], out=rows[k])
    np.testing.assert_array_equal(rows, out)
    with pytest.raises(ValueError, match="channels"):
        transform(dn[:, :3])
