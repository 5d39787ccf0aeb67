"""evaluate's guard of a classifier's own ground: a test set of another split, and the validation set its
threshold is chosen on there, are judged by footprint (the same ground on any date, or a neighbour) against
the classifier's training and validation patches, read from the split its run logged; its own split passes."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from simclr_s2.bigearthnet.index import index_archive_root, index_digest, load_index
from simclr_s2.errors import UserError
from simclr_s2.settings import specs
from simclr_s2.stages import leakage
from simclr_s2.stages.evaluate import _own_ground
from simclr_s2.stages.inputs import SOURCE, SplitData, load_split_data
from simclr_s2.study import footprint, membership
from simclr_s2.study.splits import VAL_NATURAL, create_splits, load_sets
from simclr_s2.tracking.artifacts import Fetcher
from simclr_s2.tracking.registry import ModelRef


def _splits(index_path: Path, folder: Path, seed: int, natural: bool = False) -> SplitData:
    """A random split of the index, as create_splits files it (with its source.json); with natural sets."""
    create_splits(load_index(index_path), "basic", folder, seed=seed, kind="random", natural_test=natural,
                  natural_share=0.2, index_digest=index_digest(index_path))
    (folder / "basic" / SOURCE).write_text(json.dumps({"index": str(index_path),
                                                       "archive_root": str(index_archive_root(index_path))}))
    return load_split_data(Fetcher(folder.parent / "cache", "file:unused"), str(folder), "basic", 100)


def _natural_validation(data: SplitData) -> list[str]:
    return load_sets(data.folder, "basic").get(100, VAL_NATURAL).names


def _model(own: SplitData, params: dict[str, str] | None = None) -> tuple[SimpleNamespace, dict[str, str]]:
    """A tracking client whose run r0 logged `own` as its split, and the tags its version recorded."""
    run = SimpleNamespace(data=SimpleNamespace(params={"split": str(own.folder), **(params or {})}))
    tags = {"scheme": "basic", "fraction": "100", "train_digest": own.train.digest, "val_digest": own.val.digest,
            "test_digest": own.test.digest}
    return SimpleNamespace(get_run=lambda run_id: run), tags


def _without(index_path: Path, names: list[str], out: Path) -> Path:
    """The index less the patches `names`, its metadata (archive root) kept."""
    table = pq.read_table(index_path)
    out.mkdir(parents=True)
    pq.write_table(table.filter(pc.invert(pc.is_in(table["name"], value_set=pa.array(names)))), out / "index.parquet")
    return out / "index.parquet"


def _near(data: SplitData, names: list[str], ground: list[str], index) -> int:
    return int(footprint.near(footprint.of(data.index, names), footprint.of(index, ground)).sum())


@pytest.fixture
def fetch(tmp_path: Path) -> Fetcher:
    return Fetcher(tmp_path / "cache", "file:unused")


def test_a_test_set_on_the_classifiers_ground_is_refused_though_it_shares_no_patch(demo_index, tmp_path, fetch):
    """A split drawn from the index less the classifier's own patches shares no name with them, but holds
    their ground on other dates and their neighbours: that is leakage, as for the encoder's guard."""
    own = _splits(demo_index, tmp_path / "s0", 0, natural=True)
    ground_names = [*own.train.names, *own.val.names, *_natural_validation(own)]
    other = _splits(_without(demo_index, ground_names, tmp_path / "less"), tmp_path / "s1", 1)
    assert not set(other.test.names) & set(ground_names)
    client, tags = _model(own)
    ground = leakage.classifier_ground(client, fetch, tags, "r0")
    seen = _near(other, other.test.names, ground_names, own.index)
    assert seen, "the patches left should lie beside the ground taken out"
    for allow in ("false", "unknown"):
        with pytest.raises(UserError, match=rf"^model_uri: the model was trained or validated on the ground of "
                                            rf"{seen} of the {len(other.test.names)} patches of the test set \("):
            leakage.training_status(ground, other.test.names, other.index, "test", allow)
    assert leakage.training_status(ground, other.test.names, other.index, "test", "true") == f"override:{seen}"


