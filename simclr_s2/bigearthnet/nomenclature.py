"""The 43-class (CORINE level-3) nomenclature of BigEarthNet v1.0 and the study's labelling schemes.

The schemes need the 43 names: the 19-class nomenclature merges the irrigated classes into
"Arable land" and "Permanent crops".
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

from simclr_s2.errors import UserError

# In the order of the BigEarthNet authors' label_indices.json (CORINE code order).
LABELS_43: tuple[str, ...] = (
    "Continuous urban fabric",
    "Discontinuous urban fabric",
    "Industrial or commercial units",
    "Road and rail networks and associated land",
    "Port areas",
    "Airports",
    "Mineral extraction sites",
    "Dump sites",
    "Construction sites",
    "Green urban areas",
    "Sport and leisure facilities",
    "Non-irrigated arable land",
    "Permanently irrigated land",
    "Rice fields",
    "Vineyards",
    "Fruit trees and berry plantations",
    "Olive groves",
    "Pastures",
    "Annual crops associated with permanent crops",
    "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas",
    "Broad-leaved forest",
    "Coniferous forest",
    "Mixed forest",
    "Natural grassland",
    "Moors and heathland",
    "Sclerophyllous vegetation",
    "Transitional woodland/shrub",
    "Beaches, dunes, sands",
    "Bare rock",
    "Sparsely vegetated areas",
    "Burnt areas",
    "Inland marshes",
    "Peatbogs",
    "Salt marshes",
    "Salines",
    "Intertidal flats",
    "Water courses",
    "Water bodies",
    "Coastal lagoons",
    "Estuaries",
    "Sea and ocean",
)

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
