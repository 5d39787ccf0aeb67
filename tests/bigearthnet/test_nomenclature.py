from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simclr_s2.bigearthnet.nomenclature import (
    LABELS_43,
    SCHEMES,
    UnknownClassError,
    check_labels,
    is_positive,
    resolve_scheme,
)


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
