"""compare: the study's comparison for one scheme, from the model registry: every condition across the data
fractions with intervals and paired tests against the baselines on the same test patches (spatial groups
resampled, seeds by Student t, Holm-adjusted), natural-prevalence figures and calibration, the figures and
one report.html, written to `out` and logged as artifacts of the compare run. It trains and writes
nothing else: predictions are read into a temporary folder."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping

import pandas as pd

from simclr_s2.errors import UserError
from simclr_s2.settings import specs
from simclr_s2.settings.context import Context
from simclr_s2.stages.base import Stage
from simclr_s2.stages.data import _folder
from simclr_s2.study.comparison import (
    COUNTRY_METRIC,
    LABEL_RULE,
    METRICS,
    OPTIONAL_METRICS,
    RECALIBRATED,
    VARIANT,
    Predictions,
    compare,
)
from simclr_s2.study.report import Links, write_report
from simclr_s2.tracking.door import Tracking
from simclr_s2.tracking.names import CLASSIFIER_MODEL
from simclr_s2.tracking.tracker import StageRun
from simclr_s2.tracking.ui import run_url, version_url
from simclr_s2.tracking.versions import VersionRecord, finite, versions_frame

PREDICTIONS_FOLDER = "evaluation/test"
PREDICTIONS = f"{PREDICTIONS_FOLDER}/predictions.csv"
FOLDS = "folds"  # test_set value: every version trained on a cross-validation fold, each fold its test set
NATURAL_FOLDER = "evaluation/test_natural"


class Compare(Stage[specs.Compare]):
    spec = specs.Compare
    read_only = True

    def run_name(self, spec: specs.Compare, resolved: Mapping[str, str]) -> str:
        return f"compare-{spec.scheme}"

    def tags(self, spec: specs.Compare, resolved: Mapping[str, str]) -> dict[str, object]:
        return {"scheme": spec.scheme}

    def execute(self, spec: specs.Compare, resolved: Mapping[str, str], run: StageRun, ctx: Context) -> None:
        out = _folder(spec, resolved, "out")  # a file there was a traceback, after the bootstrap
        records = run.tracking.search_versions(spec.scheme)
        if not records:
            raise UserError(f"scheme: no registered {CLASSIFIER_MODEL} version has scheme {spec.scheme!r}; "
                            "run finetune and baseline (or main) first")
        if spec.test_set not in ("any", FOLDS):
            records = [r for r in records if r.tags.get("test_digest", "").startswith(spec.test_set)]
            if not records:
                raise UserError(f"test_set: no {spec.scheme} version was scored on a test set whose digest "
                                f"starts with {spec.test_set!r}")
        records, skipped = finite(records, METRICS, spec.scheme)
        if skipped:
            run.set_tags({"skipped_non_finite": ", ".join(skipped)[:4000]})
        experiments = {r.run_id: r.experiment_id for r in records}
        uri = ctx.tracking_uri
        links = Links(run=lambda run_id: run_url(uri, experiments.get(run_id, "0"), run_id),
                      version=lambda model, version: version_url(uri, model, version),
                      classifier_model=CLASSIFIER_MODEL)
        with tempfile.TemporaryDirectory() as tmp:

            def natural(run_id: str) -> pd.DataFrame | None:
                """The natural-prevalence test predictions, where the run scored that set."""
                listed = {a.path for a in run.tracking.list_artifacts(run_id, NATURAL_FOLDER)}
                path = f"{NATURAL_FOLDER}/predictions.csv"
                if path not in listed:
                    return None
                return pd.read_csv(run.tracking.download_artifacts(run_id, path, tmp))

            frame = runs_frame(records, spec)
            comparison = compare(frame, spec.fractions,
                                 predictions=predictions_reader(run.tracking, tmp),
                                 natural=natural, n_boot=spec.n_boot)
        for path in write_report(comparison, out, f"scheme {spec.scheme}", links):
            run.log_artifact(path)
        cells = comparison.cells
        filled = int((cells["n_runs"] > 0).sum())
        run.set_tags({"n_versions": len(records), "cells_filled": f"{filled}/{len(cells)}",
                      "conditions": len(comparison.conditions), "test_digest": comparison.test_digest})
        print(f"compare {spec.scheme}: {len(records)} versions, {len(comparison.conditions)} conditions, "
              f"{filled} of {len(cells)} cells with runs"
              + (f", {len(skipped)} non-finite versions skipped" if skipped else "")
              + f"; report in {out / 'report.html'}")


def predictions_reader(tracking: Tracking, folder: str) -> Predictions:
    """What reads a run's test predictions into `folder`, None where the run logged none (comparison
    decides what that means for the runs it counts)."""
    def read(run_id: str) -> pd.DataFrame | None:
        if PREDICTIONS not in {a.path for a in tracking.list_artifacts(run_id, PREDICTIONS_FOLDER)}:
            return None
        return pd.read_csv(tracking.download_artifacts(run_id, PREDICTIONS, folder))

    return read


def runs_frame(records: list[VersionRecord], spec: specs.Compare) -> pd.DataFrame:
    """compare's input: the versions' frame with their per-country metrics, the fold and label rule that
    main tags each cell's run with, and whether the classifier recalibrated its encoder's BatchNorm ("" where
    a run has no such tag); with test_set=folds, only fold runs."""
    countries = sorted({m for r in records for m in r.metrics if COUNTRY_METRIC.fullmatch(m)})
    frame = versions_frame(records, (*METRICS, *OPTIONAL_METRICS, *countries))
    frame = frame.assign(**{k: [r.run_tags.get(k, "") for r in records]
                            for k in (*VARIANT, *LABEL_RULE, RECALIBRATED)})
    if spec.test_set == FOLDS:
        frame = frame[frame["fold"] != ""]
        if frame.empty:
            raise UserError(f"test_set: no {spec.scheme} version was trained on a cross-validation fold; "
                            "run main with split_kind=folds-<k> or country first")
    return frame


COMPARE = Compare()
