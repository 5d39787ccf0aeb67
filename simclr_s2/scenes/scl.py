"""Sentinel-2 L2A Scene Classification (SCL) classes, and the ones a map leaves out unless told otherwise.
Kept free of raster and torch imports: the entry point's spec checks its `mask` parameter with it."""

from __future__ import annotations

from simclr_s2.errors import UserError

CLASSES = {0: "no data", 1: "saturated or defective", 2: "dark area", 3: "cloud shadow", 4: "vegetation",
           5: "not vegetated", 6: "water", 7: "unclassified", 8: "cloud, medium probability",
           9: "cloud, high probability", 10: "thin cirrus", 11: "snow or ice"}
DEFAULT_MASK = (0, 1, 3, 8, 9, 10, 11)
"""No data, saturated or defective, cloud shadow, clouds, cirrus and snow: what BigEarthNet's patches were
chosen without (its cloud, shadow and snow lists), so what the classifier never learnt to read."""
NONE = "none"


def parse_mask(value: str) -> tuple[int, ...]:
    """`none` or SCL class numbers joined by ','; a blank entry ("8,,9", "8,") is refused, as in every list."""
    if value.strip().lower() == NONE:
        return ()
    try:
        classes = tuple(sorted({int(v) for v in value.split(",")}))
    except ValueError:
        classes = ()
    if not classes or any(c not in CLASSES for c in classes):
        raise UserError(f"mask: expected {NONE} or SCL classes among 0..11 joined by ',', got {value!r}")
    return classes
