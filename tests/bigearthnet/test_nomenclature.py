"""The nomenclature: the 43 v1.0 names, the CORINE codes and 19 classes of v2.0, and schemes by label
presence (v1.0) or by area share with ambiguous patches (v2.0)."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from simclr_s2.bigearthnet.nomenclature import (
    AMBIGUOUS,
    CLC_LEVEL3,
    CLC_TO_19,
    CODE_OF,
    DEFAULT_MIN_FRACTION,
    LABEL_FRACTIONS,
    LABELS_19,
    LABELS_43,
    SCHEME_CODES,
    SCHEMES,
    UnknownClassError,
    check_labels,
    is_positive,
    labels_19,
    resolve_scheme,
    scheme_labels,
)
from simclr_s2.errors import UserError


def test_43_distinct_names_and_schemes_of_the_study():
    assert len(LABELS_43) == 43 == len(set(LABELS_43))
    assert SCHEMES["basic"] == ("Permanently irrigated land",)
    assert set(SCHEMES["expanded"]) == {
        "Permanently irrigated land",
        "Rice fields",
        "Vineyards",
        "Fruit trees and berry plantations",
        "Olive groves",
    }
    assert all(c in LABELS_43 for classes in SCHEMES.values() for c in classes)


@pytest.mark.parametrize("name", ["basic", "expanded"])
def test_named_schemes(name):
    assert resolve_scheme(name) == (name, SCHEMES[name])


def test_custom_schemes_from_list_or_semicolon_string():
    assert resolve_scheme(["Rice fields", "Vineyards"]) == ("custom", ("Rice fields", "Vineyards"))
    assert resolve_scheme("Rice fields; Vineyards") == ("custom", ("Rice fields", "Vineyards"))
    assert resolve_scheme("Beaches, dunes, sands") == ("custom", ("Beaches, dunes, sands",))
    assert resolve_scheme(["Permanently irrigated land"]) == ("basic", SCHEMES["basic"])


@pytest.mark.parametrize(
    ("spec", "closest"),
    [
        (["Permanently irigated land"], "Permanently irrigated land"),
        ("Rice field;Vineyards", "Rice fields"),
        ("expandd", "expanded"),
    ],
)
def test_unknown_class_lists_the_closest_names(spec, closest):
    with pytest.raises(UnknownClassError, match="closest") as info:
        resolve_scheme(spec)
    assert closest in str(info.value)
    assert "\n" not in str(info.value)


def test_empty_scheme_is_an_error():
    with pytest.raises(UnknownClassError):
        resolve_scheme([])


def test_check_labels_names_the_place():
    check_labels(LABELS_43, "x")
    with pytest.raises(UnknownClassError, match="patch P: unknown class 'Forest'"):
        check_labels(["Mixed forest", "Forest"], "patch P")


@given(st.lists(st.sampled_from(LABELS_43), max_size=6), st.sampled_from(list(SCHEMES.values())))
def test_is_positive_means_any_scheme_class(labels, classes):
    assert is_positive(labels, classes) == any(label in classes for label in labels)


def test_clc_codes_and_the_19_classes():
    assert len(CLC_LEVEL3) == 44 and list(CLC_LEVEL3) == sorted(CLC_LEVEL3)
    assert set(LABELS_43) == set(CLC_LEVEL3.values()) - {"Glaciers and perpetual snow"}
    assert SCHEME_CODES == (212, 213, 221, 222, 223)
    assert [CODE_OF[c] for c in SCHEMES["expanded"]] == [212, 213, 221, 222, 223]
    assert len(LABELS_19) == 19 and set(CLC_TO_19.values()) == set(LABELS_19)
    # BigEarthNet's label_conversion: irrigated land and rice are "Arable land", 241 is a permanent crop,
    # and roads, ports, airports, mines, dumps, construction, green urban, sport, bare rock, burnt areas,
    # intertidal flats (and glaciers) belong to no class
    assert labels_19([212, 213, 211]) == ["Arable land"]
    assert labels_19([241, 221, 231]) == ["Pastures", "Permanent crops"]
    unmapped = {122, 123, 124, 131, 132, 133, 141, 142, 332, 334, 335, 423}
    assert set(CLC_LEVEL3) - set(CLC_TO_19) == unmapped and labels_19(unmapped) == []


def _v1_index(labels: list[list[str]]) -> pd.DataFrame:
    return pd.DataFrame(
        {"name": [f"p{i}" for i in range(len(labels))], "labels": labels}, index=range(10, 10 + len(labels))
    )


def _v2_index(shares: list[dict[str, float]]) -> pd.DataFrame:
    df = _v1_index([list(s) for s in shares])
    df[LABEL_FRACTIONS] = [list(s.values()) for s in shares]
    return df


def test_v1_schemes_are_label_presence():
    index = _v1_index([["Permanently irrigated land", "Pastures"], ["Vineyards"], ["Mixed forest"]])
    basic = scheme_labels(index, "basic")
    assert basic.dtype == "boolean" and basic.name == "positive_basic" and basic.index.equals(index.index)
    assert basic.tolist() == [True, False, False]
    assert scheme_labels(index, "expanded").tolist() == [True, True, False]
    assert scheme_labels(index, "Vineyards;Mixed forest").tolist() == [False, True, True]
    assert scheme_labels(index, "Vineyards;Mixed forest").name == "positive_custom"
    with pytest.raises(UserError, match="min_fraction: 0.2 needs a v2.0 index"):
        scheme_labels(index, "basic", min_fraction=0.2)


def test_v2_schemes_by_area_with_ambiguous_patches():
    index = _v2_index(
        [
            {"Permanently irrigated land": 0.5, "Pastures": 0.5},
            {"Permanently irrigated land": 0.17, "Pastures": 0.83},  # exactly the default: positive
            {"Permanently irrigated land": 0.05, "Rice fields": 0.1, "Pastures": 0.85},
            {"Vineyards": 0.3, "Non-irrigated arable land": 0.7},
            {"Mixed forest": 1.0},
            {},  # no class mapped at all (only no-data pixels): negative
        ]
    )
    assert scheme_labels(index, "basic").tolist() == [True, True, pd.NA, False, False, False]
    assert scheme_labels(index, "basic", ambiguous="negative").tolist() == [
        True,
        True,
        False,
        False,
        False,
        False,
    ]
    assert scheme_labels(index, "expanded").tolist() == [True, True, pd.NA, True, False, False]
    assert scheme_labels(index, "expanded", min_fraction=0.15).tolist() == [
        True,
        True,
        True,
        True,
        False,
        False,
    ]
    assert scheme_labels(index, "basic", min_fraction=0.01).tolist() == [
        True,
        True,
        True,
        False,
        False,
        False,
    ]
    assert scheme_labels(index, "Rice fields;Vineyards").tolist() == [False, False, pd.NA, True, False, False]
    assert DEFAULT_MIN_FRACTION == 0.17


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_fraction": 0.0}, "min_fraction"),
        ({"min_fraction": 1.5}, "min_fraction"),
        ({"ambiguous": "drop"}, "ambiguous"),
    ],
)
def test_bad_scheme_parameters(kwargs, match):
    with pytest.raises(UserError, match=match):
        scheme_labels(_v2_index([{"Rice fields": 1.0}]), "expanded", **kwargs)


@given(
    st.lists(st.floats(0.0, 1.0), min_size=1, max_size=20), st.floats(0.01, 1.0), st.sampled_from(AMBIGUOUS)
)
def test_area_rule(shares, min_fraction, ambiguous):
    index = _v2_index([{"Permanently irrigated land": s, "Pastures": 1.0 - s} for s in shares])
    got = scheme_labels(index, "basic", min_fraction=min_fraction, ambiguous=ambiguous).tolist()
    for share, label in zip(shares, got, strict=True):
        if share >= min_fraction:
            assert label is True
        elif share == 0.0 or ambiguous == "negative":
            assert label is False
        else:
            assert label is pd.NA
