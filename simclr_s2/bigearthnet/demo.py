"""Write a synthetic archive in exactly the BigEarthNet-S2 v1.0 layout, for tests and the demo study.

Each patch is a map of land-cover regions, one per label; a region's pixels follow that class's spectral
signature (a z-score per band), so labels are visible in the pixels. Permanently irrigated land is green
vegetation (low red, high NIR, low SWIR), rice fields are wet, permanent crops mix soil and canopy: both
labelling schemes are learnable but not trivially (pastures and broad-leaved forest are green too).
Values are log-normal per band with the published MEAN/STD, so normalised inputs look like the real ones.

Names follow the official pattern with 2019 acquisition dates, outside v1.0's June 2017 - May 2018, so
no demo name is on the official snow, cloud or split lists; `real_names` gives some patches real names
on purpose, to test what those lists do.

`layout="v2"` writes the same patches in the BigEarthNet v2.0 layout instead (reader.patch_dir): band
files under BigEarthNet-S2/<tile folder>/, a reference map per patch whose CORINE codes are the very
regions its pixels were drawn from, metadata.parquet with 19-class labels, countries and a geographic
split by tile (the official one cuts each tile into rings), and the list of patches with snow, cloud or
shadow (every 25th patch from the 4th has snow, from the 12th clouds).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import rasterio
from rasterio.crs import CRS
from tqdm import tqdm

from simclr_s2.bigearthnet.bands import BANDS, MEAN, NATIVE_SIZE, PATCH_SIZE, RESOLUTION_M, STD
from simclr_s2.bigearthnet.geotiff_writer import GeoTiffStamp, write_geotiff
from simclr_s2.bigearthnet.layouts import V1, ArchiveLayout, layout_named
from simclr_s2.bigearthnet.nomenclature import CODE_OF, LABELS_43, SCHEMES, labels_19
from simclr_s2.bigearthnet.reader import patch_dir, reference_map_file
from simclr_s2.bigearthnet.reben import EXCLUDED_FILE, METADATA_FILE
from simclr_s2.errors import UserError

# (tile, UTM EPSG, tile upper-left x, y, overpass time, relative orbit): real Sentinel-2 tiles in
# countries BigEarthNet covers (Portugal, Ireland, Belgium, Switzerland, Austria, Serbia, Lithuania, Finland).
_TILES = (
    ("29SND", 32629, 499980, 4400040, "112111", 37),
    ("29UPU", 32629, 600000, 5900040, "113321", 80),
    ("31UFS", 32631, 600000, 5700000, "105031", 51),
    ("32TMT", 32632, 399960, 5200020, "103021", 108),
    ("33UUP", 32633, 300000, 5400000, "101031", 22),
    ("34TCR", 32634, 399960, 5000040, "094031", 36),
    ("34UFG", 32634, 600000, 6100020, "094029", 36),
    ("35VPK", 32635, 600000, 7000020, "093029", 136),
)
_COUNTRY = {"29SND": "Portugal", "29UPU": "Ireland", "31UFS": "Belgium", "32TMT": "Switzerland",
            "33UUP": "Austria", "34TCR": "Serbia", "34UFG": "Lithuania", "35VPK": "Finland"}  # fmt: skip
_V2_SPLITS = ("train", "train", "validation", "test")  # by tile: 4 of the 8 tiles train, 2 validation, 2 test
_GRID = 91  # patches per tile side: a 109.8 km tile holds 91 patches of 1.2 km
_MIN_ACQUISITIONS = 16  # two per tile, 22 days apart from 5 Jan 2019: every season occurs
_FIRST_DATE = datetime(2019, 1, 5)
_REAL_NAME = re.compile(r"^(S2[AB])_MSIL2A_(\d{8})T(\d{5,6})_(\d+)_(\d+)$")

# Spectral signatures (z-scores in BANDS order: B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 B11 B12) of
# broad cover types; each of the 43 classes takes its cover type's signature plus a small fixed offset.
_COVER = {
    "urban": (0.6, 0.8, 0.8, 0.9, 0.7, 0.2, 0.1, 0.1, 0.1, 0.1, 0.8, 0.9),
    "bare": (1.0, 1.2, 1.2, 1.3, 1.2, 0.8, 0.7, 0.7, 0.7, 0.6, 1.3, 1.3),
    "dry_crop": (0.2, 0.4, 0.4, 0.6, 0.6, 0.2, 0.2, 0.2, 0.2, 0.2, 0.9, 1.0),
    "irrigated": (-0.1, -0.3, 0.0, -0.4, 0.1, 1.0, 1.3, 1.3, 1.3, 1.1, -0.1, -0.5),
    "rice": (-0.1, -0.2, -0.1, -0.3, -0.3, 0.2, 0.4, 0.4, 0.4, 0.3, -0.8, -0.8),
    "orchard": (0.1, 0.2, 0.3, 0.2, 0.4, 0.4, 0.5, 0.5, 0.5, 0.5, 0.5, 0.4),
    "grass": (-0.1, -0.1, 0.1, -0.1, 0.2, 0.7, 0.8, 0.8, 0.8, 0.7, 0.2, 0.0),
    "broadleaf": (-0.2, -0.4, -0.4, -0.5, -0.2, 0.6, 0.8, 0.8, 0.8, 0.7, -0.1, -0.4),
    "conifer": (-0.2, -0.4, -0.5, -0.5, -0.4, 0.0, 0.1, 0.1, 0.1, 0.1, -0.5, -0.6),
    "shrub": (0.0, 0.0, 0.1, 0.1, 0.2, 0.3, 0.4, 0.4, 0.4, 0.4, 0.4, 0.3),
    "wetland": (-0.2, -0.3, -0.2, -0.3, -0.2, 0.1, 0.2, 0.2, 0.2, 0.2, -0.4, -0.4),
    "burnt": (0.0, 0.0, 0.0, 0.0, -0.1, -0.4, -0.5, -0.5, -0.5, -0.5, 0.6, 0.8),
    "water": (-0.3, -0.2, -0.3, -0.4, -0.7, -1.2, -1.3, -1.3, -1.3, -1.2, -1.3, -1.1),
}
# class -> (cover type, weight among a patch's other labels, roughly as common as in BigEarthNet)
_CLASSES = {
    "Continuous urban fabric": ("urban", 1),
    "Discontinuous urban fabric": ("urban", 6),
    "Industrial or commercial units": ("urban", 2),
    "Road and rail networks and associated land": ("urban", 1),
    "Port areas": ("urban", 0.2),
    "Airports": ("urban", 0.2),
    "Mineral extraction sites": ("bare", 0.5),
    "Dump sites": ("bare", 0.2),
    "Construction sites": ("bare", 0.2),
    "Green urban areas": ("grass", 0.3),
    "Sport and leisure facilities": ("grass", 0.8),
    "Non-irrigated arable land": ("dry_crop", 14),
    "Permanently irrigated land": ("irrigated", 0),
    "Rice fields": ("rice", 0),
    "Vineyards": ("orchard", 0),
    "Fruit trees and berry plantations": ("orchard", 0),
    "Olive groves": ("orchard", 0),
    "Pastures": ("grass", 12),
    "Annual crops associated with permanent crops": ("orchard", 0.8),
    "Complex cultivation patterns": ("dry_crop", 8),
    "Land principally occupied by agriculture, with significant areas of natural vegetation": ("shrub", 9),
    "Agro-forestry areas": ("shrub", 2.5),
    "Broad-leaved forest": ("broadleaf", 9),
    "Coniferous forest": ("conifer", 13),
    "Mixed forest": ("conifer", 15),
    "Natural grassland": ("grass", 1.5),
    "Moors and heathland": ("shrub", 1),
    "Sclerophyllous vegetation": ("shrub", 1.4),
    "Transitional woodland/shrub": ("shrub", 13),
    "Beaches, dunes, sands": ("bare", 0.2),
    "Bare rock": ("bare", 0.3),
    "Sparsely vegetated areas": ("bare", 0.2),
    "Burnt areas": ("burnt", 0.05),
    "Inland marshes": ("wetland", 0.6),
    "Peatbogs": ("wetland", 2.5),
    "Salt marshes": ("wetland", 0.3),
    "Salines": ("bare", 0.05),
    "Intertidal flats": ("wetland", 0.1),
    "Water courses": ("water", 0.8),
    "Water bodies": ("water", 7),
    "Coastal lagoons": ("water", 0.2),
    "Estuaries": ("water", 0.2),
    "Sea and ocean": ("water", 7),
}
# log-normal parameters that give a standard-normal z the published mean and std of each band
_LOG_SIGMA = {b: math.sqrt(math.log1p((STD[b] / MEAN[b]) ** 2)) for b in BANDS}
_LOG_MU = {b: math.log(MEAN[b]) - _LOG_SIGMA[b] ** 2 / 2 for b in BANDS}
_METADATA_SCHEMA = pa.schema(
    [("patch_id", pa.large_string()), ("labels", pa.list_(pa.string())), ("split", pa.large_string()),
     ("country", pa.large_string()), ("s1_name", pa.large_string()), ("s2v1_name", pa.large_string()),
     ("contains_seasonal_snow", pa.bool_()), ("contains_cloud_or_shadow", pa.bool_())]
)  # fmt: skip
"""The column types of the archive's own metadata.parquet."""
_EXPANDED_ONLY = tuple(c for c in SCHEMES["expanded"] if c not in SCHEMES["basic"])
_OTHERS = tuple(c for c in LABELS_43 if c not in SCHEMES["expanded"])


