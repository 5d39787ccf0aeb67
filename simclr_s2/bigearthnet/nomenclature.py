"""The CORINE level-3 nomenclature of BigEarthNet (43 names in v1.0, codes in v2.0's reference maps), its
19-class grouping, and the study's labelling schemes.

The schemes need level 3: the 19-class nomenclature merges the irrigated classes into "Arable land" and
"Permanent crops". On v1.0 a scheme is label presence; on v2.0 the reference maps give each class's share
of the patch, so a scheme also has a minimum share (`scheme_labels`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from simclr_s2.errors import UserError

# CORINE Land Cover level-3 code -> class name, in code order. The names are BigEarthNet v1.0's (its 43
# classes are all codes but 335, which no v1.0 patch carries); v2.0 reference maps hold the codes.
CLC_LEVEL3: dict[int, str] = {
    111: "Continuous urban fabric",
    112: "Discontinuous urban fabric",
    121: "Industrial or commercial units",
    122: "Road and rail networks and associated land",
    123: "Port areas",
    124: "Airports",
    131: "Mineral extraction sites",
    132: "Dump sites",
    133: "Construction sites",
    141: "Green urban areas",
    142: "Sport and leisure facilities",
    211: "Non-irrigated arable land",
    212: "Permanently irrigated land",
    213: "Rice fields",
    221: "Vineyards",
    222: "Fruit trees and berry plantations",
    223: "Olive groves",
    231: "Pastures",
    241: "Annual crops associated with permanent crops",
    242: "Complex cultivation patterns",
    243: "Land principally occupied by agriculture, with significant areas of natural vegetation",
    244: "Agro-forestry areas",
    311: "Broad-leaved forest",
    312: "Coniferous forest",
    313: "Mixed forest",
    321: "Natural grassland",
    322: "Moors and heathland",
    323: "Sclerophyllous vegetation",
    324: "Transitional woodland/shrub",
    331: "Beaches, dunes, sands",
    332: "Bare rock",
    333: "Sparsely vegetated areas",
    334: "Burnt areas",
    335: "Glaciers and perpetual snow",
    411: "Inland marshes",
    412: "Peatbogs",
    421: "Salt marshes",
    422: "Salines",
    423: "Intertidal flats",
    511: "Water courses",
    512: "Water bodies",
    521: "Coastal lagoons",
    522: "Estuaries",
    523: "Sea and ocean",
}
LABELS_43: tuple[str, ...] = tuple(name for code, name in CLC_LEVEL3.items() if code != 335)
"""BigEarthNet v1.0 classes, in the order of the authors' label_indices.json (CORINE code order)."""

# The 19 classes of BigEarthNet v2.0's metadata.parquet (and of v1.0's 19-class models) -> their CLC codes,
# as in the authors' label_indices.json; codes 122-142, 332, 334, 335 and 423 belong to none.
_GROUPS_19: dict[str, tuple[int, ...]] = {
    "Urban fabric": (111, 112),
    "Industrial or commercial units": (121,),
    "Arable land": (211, 212, 213),
    "Permanent crops": (221, 222, 223, 241),
    "Pastures": (231,),
    "Complex cultivation patterns": (242,),
    "Land principally occupied by agriculture, with significant areas of natural vegetation": (243,),
    "Agro-forestry areas": (244,),
    "Broad-leaved forest": (311,),
    "Coniferous forest": (312,),
    "Mixed forest": (313,),
    "Natural grassland and sparsely vegetated areas": (321, 333),
    "Moors, heathland and sclerophyllous vegetation": (322, 323),
    "Transitional woodland, shrub": (324,),
    "Beaches, dunes, sands": (331,),
    "Inland wetlands": (411, 412),
    "Coastal wetlands": (421, 422),
    "Inland waters": (511, 512),
    "Marine waters": (521, 522, 523),
}
LABELS_19: tuple[str, ...] = tuple(_GROUPS_19)
CLC_TO_19: dict[int, str] = {code: name for name, codes in _GROUPS_19.items() for code in codes}
CODE_OF: dict[str, int] = {name: code for code, name in CLC_LEVEL3.items()}

SCHEMES: dict[str, tuple[str, ...]] = {
    "basic": ("Permanently irrigated land",),
    "expanded": (
        "Permanently irrigated land",
        "Rice fields",
        "Vineyards",
        "Fruit trees and berry plantations",
        "Olive groves",
    ),
}

_LABEL_SET = frozenset(LABELS_43)


class UnknownClassError(UserError):
    """A class name that is not one of the 43 BigEarthNet v1.0 names, or an unknown scheme."""


def check_labels(labels: Iterable[str], where: str) -> None:
    """Raise UnknownClassError naming `where` and the closest valid names for the first unknown label."""
    for label in labels:
        if label not in _LABEL_SET:
            close = difflib.get_close_matches(label, LABELS_43, n=3, cutoff=0.4)
            hint = f"closest: {'; '.join(close)}" if close else "see nomenclature.LABELS_43"
            raise UnknownClassError(f"{where}: unknown class {label!r} ({hint})")


