"""A grid cell asks the classifier stages for the stage its entry point name gives, and that stage's spec
class builds its parameters: no branch on the name in the grid."""

from __future__ import annotations

import re
from dataclasses import replace
from types import SimpleNamespace

import pytest

from simclr_s2.bigearthnet.bands import BANDS, STUDY_BANDS
from simclr_s2.errors import UserError
from simclr_s2.settings import specs
from simclr_s2.settings.spec import build
from simclr_s2.stages import auto, grid
from simclr_s2.stages.classifier import BASELINE, FINETUNE
from simclr_s2.stages.grid import (
    GRID,
    Cell,
    Inputs,
    Variant,
    _row,
    baselines_bands,
    cells_of,
    encoder_name,
    given_encoders,
    plan,
    recorded_tags,
    variants,
)
from simclr_s2.tracking.door import PARENT_TAG, Tracking
from simclr_s2.tracking.registry import BAND_LIST_TAG, ModelRef
from simclr_s2.tracking.tracker import Step

COMMON = {"scheme": "basic", "fraction": 10, "seed": 3, "epochs": 2}


@pytest.mark.parametrize(("stage", "params", "classifier", "spec_cls"), [
    ("finetune", {**COMMON, "trainable": "head"}, FINETUNE, specs.Finetune),
    ("baseline", {**COMMON, "arch": "resnet50"}, BASELINE, specs.Baseline),
])
def test_a_cell_runs_the_stage_its_name_gives_on_that_stages_spec(stage, params, classifier, spec_cls) -> None:
    cell = Cell(stage, "x", params)
    assert cell.classifier is classifier
    assert type(cell.spec) is spec_cls and {k: getattr(cell.spec, k) for k in params} == params


def _plan(**params: object) -> list[Cell]:
    spec = build(specs.Grid, {"encoders": "ben", "schemes": "basic", "fractions": "10", **params})
    split = {"basic": "runs:/0123/splits", "basic_neg": "runs:/4567/splits"}
    return plan(spec, {"ben": "models:/simclr-s2-encoder/3"}, split, variants(spec, []) if spec.split == "auto"
                else [Variant()])


def test_every_drawn_cell_records_its_label_rule_whether_or_not_the_grid_sweeps() -> None:
    """A cell reused by a grid that sweeps label rules reads as that grid's own cells do; a given split's
    rule is not known to the grid, and its cells claim none."""
    rule = {"min_fraction": "auto", "ambiguous": "exclude"}
    assert {tuple(c.tags.items()) for c in _plan()} == {tuple(rule.items())}
    swept = {c.label: c.tags for c in _plan(ambiguous="exclude,negative")}
    assert swept["finetune-ben-basic-10pct-s0"] == rule
    assert swept["finetune-ben-basic-10pct-s0-neg"] == {**rule, "ambiguous": "negative"}
    assert {tuple(c.tags) for c in _plan(split="/some/splits")} == {()}


def test_cells_csv_reports_the_tags_of_the_run_that_holds_the_cell() -> None:
    """A reused run keeps the tags of the grid that made it (none, before every cell had its label rule):
    its line says what the run records, the label rule as compare reads it."""
    cell = next(c for c in _plan(ambiguous="exclude,negative") if c.variant.ambiguous == "negative")
    untagged = _row(cell, "r1", "reused", recorded={"stage": "finetune"})
    assert (untagged["min_fraction"], untagged["ambiguous"]) == ("auto", "exclude")
    assert (_row(cell, "r2", "failed")["ambiguous"]) == "negative"  # no run holds it: as planned
    assert recorded_tags(cell, {"min_fraction": "0.5", "ambiguous": "negative"}) == \
        {"min_fraction": "0.5", "ambiguous": "negative"}


def _run(run_id: str, parent: str) -> SimpleNamespace:
    """What the grid reads of a cell's finished run: its id and tags."""
    return SimpleNamespace(info=SimpleNamespace(run_id=run_id), data=SimpleNamespace(tags={PARENT_TAG: parent}))


def test_a_cell_another_grid_trained_meanwhile_is_reported_reused(monkeypatch) -> None:
    """Two grids at once share a cell: the one that waited for the other's run to finish reuses it, though
    nothing was finished when it looked (status 'run'); a cell is 'finished' only by a run of this grid."""
    cells = _plan()[:2]
    finished = [_run("ours", "grid"), _run("theirs", "other-grid")]
    monkeypatch.setattr(grid, "status", lambda cell, ctx: "run")
    monkeypatch.setattr(grid, "ensure_step", lambda *args, **kwargs: finished.pop(0))
    rows = grid.in_process(cells, None, SimpleNamespace(run_id="grid"))
    assert [(r["run_id"], r["status"]) for r in rows] == [("ours", "finished"), ("theirs", "reused")]


def test_on_ray_a_cell_its_task_found_finished_is_reported_reused(monkeypatch) -> None:
    """A cell another command finished once the driver had looked: its task reuses that run (the outcome
    says so), and cells.csv too."""
    from simclr_s2.cluster import dispatch

    spec = build(specs.Grid, {"encoders": "ben", "schemes": "basic", "fractions": "10", "backend": "ray"})
    cells = _plan()[:2]
    outcomes = [dispatch.Outcome(None, "theirs", reused=True), dispatch.Outcome(None, "made-here")]
    monkeypatch.setattr(dispatch, "finished", lambda job, ctx: None)
    monkeypatch.setattr(dispatch, "run_jobs", lambda jobs, *args: [
        replace(outcome, job=job) for job, outcome in zip(jobs, outcomes, strict=True)])
    run = SimpleNamespace(run_id="grid", log_metrics=lambda metrics: None,
                          tracking=SimpleNamespace(get_run=lambda run_id: _run(run_id, "other-grid")))
    rows = grid.on_ray(spec, cells, None, run)
    assert [(r["run_id"], r["status"]) for r in rows] == [("theirs", "reused"), ("made-here", "finished")]


