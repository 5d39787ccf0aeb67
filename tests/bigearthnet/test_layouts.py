"""The archive versions as classes: each one written by the demo, recognised, indexed and loaded as itself."""

from __future__ import annotations

import pytest

from simclr_s2.bigearthnet.demo import write_demo_archive
from simclr_s2.bigearthnet.index import build_index, index_layout, load_index
from simclr_s2.bigearthnet.layouts import LAYOUTS, VERSIONS, ArchiveError, layout_named, recognise
from simclr_s2.settings import specs


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_each_layout_round_trips_through_demo_and_index(name, tmp_path):
    layout = LAYOUTS[name]
    root = write_demo_archive(tmp_path / name, n_patches=12, seed=1, workers=1, layout=name)
    assert recognise(root) is layout
    result = build_index(root, tmp_path / "index.parquet", workers=1)
    assert (result.version, result.n_indexed, result.n_rejected) == (name, 12, 0)
    assert index_layout(result.index_path) is layout
    assert list(load_index(result.index_path).columns) == layout.schema.names


def test_the_parameters_list_the_registry():
    assert specs.LAYOUTS == tuple(LAYOUTS) and VERSIONS == ("auto", *LAYOUTS)
    with pytest.raises(ArchiveError, match=r"^layout: 'v3' is not one of v1, v2$"):
        layout_named("v3", "layout")


def test_one_check_names_the_parameter_and_what_it_accepts(tmp_path):
    """`auto` is a version only where a folder can be recognised; every refusal is the one message."""
    with pytest.raises(ArchiveError, match=r"^version: 'v3' is not one of auto, v1, v2$"):
        recognise(tmp_path, "v3")
    with pytest.raises(ArchiveError, match=r"^layout: 'auto' is not one of v1, v2$"):
        layout_named("auto", "layout")
    assert recognise(tmp_path, "v2") is LAYOUTS["v2"] and recognise(tmp_path) is LAYOUTS["v1"]
