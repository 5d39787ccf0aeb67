"""What `compare` and `promote` ask of the model registry: the classifier versions of a scheme with their
runs' full-precision metrics, and moving aliases with the reason written on the version.

Versions are found by tag filter (one paged query), and their runs' metrics come in batches of runs, not
one request per version or per metric, so a large grid on a remote server stays a handful of calls.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import pandas as pd
from mlflow.entities import RunStatus, ViewType
from mlflow.entities.model_registry.model_version_status import ModelVersionStatus
from mlflow.store.entities.paged_list import PagedList
from mlflow.tracking import MlflowClient

from simclr_s2.errors import UserError
from simclr_s2.learning.metrics import THRESHOLD_SOURCE
from simclr_s2.tracking.names import CLASSIFIER_MODEL, COMPLETE_TAG

log = logging.getLogger(__name__)

CLASSIFIER_STAGES = ("finetune", "baseline")
FINISHED = RunStatus.to_string(RunStatus.FINISHED)
READY = ModelVersionStatus.to_string(ModelVersionStatus.READY)  # registering, or failed: no model to read
RUNS_PER_QUERY = 100  # run ids per `IN (...)` filter: keeps the filter string short for any backend

T = TypeVar("T")


@dataclass(frozen=True)
class VersionRecord:
    """One registered classifier version: its tags (stage, scheme, fraction, pretrained, seed, ...) and the
    metrics of the run that produced it (test_f1, best_val_f1, ...), at full precision."""

    version: str
    tags: dict[str, str]
    metrics: dict[str, float]
    run_id: str = ""
    experiment_id: str = ""
    run_tags: dict[str, str] = field(default_factory=dict)  # its run's tags (main's fold and label rule)
    run_status: str = ""  # its run's status (FINISHED, ...; "" where the store does not hold the run)

    @property
    def finished(self) -> bool:
        """Whether its run finished its work: marked complete and ended FINISHED (the mark comes first, so a
        run between the two, or one whose ending failed and was ended FAILED, carries the mark alone)."""
        return self.run_tags.get(COMPLETE_TAG) == "true" and self.run_status == FINISHED

    def describe(self) -> str:
        t = self.tags
        return f"v{self.version} ({t.get('pretrained', '?')} {t.get('fraction', '?')}pct s{t.get('seed', '?')})"


def _pages(fetch: Callable[..., PagedList[T]]) -> Iterator[T]:
    """Every item of a paged MLflow search; `fetch` takes the `page_token` keyword."""
    token = None
    while True:
        page = fetch(page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def _quoted(name: str, value: str) -> str:
    """`value` as a filter literal; MLflow's filter grammar has no escape for a quote, so one is refused."""
    if "'" in value or '"' in value:
        raise UserError(f"{name}: {value!r} cannot contain quotes")
    return f"'{value}'"


def search_versions(client: MlflowClient, scheme: str, *, fraction: int | None = None,
                    pretrained: str | None = None, model: str = CLASSIFIER_MODEL) -> list[VersionRecord]:
    """Classifier versions (finetune and baseline) of `scheme`, optionally of one fraction or encoder
    ("scratch" = baselines), with their runs' metrics; oldest version first. Only READY versions of complete
    runs: compare must not count, nor promote point the champion at, one whose registration has not finished
    or failed (a remote registry can hold such versions), nor one a run registered before it was killed (the
    run that resumed it registers its own; the dead run goes to the trash), nor one whose run is marked
    complete but not ended FINISHED (VersionRecord.finished)."""
    clauses = [f"name = {_quoted('model', model)}", f"tags.scheme = {_quoted('scheme', scheme)}"]
    if fraction is not None:
        clauses.append(f"tags.fraction = '{int(fraction)}'")
    if pretrained is not None:
        clauses.append(f"tags.pretrained = {_quoted('pretrained', pretrained)}")
    found = sorted((mv for mv in _pages(partial(client.search_model_versions, " and ".join(clauses)))
                    if mv.tags.get("stage") in CLASSIFIER_STAGES), key=lambda mv: int(mv.version))
    if unready := [f"v{mv.version} ({mv.status})" for mv in found if mv.status != READY]:
        log.warning("left out, not ready in the registry: %s", ", ".join(unready))
    versions = [(mv.run_id or mv.tags.get("run_id", ""), mv) for mv in found if mv.status == READY]
    runs = run_metrics(client, (run_id for run_id, _ in versions))
    records = [VersionRecord(str(mv.version), dict(mv.tags), metrics, run_id, experiment, tags, status)
               for run_id, mv in versions for metrics, experiment, tags, status in [runs.get(run_id, NO_RUN)]]
    if unfinished := [r.describe() for r in records if not r.finished]:
        log.warning("left out, registered by runs that never finished (or that this store does not hold): %s",
                    ", ".join(unfinished))
    return [r for r in records if r.finished]


def finite(records: Sequence[VersionRecord], metrics: Iterable[str],
           scheme: str) -> tuple[list[VersionRecord], list[str]]:
    """The records (of `scheme`) whose `metrics` are all finite numbers, and the descriptions of those left out
    (a diverged run never counts in a comparison); where none is left, one line naming them, not the empty
    table's want of every column."""
    metrics = list(metrics)
    keep = [r for r in records if all(math.isfinite(r.metrics.get(m, math.nan)) for m in metrics)]
    skipped = [r.describe() for r in records if r not in keep]
    if records and not keep:
        shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        raise UserError(f"scheme: every {scheme} version to compare has a non-finite test metric ({shown}), and "
                        "a diverged run counts in no comparison; retrain them")
    return keep, skipped


