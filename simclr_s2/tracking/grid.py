"""The study's grid as child runs of one parent: encoders x fractions x schemes x seeds fine-tunes plus a
baseline per (scheme, fraction, seed). Each cell goes through `ensure_run`, so a finished cell is reused,
an interrupted one is resumed in place, and a failed one is reported while the rest go on."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pandas as pd

from simclr_s2.errors import UserError
from simclr_s2.tracking.registry import ENCODER_MODEL, resolve_model_uri
from simclr_s2.tracking.runs import (
    UNFINISHED,
    canonical_params,
    ensure_run,
    find_finished,
    find_runs,
    run_key,
)
from simclr_s2.tracking.steps import demo_encoder_params, demo_encoder_uri

log = logging.getLogger(__name__)

# The study's three encoders, pretrained on the demo archive with the recipes of STUDY.md.
DEMO_ENCODERS = {"ben": {}, "ca-sgd": {"optimizer": "sgd", "lr": 0.1}, "ca-adam": {"optimizer": "adam", "lr": 5e-4}}


@dataclass(frozen=True)
class Cell:
    stage: str  # finetune or baseline
    name: str  # encoder name or baseline arch, for people
    params: dict[str, object] = field(hash=False)

    @property
    def label(self) -> str:
        p = self.params
        return f"{self.stage}-{self.name}-{p['scheme']}-{p['fraction']}pct-s{p['seed']}"


def encoder_uris(spec: str, dry_run: bool) -> dict[str, str]:
    """Encoder name -> pinned registry URI (models:/name/<version>), so a cell's key names the exact
    weights. `auto` pretrains (or reuses) the demo's three encoders; a dry run trains nothing (it may
    prepare the demo data) and shows an encoder not yet pretrained as `(to pretrain)`."""
    if spec == "auto":
        uris = {}
        for name, recipe in DEMO_ENCODERS.items():
            done = find_finished("pretrain", demo_encoder_params(name, recipe))
            if dry_run and not done:
                uris[name] = f"(to pretrain {name})"
            else:
                uris[name] = demo_encoder_uri(name, recipe)
        return uris
    uris = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        uri = item if ":" in item or "/" in item else f"models:/{ENCODER_MODEL}@{item}"
        name = uri.rsplit("@", 1)[-1] if "@" in uri else uri.rstrip("/").rsplit("/", 1)[-1]
        if uri.startswith("models:/"):
            try:
                uri = "models:/" + resolve_model_uri(uri)[1]
            except UserError:
                pass  # kept as given: its cells fail with the reason while the rest go on
        uris[name] = uri
    return uris


def plan(encoders: dict[str, str], schemes: list[str], fractions: list[int], seeds: list[int], *,
         baseline: bool, baseline_arch: str, trainable: str, epochs: int, split: str) -> list[Cell]:
    cells = []
    for scheme in schemes:
        for fraction in fractions:
            for seed in seeds:
                common = {"scheme": scheme, "fraction": fraction, "seed": seed, "epochs": epochs, "split": split}
                cells += [Cell("finetune", name, {**common, "pretrained": uri, "trainable": trainable})
                          for name, uri in encoders.items()]
                if baseline:
                    cells.append(Cell("baseline", baseline_arch, {**common, "arch": baseline_arch}))
    return cells


def status(cell: Cell) -> str:
    """What running the cell would do: reuse a finished run, resume an interrupted one, or run anew."""
    if str(cell.params.get("pretrained", "")).startswith("(to pretrain"):
        return "run"
    full = canonical_params(cell.stage, cell.params)
    if find_finished(cell.stage, full):
        return "reuse"
    return "resume" if find_runs(run_key(cell.stage, full), UNFINISHED) else "run"


def run_cells(cells: list[Cell], parent_run_id: str) -> pd.DataFrame:
    """Run every cell as a child of `parent_run_id`; one table row per cell with its run and outcome."""
    rows = []
    for i, cell in enumerate(cells, 1):
        before = status(cell)
        log.info("grid cell %d/%d %s: %s", i, len(cells), cell.label, before)
        try:
            run = ensure_run(cell.stage, cell.params, tags={"mlflow.parentRunId": parent_run_id})
            rows.append({"cell": cell.label, "stage": cell.stage, **cell.params, "run_id": run.info.run_id,
                         "status": "reused" if before == "reuse" else "finished", "error": ""})
        except UserError as error:
            log.error("grid cell %s failed: %s", cell.label, error)
            rows.append({"cell": cell.label, "stage": cell.stage, **cell.params, "run_id": _failed_run(cell),
                         "status": "failed", "error": str(error)})
    return pd.DataFrame(rows)


def _failed_run(cell: Cell) -> str:
    try:
        runs = find_runs(run_key(cell.stage, canonical_params(cell.stage, cell.params)), UNFINISHED)
    except UserError:
        return ""
    return runs[0].info.run_id if runs else ""