def test_the_ground_holds_the_natural_validation_set_the_classifier_chose_its_threshold_on(demo_index, tmp_path,
                                                                                          fetch):
    own = _splits(demo_index, tmp_path / "s0", 0, natural=True)
    natural = load_sets(own.folder, "basic").get(100, VAL_NATURAL)
    only = [n for n in natural.names if n not in {*own.train.names, *own.val.names}]
    assert only, "the natural validation set should hold patches of its own"
    client, tags = _model(own, {"val_natural_digest": natural.digest})
    ground = leakage.classifier_ground(client, fetch, tags, "r0")
    assert isinstance(ground, membership.Membership) and ground.overlap(footprint.of(own.index, only)) == len(only)
    changed, _ = _model(own, {"val_natural_digest": "0" * 64})  # the split's natural set is not the run's
    unread = leakage.classifier_ground(changed, fetch, tags, "r0")
    assert isinstance(unread, leakage.Unreadable) and "no longer holds" in unread.reason


def test_a_ground_that_cannot_be_read_fails_closed(demo_index, tmp_path, fetch):
    """A split changed since the run, or an index without the footprints of its patches: the guard cannot
    judge, so it stops unless told to go on; a version that recorded no digests is unknown."""
    own = _splits(demo_index, tmp_path / "s0", 0)
    client, tags = _model(own)
    changed = leakage.classifier_ground(client, fetch, {**tags, "train_digest": "0" * 64}, "r0")
    assert isinstance(changed, leakage.Unreadable) and "no longer holds" in changed.reason
    with pytest.raises(UserError, match="^model_uri: the model's training and validation ground cannot be read"):
        leakage.training_status(changed, own.test.names, own.index, "test", "false")
    assert leakage.training_status(changed, own.test.names, own.index, "test", "unknown") == "unknown"
    assert leakage.classifier_ground(client, fetch, {"scheme": "basic"}, "r0") is None  # recorded no digests
    table = pq.read_table(demo_index)
    blank = np.isin(table["name"].to_numpy(zero_copy_only=False), own.train.names[:3])
    (tmp_path / "blank").mkdir()
    pq.write_table(table.set_column(table.schema.get_field_index("epsg"), "epsg",
                                    pc.if_else(pa.array(blank), pa.scalar(None, table["epsg"].type), table["epsg"])),
                   tmp_path / "blank" / "index.parquet")
    unknown = _splits(tmp_path / "blank" / "index.parquet", tmp_path / "b0", 0)
    client, tags = _model(unknown)
    unread = leakage.classifier_ground(client, fetch, tags, "r0")
    assert isinstance(unread, leakage.Unreadable) and "no footprint" in unread.reason


def test_the_threshold_set_of_another_split_is_guarded_and_the_own_split_passes(demo_index, tmp_path, fetch):
    """Scored on another split's natural test set, the model's threshold would come from that split's natural
    validation set, which lies on the ground it trained on: refused, or recorded as threshold_overlap."""
    own = _splits(demo_index, tmp_path / "s0", 0, natural=True)
    other = _splits(demo_index, tmp_path / "s1", 1, natural=True)
    client, tags = _model(own)
    ref = ModelRef("models:/m/1", "m/1", tags, "r0")
    ground_names = [*own.train.names, *own.val.names, *_natural_validation(own)]
    threshold_set = _natural_validation(other)
    seen = _near(other, threshold_set, ground_names, own.index)
    assert seen

    def guarded(split: SplitData, allow: str) -> dict[str, str]:
        spec = specs.Evaluate(model_uri="models:/m/1", split=str(split.folder), set="test_natural",
                              allow_pretraining_overlap=allow)
        validation, found = _own_ground(client, fetch, ref, split, spec)
        assert validation.path.name == "val_natural_100pct.csv"
        return found

    with pytest.raises(UserError, match=r"^model_uri: the model was trained or validated on the ground of "):
        guarded(other, "false")
    found = guarded(other, "true")
    assert found["threshold_overlap"] == f"override:{seen}" and found["threshold_set"] == "val_natural_100pct.csv"
    assert guarded(own, "false") == {"training_overlap": "0", "threshold_overlap": "0",
                                     "threshold_set": "val_natural_100pct.csv"}

