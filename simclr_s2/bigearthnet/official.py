"""The BigEarthNet authors' official lists: snow and cloud/shadow patches, the official split, countries.

Shipped as the data files of bigearthnet-common 2.8.0, recompressed from bz2 to zstd with the same bytes
inside (data/README.md: bz2 cost every v1 index build 1.5 CPU-s for the country list, zstd 0.08). Each
list is decompressed once per process and kept as a frozenset or dict, so a lookup costs a hash.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import zstandard

SPLITS = ("train", "validation", "test")
_SPLIT_FILES = {"train": "train.csv.zst", "validation": "val.csv.zst", "test": "test.csv.zst"}


def _lines(filename: str) -> list[str]:
    data = resources.files("simclr_s2.bigearthnet").joinpath("data", filename).read_bytes()
    return zstandard.ZstdDecompressor().decompress(data).decode("utf-8").split()


@cache
def snow_patches() -> frozenset[str]:
    """The 61,707 patches covered by seasonal snow."""
    return frozenset(_lines("patches_with_seasonal_snow.csv.zst"))


@cache
def cloud_shadow_patches() -> frozenset[str]:
    """The 9,280 patches with clouds or cloud shadow."""
    return frozenset(_lines("patches_with_cloud_and_shadow.csv.zst"))


@cache
def official_split() -> dict[str, str]:
    """Patch name -> "train" / "validation" / "test" for the 519,284 patches of the official split."""
    return {name: split for split, f in _SPLIT_FILES.items() for name in _lines(f)}


@cache
def countries() -> dict[str, str]:
    """S2 patch name -> country, for all 590,326 patches."""
    rows = _lines("s1_s2_name_country_season.csv.zst")
    if rows[0] != "s1_name,s2_name,country,season":
        raise RuntimeError(f"s1_s2_name_country_season.csv.zst: unexpected header {rows[0]!r}")
    # Plain split: no field is quoted and no country name has a space or comma (2 s instead of 4 s).
    return {s2: country for _, s2, country, _ in (row.split(",") for row in rows[1:])}