def resolve_scheme(spec: str | Sequence[str]) -> tuple[str, tuple[str, ...]]:
    """Scheme parameter -> (name, positive classes).

    `spec` is a scheme name ("basic", "expanded"), a ';'-separated class list (class names contain
    commas, so ';' separates them) or a sequence of class names; a custom scheme is named "custom".
    """
    if isinstance(spec, str):
        if spec in SCHEMES:
            return spec, SCHEMES[spec]
        if ";" not in spec and spec not in _LABEL_SET:
            raise UnknownClassError(
                f"scheme: {spec!r} is neither {' nor '.join(SCHEMES)} nor a class name "
                f"(separate several classes with ';')" + _closest_suffix(spec)
            )
        classes = [s.strip() for s in spec.split(";") if s.strip()]
    else:
        classes = [str(s).strip() for s in spec]
    if not classes:
        raise UnknownClassError("scheme: no class names given")
    check_labels(classes, "scheme")
    classes_t = tuple(dict.fromkeys(classes))
    for name, known in SCHEMES.items():
        if set(known) == set(classes_t):
            return name, known
    return "custom", classes_t


def _closest_suffix(name: str) -> str:
    close = difflib.get_close_matches(name, [*SCHEMES, *LABELS_43], n=3, cutoff=0.4)
    return f"; closest: {'; '.join(close)}" if close else ""


def is_positive(labels: Iterable[str], classes: Iterable[str]) -> bool:
    """True when the patch carries any of the scheme's classes."""
    return not set(classes).isdisjoint(labels)


def labels_19(codes: Iterable[int]) -> list[str]:
    """The 19-class labels of a patch whose reference map holds the CLC `codes`, sorted by name as
    metadata.parquet lists them."""
    return sorted({CLC_TO_19[code] for code in codes if code in CLC_TO_19})


SCHEME_CODES: tuple[int, ...] = tuple(sorted({CODE_OF[c] for classes in SCHEMES.values() for c in classes}))
"""The CLC codes of the named schemes (212, 213, 221, 222, 223): the index stores each one's share."""
PRESENT = "present_"
"""Index columns present_<scheme>: a class of the scheme anywhere in the patch (label presence, v1.0's rule)."""
LABEL_FRACTIONS = "label_area_shares"
"""Index column of a v2.0 index: each label's share of the patch's mapped pixels (nodata left out), aligned
with `labels`."""
DEFAULT_MIN_FRACTION = 0.17
"""Default minimum share of a patch that a v2.0 scheme's classes must cover for the patch to be positive.

CORINE maps nothing smaller than its minimum mapping unit of 25 ha, 17.4 % of a 1.2 x 1.2 km patch, and
places boundaries to about 100 m, which alone can move 12 ha (8 %) of a patch across one side. A share of
at least 0.17 is one mapping unit inside the patch: the class is really there. Smaller shares are mostly
slivers of polygons cut by the patch border, so they are ambiguous rather than negative.
"""
AMBIGUOUS = ("exclude", "negative")


def scheme_labels(
    index: pd.DataFrame,
    scheme: str | Sequence[str],
    *,
    min_fraction: float | None = None,
    ambiguous: str = "exclude",
) -> pd.Series:
    """Each index row's label under `scheme` (a name, ';'-separated classes or a sequence of classes), as a
    nullable boolean Series aligned to `index` and named positive_<scheme>: True positive, False negative,
    <NA> ambiguous, which makes the patch eligible for neither class.

    A v2.0 index (it has LABEL_FRACTIONS) labels by area: positive when the scheme's classes cover at least
    `min_fraction` of the patch (None: DEFAULT_MIN_FRACTION), negative when they cover none of it, and
    ambiguous in between; `ambiguous="negative"` counts those as negatives. A v1.0 index has labels only,
    so a scheme is label presence there and a `min_fraction` is an error.
    """
    name, classes = resolve_scheme(scheme)
    if ambiguous not in AMBIGUOUS:
        raise UserError(f"ambiguous: {ambiguous!r} is not one of {', '.join(AMBIGUOUS)}")
    wanted = frozenset(classes)
    out_name = f"positive_{name}"
    if LABEL_FRACTIONS not in index.columns:
        if min_fraction is not None:
            raise UserError(
                f"min_fraction: {min_fraction} needs a v2.0 index with reference-map shares; this index is "
                "v1.0, where a scheme is label presence: leave min_fraction unset"
            )
        present = [not wanted.isdisjoint(labels) for labels in index["labels"]]
        return pd.Series(present, index=index.index, dtype="boolean", name=out_name)
    threshold = DEFAULT_MIN_FRACTION if min_fraction is None else float(min_fraction)
    if not 0.0 < threshold <= 1.0:
        raise UserError(f"min_fraction: expected a share in (0, 1], got {min_fraction}")
    share = np.array(
        [
            sum(f for label, f in zip(labels, fractions, strict=True) if label in wanted)
            for labels, fractions in zip(index["labels"], index[LABEL_FRACTIONS], strict=True)
        ],
        dtype=np.float64,
    )
    out = pd.Series(share >= threshold, index=index.index, dtype="boolean", name=out_name)
    if ambiguous == "exclude":
        out[(share > 0.0) & (share < threshold)] = pd.NA
    return out