# Tags a version registered before a condition tag existed, or without one, falls back to (see compare.py's
# contract; THRESHOLD_SOURCE is set only where a natural validation set could not choose the threshold; "" bands
# and scaling, registry.SCALING_TAG, read as comparison.DEFAULT_INPUT).
TAG_DEFAULTS = {"encoder_version": "", "trainable": "all", "bands": "", "scaling": "", "settings": "",
                "split_kind": "random", "pretraining_overlap": "unknown", "test_digest": "", "train_digest": "",
                "val_digest": "", "index_digest": "", "encoder_digest": "", THRESHOLD_SOURCE: ""}


def versions_frame(records: Sequence[VersionRecord], metrics: Iterable[str]) -> pd.DataFrame:
    """One row per version with the columns `compare.compare` takes: version, run_id, every condition
    column, fraction, seed, the test digest (all from the version's tags) and `metrics` from its run
    (NaN where the run lacks one)."""
    metrics = list(metrics)
    rows = [{"version": int(r.version), "run_id": r.run_id, "stage": r.tags.get("stage"),
             "pretrained": r.tags.get("pretrained", ""), "arch": r.tags.get("arch", ""),
             "epochs": int(float(r.tags.get("epochs", 0))), "tuned": r.tags.get("tuned", "false") == "true",
             "fraction": int(r.tags["fraction"]), "seed": int(r.tags.get("seed", 0)),
             **{k: r.tags.get(k, default) for k, default in TAG_DEFAULTS.items()},
             **{m: r.metrics.get(m, math.nan) for m in metrics}} for r in records]
    return pd.DataFrame(rows)


RunFacts = tuple[dict[str, float], str, dict[str, str], str]  # metrics, experiment, tags, status
NO_RUN: RunFacts = ({}, "", {}, "")


def run_metrics(client: MlflowClient, run_ids: Iterable[str]) -> dict[str, RunFacts]:
    """Latest value of every metric of each run, the run's experiment, its tags and status, fetched in batches
    of runs across all experiments (a version's run may live in any experiment; deleted runs still count:
    their model is registered)."""
    ids = sorted({i for i in run_ids if i})
    if not ids:
        return {}
    experiments = [e.experiment_id for e in _pages(partial(client.search_experiments, view_type=ViewType.ALL))]
    out: dict[str, RunFacts] = {}
    for start in range(0, len(ids), RUNS_PER_QUERY):
        listed = ", ".join(f"'{i}'" for i in ids[start:start + RUNS_PER_QUERY])
        for run in _pages(partial(client.search_runs, experiments, f"attributes.run_id IN ({listed})",
                                  run_view_type=ViewType.ALL)):
            out[run.info.run_id] = (dict(run.data.metrics), run.info.experiment_id, dict(run.data.tags),
                                    run.info.status)
    missing = set(ids) - set(out)
    if missing:
        log.warning("runs %s of registered versions not found; their metrics count as missing", sorted(missing))
    return out


def alias_version(client: MlflowClient, alias: str, model: str = CLASSIFIER_MODEL) -> str | None:
    """The version `alias` points to, or None when the alias is not set."""
    aliases = client.get_registered_model(model).aliases
    return str(aliases[alias]) if alias in aliases else None


def alias_tags(alias: str, tags: Mapping[str, str]) -> dict[str, str]:
    """promote's reason (`promoted_metric`, ...) as a version carries it, under the alias
    (`promoted.champion.metric`): a version may hold several aliases, each promoted for its own reason."""
    return {f"{_alias_prefix(alias)}{key.removeprefix('promoted_')}": value for key, value in tags.items()
            if key != "promoted_alias"}


def _alias_prefix(alias: str) -> str:
    return f"promoted.{alias}."


def _reason_keys(tags: Mapping[str, str], alias: str) -> list[str]:
    """The tags of a version that give its reason for holding `alias`: alias_tags', or the `promoted_*` a
    promote before them wrote, where they name `alias`."""
    legacy = tags.get("promoted_alias") == alias
    return [k for k in tags if k.startswith(_alias_prefix(alias)) or (legacy and k.startswith("promoted_"))]


def move_alias(client: MlflowClient, version: str, alias: str, tags: Mapping[str, str], *, former: str | None,
               previous_alias: str, model: str = CLASSIFIER_MODEL) -> None:
    """Point `alias` at `version` after writing the reason `tags` on it under the alias (alias_tags: so
    whoever follows the alias finds why), and keep `former`, the version `alias` held before, reachable as
    `previous_alias`, its reason for `alias` taken off (the promote runs keep the history). A reason for
    `alias` the version carries from a promote before alias_tags (`promoted_*`) goes: the new one replaces it."""
    new = alias_tags(alias, tags)
    for key in _reason_keys(client.get_model_version(model, version).tags, alias):
        if key not in new:
            client.delete_model_version_tag(model, version, key)
    for key, value in new.items():
        client.set_model_version_tag(model, version, key, value)
    if former is not None and former != version:
        client.set_registered_model_alias(model, previous_alias, former)
        for key in _reason_keys(client.get_model_version(model, former).tags, alias):
            client.delete_model_version_tag(model, former, key)
    client.set_registered_model_alias(model, alias, version)
