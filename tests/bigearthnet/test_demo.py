"""The demo archive: v1.0 layout, georeferencing, statistics, labels, a learnable signal, determinism; and
the same patches in the v2.0 layout, with maps and metadata that agree with their pixels."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import rasterio
from rasterio.crs import CRS

from simclr_s2.bigearthnet.bands import BANDS, MEAN, NATIVE_SIZE, RESOLUTION_M, STD, STUDY_BANDS
from simclr_s2.bigearthnet.demo import write_demo_archive
from simclr_s2.bigearthnet.nomenclature import CLC_LEVEL3, LABELS_43, SCHEMES, is_positive, labels_19
from simclr_s2.bigearthnet.reader import is_v2_name, patch_dir, read_metadata, read_native, reference_map_file
from simclr_s2.bigearthnet.reben import EXCLUDED_FILE, METADATA_FILE
from simclr_s2.errors import UserError

REBEN = Path(__file__).parent / "fixtures" / "reben-sample"

NAME = re.compile(r"^S2[AB]_MSIL2A_(\d{8}T\d{5,6})_\d+_\d+$")


def _patches(archive: Path) -> list[Path]:
    return sorted(p for p in archive.iterdir() if p.is_dir())


@pytest.fixture(scope="module")
def features(demo_archive):
    """Per patch: z-scored band means and stds, and the positive flag of each scheme."""
    rows, positive = [], {s: [] for s in SCHEMES}
    for patch in _patches(demo_archive):
        native, meta = read_native(patch, BANDS), read_metadata(patch)
        rows.append(
            [(native[b].mean() - MEAN[b]) / STD[b] for b in BANDS] + [native[b].std() / STD[b] for b in BANDS]
        )
        for scheme, classes in SCHEMES.items():
            positive[scheme].append(is_positive(meta.labels, classes))
    return np.array(rows), {s: np.array(v) for s, v in positive.items()}


def test_layout_is_v1(demo_archive, demo_recipe):
    patches = _patches(demo_archive)
    assert len(patches) == demo_recipe["n_patches"]
    for patch in patches:
        assert NAME.match(patch.name), patch.name
        expected = {f"{patch.name}_{b}.tif" for b in BANDS} | {f"{patch.name}_labels_metadata.json"}
        assert {f.name for f in patch.iterdir()} == expected


def test_rasters_match_json_georeferencing(demo_archive):
    epsgs = set()
    for patch in _patches(demo_archive)[::7]:
        meta = json.loads((patch / f"{patch.name}_labels_metadata.json").read_text())
        assert list(meta) == ["labels", "coordinates", "projection", "tile_source", "acquisition_date"]
        c, crs = meta["coordinates"], CRS.from_wkt(meta["projection"])
        assert (c["lrx"] - c["ulx"], c["uly"] - c["lry"]) == (1200, 1200)
        epsgs.add(crs.to_epsg())
        for band in BANDS:
            with rasterio.open(patch / f"{patch.name}_{band}.tif") as ds:
                assert (ds.count, ds.dtypes[0], ds.width, ds.height) == (
                    1,
                    "uint16",
                    NATIVE_SIZE[band],
                    NATIVE_SIZE[band],
                )
                assert ds.crs == crs and ds.res == (RESOLUTION_M[band],) * 2
                assert tuple(ds.bounds) == (c["ulx"], c["lry"], c["lrx"], c["uly"])
        stamp = NAME.match(patch.name).group(1)
        when = datetime.strptime(meta["acquisition_date"], "%Y-%m-%d %H:%M:%S")
        assert when.strftime("%Y%m%d") == stamp[:8]
        assert re.fullmatch(
            rf"S2[AB]_MSIL1C_{stamp[:8]}T\d{{6}}_N\d{{4}}_R\d{{3}}_T\d\d[A-Z]{{3}}_\d{{8}}T\d{{6}}\.SAFE",
            meta["tile_source"],
        )
    assert len(epsgs) >= 4 and all(32629 <= e <= 32635 for e in epsgs)


def test_band_statistics_are_realistic(demo_archive):
    values = {b: [] for b in STUDY_BANDS}
    for patch in _patches(demo_archive)[::3]:
        for band, arr in read_native(patch, STUDY_BANDS).items():
            values[band].append(arr.ravel())
    for band, parts in values.items():
        v = np.concatenate(parts).astype(np.float64)
        assert v.mean() == pytest.approx(MEAN[band], rel=0.25), band
        assert v.std() == pytest.approx(STD[band], rel=0.35), band


def test_real_class_names_and_both_schemes(demo_archive, features):
    labels = [read_metadata(p).labels for p in _patches(demo_archive)]
    assert all(labels) and all(lab in LABELS_43 for ls in labels for lab in ls)
    assert len({lab for ls in labels for lab in ls}) >= 20
    _, positive = features
    assert 0.1 <= positive["basic"].mean() <= 0.3
    assert 0.3 <= positive["expanded"].mean() <= 0.5
    assert set(SCHEMES["expanded"]) <= {lab for ls in labels for lab in ls}


def _auc(score: np.ndarray, y: np.ndarray) -> float:
    ranks = np.empty(len(score))
    ranks[np.argsort(score)] = np.arange(1, len(score) + 1)
    return (ranks[y].sum() - y.sum() * (y.sum() + 1) / 2) / (y.sum() * (~y).sum())


@pytest.mark.parametrize(("scheme", "floor"), [("basic", 0.85), ("expanded", 0.65)])
def test_irrigation_is_learnable(features, scheme, floor):
    """A ridge-regularised linear score of band means and stds, fitted on one half, ranks the other half well
    (random labels score 0.4-0.56 here); a CNN that sees the regions does better still."""
    x, positive = features
    y = positive[scheme]
    x = np.c_[x, np.ones(len(x))]
    score, fold = np.empty(len(y)), np.arange(len(y)) % 2
    for k in (0, 1):
        fit = fold != k
        w = np.linalg.solve(x[fit].T @ x[fit] + np.eye(x.shape[1]), x[fit].T @ (2.0 * y[fit] - 1))
        score[~fit] = x[~fit] @ w
    assert _auc(score, y) > floor


def test_real_names_are_used_as_given(demo_archive, demo_recipe):
    names = [p.name for p in _patches(demo_archive)]
    assert set(demo_recipe["listed"]) <= set(names)
    meta = read_metadata(demo_archive / "S2A_MSIL2A_20170613T101031_0_45")
    assert meta.acquisition_date == "2017-06-13 10:10:31"


def _digests(root: Path, names: list[str]) -> dict[str, str]:
    return {
        f.name: hashlib.sha256(f.read_bytes()).hexdigest()
        for n in names
        for f in sorted((root / n).iterdir())
    }


def test_deterministic_by_seed_whatever_the_workers(demo_archive, demo_recipe, tmp_path):
    # 40 patches in this process vs the fixture's 120 in worker processes (three of its chunks of 16 patches):
    # patch i is the same file
    seed, listed = demo_recipe["seed"], list(demo_recipe["listed"])
    small = write_demo_archive(tmp_path / "a", n_patches=40, seed=seed, real_names=listed, workers=1)
    names = [p.name for p in _patches(small)]
    assert _digests(small, names) == _digests(demo_archive, names)
    other = write_demo_archive(tmp_path / "b", n_patches=8, seed=seed + 1)
    same_names = [p.name for p in _patches(other) if (small / p.name).exists()]
    assert same_names and all(
        read_native(other / n, ("B04",))["B04"].tobytes() != read_native(small / n, ("B04",))["B04"].tobytes()
        for n in same_names
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_patches": 0}, "n_patches"),
        ({"positive_rate": 1.5}, "positive_rate"),
        ({"real_names": ["S2A_MSIL2A_2017_1_2"]}, "real_names"),
        ({"n_patches": 1, "real_names": ["S2A_MSIL2A_20170613T101031_0_45"] * 2}, "real_names"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(UserError, match=match):
        write_demo_archive(tmp_path / "x", **kwargs)


def test_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="empty folder"):
        write_demo_archive(tmp_path, n_patches=1)


# --- v2.0 layout -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def v2_demo(tmp_path_factory, demo_recipe) -> Path:
    """60 patches in the v2.0 layout with the seed of the session's v1.0 demo archive."""
    return write_demo_archive(
        tmp_path_factory.mktemp("v2") / "reben", n_patches=60, seed=demo_recipe["seed"], layout="v2"
    )