@dataclass(frozen=True)
class _Patch:
    index: int
    name: str
    tile: int
    when: datetime
    sat: str
    ulx: int
    uly: int


@cache
def _signatures() -> np.ndarray:
    """(43, 12) z-score signature per class: cover type plus a fixed, seed-independent offset."""
    offsets = np.random.default_rng(43).normal(0.0, 0.12, size=(len(LABELS_43), len(BANDS)))
    sig = np.array([_COVER[_CLASSES[c][0]] for c in LABELS_43]) + offsets
    # centre on the label mix (scheme classes count as common), so band means land near MEAN
    weights = [_CLASSES[c][1] or 5.0 for c in LABELS_43]
    return sig - np.average(sig, axis=0, weights=weights)


@cache
def _upsampler(n_in: int, n_out: int = PATCH_SIZE) -> np.ndarray:
    """(n_out, n_in) bilinear interpolation matrix (pixel-area centres): M @ low @ M.T smooths noise."""
    centres = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    return np.stack([np.interp(centres, np.arange(n_in), np.eye(n_in)[j]) for j in range(n_in)], axis=1)


def _smooth_noise(rng: np.random.Generator, n_fields: int, grid: int) -> np.ndarray:
    up = _upsampler(grid)
    return up @ rng.normal(size=(n_fields, grid, grid)) @ up.T