@pytest.mark.parametrize(("uri", "name"), [
    ("models:/simclr-s2-encoder@ben", "ben"), ("models:/team-encoder@champion", "team-encoder-champion"),
    ("models:/simclr-s2-encoder/3", "v3"), ("file:///tmp/x/enc.pt", "enc"), ("s3://b/a b/enc.v2.pt", "enc-v2"),
    ("../x/enc.pt", "enc"), ("runs:/0123abcd/model/", "run-0123abcd"),
])
def test_an_encoder_is_named_by_a_short_word_mlflow_takes_in_a_key_and_an_alias(uri: str, name: str) -> None:
    assert encoder_name(uri) == name


def test_given_encoders_keep_apart_and_their_resolved_keys_are_valid(ctx, monkeypatch) -> None:
    """Two registries' champions are two encoders; a URI's '//' never reaches a parameter's name; two
    encoders that would share a name are one line naming both."""
    monkeypatch.setattr(Tracking, "encoder_ref", lambda self, uri, what="pretrained": ModelRef(
        uri.replace("@champion", "/1"), "", {}, None))
    given = {"encoders": "models:/simclr-s2-encoder@champion,models:/team-encoder@champion,file:///tmp/enc.pt"}
    spec = build(specs.Grid, {**given, "schemes": "basic", "fractions": "10"})
    refs = given_encoders(spec, ctx)
    assert {name: ref.uri for name, ref in refs.items()} == {
        "champion": "models:/simclr-s2-encoder/1", "team-encoder-champion": "models:/team-encoder/1",
        "enc": "file:///tmp/enc.pt"}
    resolved = Inputs([Variant()], {"basic": "runs:/0123/splits"}, {n: r.uri for n, r in refs.items()}, {}, [])
    assert all(re.fullmatch(r"[\w-]+", key) for key in Step("main", {}, resolved.resolved()).params())
    clash = build(specs.Grid, {"encoders": "file:///a/enc.pt,/b/enc.pt", "schemes": "basic"})
    with pytest.raises(UserError, match=r"^encoders: file:///a/enc.pt and /b/enc.pt would both be named 'enc'"):
        given_encoders(clash, ctx)


@pytest.mark.parametrize(("params", "line"), [
    ({"index": "/nonexistent/index.parquet"}, r"index: /nonexistent/index.parquet does not exist"),
    ({"index": "{bad}"}, r"index .*bad.parquet: not a Parquet file"),
    ({"schemes": "nosuchscheme"}, r"scheme: 'nosuchscheme' is neither basic nor expanded nor a class name"),
])
def test_a_dry_run_refuses_what_the_grid_would_refuse_at_once(ctx, tmp_path, params, line) -> None:
    """Not "run" for every cell: the index must open and the scheme resolve; each the line drawing the splits
    would give."""
    (tmp_path / "bad.parquet").write_text("not parquet")
    given = {k: v.format(bad=tmp_path / "bad.parquet") for k, v in params.items()}
    spec = build(specs.Grid, {"schemes": "basic", "fractions": "10", "baseline": "false", **given})
    with pytest.raises(UserError, match=f"^{line}"):
        GRID.dry_run(spec, ctx)


def test_the_grid_refuses_a_fraction_its_splits_lack_before_any_cell_runs(ctx, demo) -> None:
    """Not one failed cell per seed and encoder: the split given is read before anything runs, and the splits
    the grid would draw hold create_splits' fractions."""
    given = build(specs.Grid, {"split": auto.demo_splits(ctx, "basic", make=False), "schemes": "basic",
                               "fractions": "10,77", "baseline": "false"})
    with pytest.raises(UserError, match=r"^fractions: \[77\] not in the 'basic' splits of runs:/\w+/splits: found "):
        GRID.resolve(given, ctx)
    with pytest.raises(UserError, match=r"^fractions: \[77\] not in the splits the grid draws \(create_splits' "):
        build(specs.Grid, {"fractions": "77", "split_kind": "folds-3", "folds": "0"})


def test_baselines_train_on_every_band_list_the_given_encoders_read():
    """compare pairs a fine-tune only with baselines of its bands: an imported encoder reading BigEarthNet's 12
    bands gets baselines on them beside the study's (whose cells and keys stay as they were), through the
    grid run's resolved parameters too (the Ray path rebuilds the cells from them)."""
    twelve = ",".join(BANDS)
    given = {"ssl4eo": ModelRef("models:/simclr-s2-encoder/4", "", {BAND_LIST_TAG: twelve}, None),
             "ben": ModelRef("models:/simclr-s2-encoder/3", "", {BAND_LIST_TAG: ",".join(STUDY_BANDS)}, None),
             "enc": ModelRef("file:///tmp/enc.pt", "", {}, None)}
    assert baselines_bands(given) == ["study", "all"]  # as a person running `baseline bands=all` keys it
    spec = build(specs.Grid, {"encoders": "ben,ssl4eo", "schemes": "basic", "fractions": "10"})
    found = Inputs([Variant()], {"basic": "runs:/0123/splits"}, {n: r.uri for n, r in given.items()}, {}, [],
                   baselines_bands(given))
    cells = {c.label: c for c in plan(spec, found.encoders, found.split, found.drawn, None, found.baseline_bands)}
    assert "bands" not in cells["baseline-resnet18-basic-10pct-s0"].params
    assert cells["baseline-resnet18-all-basic-10pct-s0"].params["bands"] == "all"
    assert set(cells) == {c.label for c in cells_of(spec, found.resolved())}
