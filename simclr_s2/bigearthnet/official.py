"""The BigEarthNet authors' official lists: snow and cloud/shadow patches, the official split, countries.

Shipped as the untouched .csv.bz2 data files of bigearthnet-common 2.8.0 (data/README.md). Each list
is decompressed once per process and kept as a frozenset or dict, so a lookup costs a hash.
"""

from __future__ import annotations

import bz2
from functools import cache
from importlib import resources

SPLITS = ("train", "validation", "test")
_SPLIT_FILES = {"train": "train.csv.bz2", "validation": "val.csv.bz2", "test": "test.csv.bz2"}


def _lines(filename: str) -> list[str]:
    data = resources.files("simclr_s2.bigearthnet").joinpath("data", filename).read_bytes()
    return bz2.decompress(data).decode("utf-8").split()


@cache
def snow_patches() -> frozenset[str]:
    """The 61,707 patches covered by seasonal snow."""
    return frozenset(_lines("patches_with_seasonal_snow.csv.bz2"))


@cache
def cloud_shadow_patches() -> frozenset[str]:
    """The 9,280 patches with clouds or cloud shadow."""
    return frozenset(_lines("patches_with_cloud_and_shadow.csv.bz2"))


@cache
def official_split() -> dict[str, str]:
    """Patch name -> "train" / "validation" / "test" for the 519,284 patches of the official split."""
    return {name: split for split, f in _SPLIT_FILES.items() for name in _lines(f)}


@cache
def countries() -> dict[str, str]:
    """S2 patch name -> country, for all 590,326 patches."""
    rows = _lines("s1_s2_name_country_season.csv.bz2")
    if rows[0] != "s1_name,s2_name,country,season":
        raise RuntimeError(f"s1_s2_name_country_season.csv.bz2: unexpected header {rows[0]!r}")
    # Plain split: no field is quoted and no country name has a space or comma (2 s instead of 4 s).
    return {s2: country for _, s2, country, _ in (row.split(",") for row in rows[1:])}