def _v2_names(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "BigEarthNet-S2").glob("*/*"))


def _v2_metadata(root: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(root / f) for f in (METADATA_FILE, EXCLUDED_FILE)]).set_index(
        "patch_id"
    )


def test_layout_is_v2(v2_demo):
    assert {p.name for p in v2_demo.iterdir()} == {
        "BigEarthNet-S2",
        "Reference_Maps",
        METADATA_FILE,
        EXCLUDED_FILE,
    }
    names = _v2_names(v2_demo)
    assert len(names) == 60 and all(is_v2_name(n) for n in names)
    for name in names:
        assert {f.name for f in patch_dir(v2_demo, name).iterdir()} == {f"{name}_{b}.tif" for b in BANDS}
        assert reference_map_file(v2_demo, name).is_file()
    meta = _v2_metadata(v2_demo)
    assert sorted(meta.index) == names
    assert pq.read_schema(v2_demo / METADATA_FILE) == pq.read_schema(REBEN / METADATA_FILE).remove_metadata()
    assert set(meta["split"]) == {"train", "validation", "test"}
    assert meta["contains_seasonal_snow"].sum() >= 2 and meta["contains_cloud_or_shadow"].sum() >= 2
    flagged = pd.read_parquet(v2_demo / EXCLUDED_FILE)
    assert (flagged["contains_seasonal_snow"] | flagged["contains_cloud_or_shadow"]).all()


