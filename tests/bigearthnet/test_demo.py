"""The demo archive: v1.0 layout, georeferencing, statistics, labels, a learnable signal, determinism."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS

from simclr_s2.bigearthnet.bands import BANDS, MEAN, NATIVE_SIZE, RESOLUTION_M, STD, STUDY_BANDS
from simclr_s2.bigearthnet.demo import write_demo_archive
from simclr_s2.bigearthnet.nomenclature import LABELS_43, SCHEMES, is_positive
from simclr_s2.bigearthnet.reader import read_metadata, read_native
from simclr_s2.errors import UserError

NAME = re.compile(r"^S2[AB]_MSIL2A_(\d{8}T\d{5,6})_\d+_\d+$")


def _patches(archive: Path) -> list[Path]:
    return sorted(p for p in archive.iterdir() if p.is_dir())


@pytest.fixture(scope="module")
def features(demo_archive):
    """Per patch: z-scored band means and stds, and the positive flag of each scheme."""
    rows, positive = [], {s: [] for s in SCHEMES}
    for patch in _patches(demo_archive):
        native, meta = read_native(patch, "all"), read_metadata(patch)
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
    # 70 patches in this process vs the fixture's 120 in worker processes: patch i is the same file
    seed, listed = demo_recipe["seed"], list(demo_recipe["listed"])
    small = write_demo_archive(tmp_path / "a", n_patches=70, seed=seed, real_names=listed, workers=1)
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