def _draw_labels(rng: np.random.Generator, positive_rate: float) -> list[str]:
    labels: set[str] = set()
    u = rng.random()
    if u < positive_rate / 2:
        labels.add("Permanently irrigated land")
        if rng.random() < 0.2:
            labels.add(str(rng.choice(_EXPANDED_ONLY)))
    elif u < positive_rate:
        labels.add(str(rng.choice(_EXPANDED_ONLY)))
    weights = np.array([_CLASSES[c][1] for c in _OTHERS], dtype=float)
    n_other = int(rng.integers(0 if labels else 1, 4))
    labels.update(str(c) for c in rng.choice(_OTHERS, size=n_other, replace=False, p=weights / weights.sum()))
    return [c for c in LABELS_43 if c in labels]


def _pixels(rng: np.random.Generator, labels: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Band -> native-size uint16 raster for a patch carrying `labels`, and the (120, 120) map of the
    label (an index into `labels`) each pixel was drawn from."""
    sig = _signatures()[[LABELS_43.index(c) for c in labels]]  # (k, 12)
    region = np.argmax(_smooth_noise(rng, len(labels), 5), axis=0)  # (120, 120) label index
    z = sig.astype(np.float32)[region].transpose(2, 0, 1)  # (12, 120, 120)
    # z-variance budget, about 1 in all: class signature 0.3, texture 0.3, patch brightness 0.25, pixel 0.1
    z += 0.8 * _smooth_noise(rng, 1, 24).astype(np.float32) + rng.normal(0.0, 0.5)
    z += 0.3 * rng.standard_normal(z.shape, dtype=np.float32)
    out = {}
    for i, band in enumerate(BANDS):
        n = NATIVE_SIZE[band]
        k = PATCH_SIZE // n
        zb = z[i].reshape(n, k, n, k).mean(axis=(1, 3)) if k > 1 else z[i]  # a coarse pixel: its area's mean
        raw = np.exp(_LOG_MU[band] + _LOG_SIGMA[band] * zb)
        out[band] = np.clip(np.rint(raw), 1, 65535).astype(np.uint16)
    return out, region


@cache
def _crs(epsg: int) -> CRS:
    return CRS.from_epsg(epsg)


@cache
def _band_stamp(size: int, epsg: int, res: float, nodata: int | None) -> GeoTiffStamp:
    """The band files of one size, tile and resolution, as GDAL writes them (`nodata`: as the archive's)."""
    return GeoTiffStamp((size, size), "uint16", _crs(epsg), res, **({} if nodata is None else {"nodata": nodata}))


def _write_json(path: Path, patch: _Patch, labels: list[str]) -> None:
    """The v1.0 `<patch>_labels_metadata.json`."""
    tile, epsg, *_, orbit = _TILES[patch.tile]
    stamp = patch.when.strftime("%Y%m%dT%H%M%S")
    processed = (patch.when + timedelta(minutes=2, seconds=17)).strftime("%Y%m%dT%H%M%S")
    meta = {
        "labels": labels,
        "coordinates": {"ulx": patch.ulx, "uly": patch.uly, "lrx": patch.ulx + 1200, "lry": patch.uly - 1200},
        "projection": _crs(epsg).to_wkt(),
        "tile_source": f"{patch.sat}_MSIL1C_{stamp}_N0207_R{orbit:03d}_T{tile}_{processed}.SAFE",
        "acquisition_date": patch.when.strftime("%Y-%m-%d %H:%M:%S"),
    }
    path.write_text(json.dumps(meta))


def _write_patch(root: Path, patch: _Patch, seed: int, positive_rate: float, layout: ArchiveLayout) -> list[str]:
    """Write one patch in `layout`; returns its 19-class labels (what v2.0's metadata.parquet lists)."""
    rng = np.random.default_rng([seed, patch.index])
    labels = _draw_labels(rng, positive_rate)
    bands, region = _pixels(rng, labels)
    epsg = _TILES[patch.tile][1]
    name = _name(patch, layout)
    folder = patch_dir(root, name)
    folder.mkdir(parents=True)
    for band, raster in bands.items():
        stamp = _band_stamp(NATIVE_SIZE[band], epsg, RESOLUTION_M[band], layout.band_nodata)
        stamp.write(folder / f"{name}_{band}.tif", raster, patch.ulx, patch.uly)
    codes = np.array([CODE_OF[label] for label in labels], dtype=np.uint16)[region]
    if not layout.reference_maps:
        _write_json(folder / f"{name}_labels_metadata.json", patch, labels)
    else:
        path = reference_map_file(root, name)
        path.parent.mkdir(parents=True)
        # as the archive's maps: deflate with the horizontal predictor, nodata 0 (none here: all covered)
        write_geotiff(path, codes, _crs(epsg), 10, patch.ulx, patch.uly, nodata=0, compress="deflate", predictor=2)
    return labels_19(np.unique(codes).tolist())


def _write_chunk(
    root: Path, patches: list[_Patch], seed: int, positive_rate: float, layout: ArchiveLayout
) -> list[list[str]]:
    with rasterio.Env():  # one GDAL environment for the chunk, not one per file
        return [_write_patch(root, patch, seed, positive_rate, layout) for patch in patches]


def _name(patch: _Patch, layout: ArchiveLayout) -> str:
    """A demo patch's name in `layout`, from its v1.0 name and its tile's name and orbit."""
    tile, *_, orbit = _TILES[patch.tile]
    return layout.demo_name(patch.name, tile, orbit)


def _write_metadata(root: Path, plan: list[_Patch], labels: list[list[str]], layout: ArchiveLayout) -> None:
    """metadata.parquet and the list of patches with snow, cloud or shadow, as the v2.0 archive has them."""
    tables: dict[str, list[dict]] = {METADATA_FILE: [], EXCLUDED_FILE: []}
    for patch, patch_labels in zip(plan, labels, strict=True):
        tile = _TILES[patch.tile][0]
        snow, cloud = patch.index % 25 == 3, patch.index % 25 == 11
        col, row = patch.name.rsplit("_", 2)[1:]
        tables[EXCLUDED_FILE if snow or cloud else METADATA_FILE].append(
            {
                "patch_id": _name(patch, layout),
                "labels": patch_labels,
                "split": _V2_SPLITS[patch.tile % len(_V2_SPLITS)],
                "country": _COUNTRY[tile],
                "s1_name": f"S1A_IW_GRDH_1SDV_{patch.when:%Y%m%dT%H%M%S}_{tile}_{col}_{row}",
                "s2v1_name": patch.name,
                "contains_seasonal_snow": snow,
                "contains_cloud_or_shadow": cloud,
            }
        )
    for file, rows in tables.items():
        pq.write_table(
            pa.Table.from_pylist(sorted(rows, key=lambda r: r["patch_id"]), schema=_METADATA_SCHEMA),
            root / file,
        )


def _plan(n_patches: int, real_names: Sequence[str]) -> list[_Patch]:
    """Names, tiles, dates and positions: patch i lies in acquisition i % n_acq, slot i // n_acq."""
    n_acq = max(_MIN_ACQUISITIONS, math.ceil(n_patches / _GRID**2))
    plan = []
    for i in range(n_patches):
        acq, slot = i % n_acq, i // n_acq
        tile = acq % len(_TILES)
        _, _, x0, y0, hms, _ = _TILES[tile]
        when = _FIRST_DATE + timedelta(days=22 * acq)
        when = when.replace(hour=int(hms[:2]), minute=int(hms[2:4]), second=int(hms[4:]))
        sat = "S2A" if acq % 2 == 0 else "S2B"
        col, row = divmod(slot, _GRID)
        name = f"{sat}_MSIL2A_{when:%Y%m%dT%H%M%S}_{col}_{row}"
        if i < len(real_names):
            name, sat, when = _parse_real_name(real_names[i])
        plan.append(_Patch(i, name, tile, when, sat, x0 + 1200 * col, y0 - 1200 * row))
    return plan


def _parse_real_name(name: str) -> tuple[str, str, datetime]:
    m = _REAL_NAME.match(name)
    if not m:
        raise UserError(
            f"real_names: {name!r} is not a BigEarthNet-S2 name like S2A_MSIL2A_20170613T101031_29_89"
        )
    sat, day, hms = m.group(1), m.group(2), m.group(3).zfill(6)
    return name, sat, datetime.strptime(day + hms, "%Y%m%d%H%M%S")


def write_demo_archive(
    root: Path,
    n_patches: int = 1000,
    seed: int = 0,
    positive_rate: float = 0.4,
    real_names: Sequence[str] = (),
    workers: int | None = None,
    layout: str = V1.name,
) -> Path:
    """Write `n_patches` synthetic patches into `root` (created; must be empty) in the v1.0 or v2.0
    `layout` and return it (the root index.build_index takes).

    About `positive_rate` of the patches are positive under the `expanded` scheme, half of those also
    under `basic`. The first len(real_names) patches take those names (real BigEarthNet-S2 v1.0 names;
    v1 layout only). The content depends only on (seed, patch position), never on `workers`.
    """
    root, archive = Path(root), layout_named(layout, "layout")
    if real_names and archive.name != V1.name:
        raise UserError("real_names: real v1.0 names are for layout v1 only")
    if n_patches < 1:
        raise UserError(f"n_patches: expected at least 1, got {n_patches}")
    if not 0.0 <= positive_rate <= 1.0:
        raise UserError(f"positive_rate: expected a fraction in [0, 1], got {positive_rate}")
    if len(real_names) > n_patches or len(set(real_names)) != len(real_names):
        raise UserError(
            f"real_names: expected at most n_patches={n_patches} distinct names, got {len(real_names)}"
        )
    plan = _plan(n_patches, real_names)
    if len({p.name for p in plan}) != n_patches:
        raise UserError("real_names: a real name equals a generated demo name")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UserError(f"demo archive root {root}: expected a missing or empty folder")
    root.mkdir(parents=True, exist_ok=True)
    workers = workers or len(os.sched_getaffinity(0))
    if workers == 1 or n_patches < 64:
        labels = _write_chunk(root, plan, seed, positive_rate, archive)
    else:
        chunk = max(16, math.ceil(n_patches / (workers * 8)))
        labels = []
        with (
            ProcessPoolExecutor(workers) as pool,
            tqdm(total=n_patches, desc="demo patches", disable=None) as bar,
        ):
            futures = [
                pool.submit(_write_chunk, root, plan[i : i + chunk], seed, positive_rate, archive)
                for i in range(0, n_patches, chunk)
            ]
            for f in futures:
                labels += f.result()
                bar.update(len(f.result()))
    if archive.reference_maps:  # the patch list with labels, split and flags, as v2.0 ships it
        _write_metadata(root, plan, labels, archive)
    return root


SCENE_PATCHES = 5
"""A demo scene is SCENE_PATCHES x SCENE_PATCHES demo patches: 6 km, 600 px a side at 10 m."""
_SCENE_TILE = 4  # 33UUP, Austria: its UTM zone and upper-left corner
_SCL_VEGETATION, _SCL_CLOUD = 4, 9  # Scene Classification classes: vegetation, cloud of high probability
_CLOUD_PATCH = (1, 3)  # (row, column) of the patch a cloud covers in part


def write_demo_scene(folder: Path, seed: int = 0, positive_rate: float = 0.4) -> Path:
    """Write a synthetic Sentinel-2 L2A scene into `folder` (created; must be missing or empty) as `predict`
    reads one: per-band GeoTIFFs B01.tif ... B12.tif at their native resolutions and SCL.tif at 20 m, on a
    real tile's UTM grid. Its ground is demo patches drawn as the archive's (same generator, so a classifier
    trained on the demo archive finds what it learnt), side by side, so each 120 px window of `predict` is
    one patch; SCL marks a cloud over part of one patch, which the map leaves out."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UserError(f"demo scene folder {folder}: expected a missing or empty folder")
    rng = np.random.default_rng([seed, SCENE_PATCHES])
    grid = [[_pixels(rng, _draw_labels(rng, positive_rate))[0] for _ in range(SCENE_PATCHES)]
            for _ in range(SCENE_PATCHES)]
    _, epsg, ulx, uly, *_ = _TILES[_SCENE_TILE]
    folder.mkdir(parents=True, exist_ok=True)
    with rasterio.Env():
        for band in BANDS:
            raster = np.block([[patch[band] for patch in row] for row in grid])
            write_geotiff(folder / f"{band}.tif", raster, _crs(epsg), RESOLUTION_M[band], ulx, uly)
        scl = np.full((PATCH_SIZE * SCENE_PATCHES // 2,) * 2, _SCL_VEGETATION, np.uint8)
        row, col = (PATCH_SIZE // 2 * i for i in _CLOUD_PATCH)
        scl[row + 10 : row + 40, col + 15 : col + 50] = _SCL_CLOUD
        write_geotiff(folder / "SCL.tif", scl, _crs(epsg), 20, ulx, uly)
    return folder