def test_v2_patches_are_the_v1_patches_of_the_same_seed(v2_demo, demo_archive, demo_recipe):
    """Same seed, same patch position: the same pixels, whatever the layout; the map's codes are labels
    of the v1.0 twin's JSON, and metadata.parquet's 19-class labels are those codes grouped."""
    meta = _v2_metadata(v2_demo)
    twins = [n for n in _v2_names(v2_demo) if (demo_archive / meta.loc[n, "s2v1_name"]).is_dir()]
    assert len(twins) == 60 - len(demo_recipe["listed"])  # the v1.0 demo's first patches have real names
    for name in twins:
        v1 = demo_archive / meta.loc[name, "s2v1_name"]
        native = read_native(patch_dir(v2_demo, name), BANDS)
        assert all(np.array_equal(native[b], arr) for b, arr in read_native(v1, BANDS).items())
        with rasterio.open(reference_map_file(v2_demo, name)) as ds:
            codes = np.unique(ds.read(1))
            assert (ds.crs, ds.transform) == (rasterio.open(v1 / f"{v1.name}_B02.tif").crs, ds.transform)
        assert {CLC_LEVEL3[c] for c in codes} <= set(read_metadata(v1).labels)
        assert list(meta.loc[name, "labels"]) == labels_19(codes)


def test_v2_map_codes_explain_the_pixels(v2_demo):
    """Within a patch, pixels of one code share their class's signature: in every patch with several codes,
    the code of each pixel explains part of B08's variance at 10 m (region means; texture and noise the
    rest), and more than the same codes shuffled, which explain next to nothing."""
    explained, shuffled = [], []
    rng = np.random.default_rng(0)
    for name in _v2_names(v2_demo):
        b08 = read_native(patch_dir(v2_demo, name), ("B08",))["B08"].astype(np.float64).ravel()
        with rasterio.open(reference_map_file(v2_demo, name)) as ds:
            codes = ds.read(1).ravel()
        if len(np.unique(codes)) > 1:
            explained.append(_r2(b08, codes))
            shuffled.append(_r2(b08, rng.permutation(codes)))
    assert len(explained) >= 30 and np.median(explained) > 0.05 and max(shuffled) < 0.01
    assert all(e > s for e, s in zip(explained, shuffled, strict=True))


def _r2(values: np.ndarray, groups: np.ndarray) -> float:
    """Share of the variance of `values` that the mean of each group explains."""
    _, inverse = np.unique(groups, return_inverse=True)
    means = np.bincount(inverse, values) / np.bincount(inverse)
    return 1 - ((values - means[inverse]) ** 2).sum() / ((values - values.mean()) ** 2).sum()


def test_v2_deterministic_by_seed(tmp_path):
    a = write_demo_archive(tmp_path / "a", n_patches=12, seed=5, layout="v2")
    b = write_demo_archive(tmp_path / "b", n_patches=12, seed=5, layout="v2")
    files = sorted(f.relative_to(a) for f in a.rglob("*") if f.is_file())
    assert files == sorted(f.relative_to(b) for f in b.rglob("*") if f.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"layout": "v3"}, "layout"),
        ({"layout": "v2", "real_names": ["S2A_MSIL2A_20170613T101031_0_45"]}, "real_names"),
    ],
)
def test_bad_v2_arguments(tmp_path, kwargs, match):
    with pytest.raises(UserError, match=match):
        write_demo_archive(tmp_path / "x", n_patches=2, **kwargs)
