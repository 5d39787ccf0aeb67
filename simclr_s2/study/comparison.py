"""The study's comparison: every condition (an encoder fine-tuned one way, a baseline) across data fractions,
with the uncertainty of each number and paired tests against the baselines on the same test patches.

Input contract: `runs`, one row per registered classifier version, with the columns of REQUIRED:
- version (int), run_id (str): the model version and the run that trained it;
- the CONDITION columns: stage ("finetune" or "baseline"), pretrained (encoder name, or "scratch"),
  encoder_version ("simclr-s2-encoder/3", "" for none), arch, trainable (the trainable-part policy),
  epochs (int), settings (the training hyperparameters in one string, e.g. "lr=5e-05 batch=32 wd=0
  dropout=0.5 patience=25"), tuned (bool: the final run of a tuning study), split_kind ("random", "tile",
  "block-<n>km", "official") and pretraining_overlap ("0", "unknown" for an encoder whose pretraining
  data is not known, or "override:<n>" when a run went on despite n test patches seen in pretraining);
- fraction (int, %), seed (int), test_digest (sha256 of the test set that scored it);
- the METRICS columns (test_accuracy, test_f1, test_auc; NaN where a run lacks one);
- optionally DIGEST_COLUMNS (train_digest, val_digest, index_digest, encoder_digest), shown by the report.

A condition is the tuple of CONDITION columns: runs that differ in any of them are never pooled, and
each condition is its own row, bar and line, labelled by what tells it apart from the other conditions
of the same encoder ("ben (head2)", "ben (all)", "scratch resnet18", "ben tuned"). Runs scored on more
than one test set are refused. A (condition, fraction, seed) registered more than once counts once, with
its newest version (a rerun supersedes), so n counts seeds; the others are listed in `duplicates`.

Every cell gets n, mean, std and a 95 % interval: a t interval across seeds for n >= 2, a percentile
bootstrap over its test patches for n = 1 (stats.py). Paired tests, for each fraction, each fine-tuned
condition against each baseline condition: runs are paired by seed, on the seeds both have (the others
are listed as unpaired and left out); a paired bootstrap over the shared test patches of the mean
difference over seed pairs gives the interval and p, a t interval across seed-pair differences the
training-seed spread (2 pairs or more), and McNemar's exact test is run on every seed pair.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import pandas as pd

from simclr_s2.errors import UserError
from simclr_s2.study import stats

log = logging.getLogger(__name__)

CONDITION = ("stage", "pretrained", "encoder_version", "arch", "trainable", "epochs", "settings", "tuned",
             "split_kind", "pretraining_overlap")
METRICS = {"test_accuracy": "accuracy", "test_f1": "F1", "test_auc": "AUC"}
STATS_METRIC = {"test_accuracy": "accuracy", "test_f1": "f1", "test_auc": "auc"}  # names in stats.METRICS
PAIRED_METRICS = ("accuracy", "f1")
REQUIRED = ("version", "run_id", *CONDITION, "fraction", "seed", "test_digest", *METRICS)
DIGEST_COLUMNS = ("train_digest", "val_digest", "index_digest", "encoder_digest")
BASELINE_STAGE = "baseline"
PREDICTION_COLUMNS = ("name", "label", "probability")
SIGNIFICANCE = 0.05
_OVERLAP = re.compile(r"0|unknown|override:[0-9]+")

Predictions = Callable[[str], pd.DataFrame]
"""run_id -> that run's test-set predictions, columns name, label (0/1) and probability."""


@dataclass(frozen=True)
class Comparison:
    """What `compare` found: the runs used (with their condition label), one row per cell, the paired
    tests per fraction and per seed pair, and the duplicates left out."""

    runs: pd.DataFrame
    cells: pd.DataFrame
    paired: pd.DataFrame
    pairs: pd.DataFrame
    duplicates: pd.DataFrame
    test_digest: str
    conditions: tuple[str, ...]  # condition labels, fine-tuned ones first, in display order


def compare(runs: pd.DataFrame, fractions: Sequence[int], *, predictions: Predictions | None = None,
            n_boot: int = stats.N_BOOT, seed: int = 0) -> Comparison:
    """The comparison of `runs` (the input contract above) at `fractions`: every condition found gets a row
    at every fraction asked, with n_runs 0 where it has no run. Without `predictions`, one-run cells get
    no interval and there are no paired tests. Bootstraps use `n_boot` resamples seeded with `seed`."""
    runs = _checked(runs)
    digest = _one_test_set(runs)
    if outside := sorted(set(runs["fraction"]) - set(fractions)):
        log.info("ignoring fractions %s (not asked for)", outside)
    runs = runs[runs["fraction"].isin(fractions)]
    if runs.empty:
        raise UserError(f"fractions {list(fractions)}: no run at these fractions; found {outside}")
    runs = runs.assign(condition=_labels(runs)).sort_values(["version"], kind="stable")
    newest = runs.duplicated(["condition", "fraction", "seed"], keep="last")
    runs = runs.assign(used=~newest)
    conditions = _ordered(runs)
    load = cache(_loader(predictions)) if predictions is not None else None
    used = runs[runs["used"]]
    cells = pd.DataFrame([_cell(used, runs, c, f, load, n_boot, seed) for c in conditions for f in fractions])
    paired, pairs = _paired(used, conditions, fractions, load, n_boot, seed)
    return Comparison(runs.reset_index(drop=True), cells, paired, pairs, _duplicates(runs), digest,
                      tuple(conditions))


def _checked(runs: pd.DataFrame) -> pd.DataFrame:
    """The input contract enforced: every column present, types normalised, overlap statuses known."""
    if missing := [c for c in REQUIRED if c not in runs.columns]:
        raise UserError(f"runs: missing columns {missing}; compare needs {list(REQUIRED)}")
    if runs.empty:
        raise UserError("runs: no registered classifier versions to compare")
    if not pd.api.types.is_bool_dtype(runs["tuned"]):
        raise UserError(f"runs: tuned: expected booleans, got dtype {runs['tuned'].dtype}")
    text = [c for c in (*CONDITION, "run_id", "test_digest", *DIGEST_COLUMNS)
            if c in runs.columns and c not in ("epochs", "tuned")]
    out = runs.copy()
    for column, kind in (("version", int), ("fraction", int), ("seed", int), ("epochs", int),
                         *((m, float) for m in METRICS)):
        try:
            out[column] = out[column].astype(kind)
        except (ValueError, TypeError):
            raise UserError(f"runs: {column}: expected {kind.__name__} values, got {out[column].tolist()[:5]}") from None
    out[text] = out[text].fillna("").astype(str)
    bad = sorted(set(out["pretraining_overlap"][~out["pretraining_overlap"].str.fullmatch(_OVERLAP)]))
    if bad:
        raise UserError(f"runs: pretraining_overlap {bad}: expected '0', 'unknown' or 'override:<n>'")
    return out


def _one_test_set(runs: pd.DataFrame) -> str:
    counts = runs["test_digest"].value_counts().sort_index()
    if len(counts) > 1:
        found = ", ".join(f"{d[:12] or '(none)'} ({n} runs)" for d, n in counts.items())
        raise UserError(f"compare: runs scored on {len(counts)} test sets cannot share one comparison: {found}; "
                        f"compare one test set at a time (test_set=<digest>)")
    return str(counts.index[0])


def _show(column: str, value: str | int | bool) -> str:
    """How a condition column reads in a label."""
    if column == "tuned":
        return "tuned" if value else ""
    if column == "trainable":
        return f"({value})"
    if column == "epochs":
        return f"{value} epochs"
    if column == "encoder_version":
        return f"encoder {value.rsplit('/', 1)[-1]}" if value else "no encoder"
    if column == "split_kind":
        return f"[{value}]"
    if column == "settings":
        return f"{{{value}}}"
    if column == "pretraining_overlap":
        return {"0": "", "unknown": "pretraining unknown"}.get(value, value)
    return str(value)


def _labels(runs: pd.DataFrame) -> pd.Series:
    """Each run's condition label: its encoder (pretrained) and the condition columns in which the
    conditions of that encoder differ."""
    keys = runs[list(CONDITION)].drop_duplicates()
    names = {}
    for row in keys.itertuples(index=False):
        peers = keys[keys["pretrained"] == row.pretrained]
        varying = [c for c in CONDITION if c != "pretrained" and peers[c].nunique() > 1]
        parts = [row.pretrained, *(_show(c, getattr(row, c)) for c in varying)]
        names[tuple(row)] = " ".join(p for p in parts if p)
    return pd.Series([names[tuple(k)] for k in runs[list(CONDITION)].itertuples(index=False)], index=runs.index)


def _ordered(runs: pd.DataFrame) -> list[str]:
    """Fine-tuned conditions first, then the baselines, each sorted by label."""
    stage = runs.drop_duplicates("condition").set_index("condition")["stage"]
    return sorted(stage.index, key=lambda c: (stage[c] == BASELINE_STAGE, c))


def _loader(predictions: Predictions) -> Callable[[str], pd.DataFrame]:
    def load(run_id: str) -> pd.DataFrame:
        frame = predictions(run_id)
        if missing := [c for c in PREDICTION_COLUMNS if c not in frame.columns]:
            raise UserError(f"predictions of run {run_id}: missing columns {missing}")
        return frame.sort_values("name", kind="stable").reset_index(drop=True)
    return load


def _cell(used: pd.DataFrame, runs: pd.DataFrame, condition: str, fraction: int,
          load: Callable[[str], pd.DataFrame] | None, n_boot: int, seed: int) -> dict[str, object]:
    """One row of the table: the condition's columns, who is in the cell, and per metric n, mean, std
    and the 95 % interval (t across seeds, or the bootstrap over test patches for one run)."""
    rows = used[(used["condition"] == condition) & (used["fraction"] == fraction)].sort_values("seed")
    first = runs[runs["condition"] == condition].iloc[0]
    cell: dict[str, object] = {"condition": condition, **{c: first[c] for c in CONDITION}, "fraction": fraction,
                               "n_runs": len(rows), "seeds": _joined(rows["seed"]),
                               "versions": _joined(rows["version"]), "run_ids": _joined(rows["run_id"]),
                               "duplicates": int(((runs["condition"] == condition) & (runs["fraction"] == fraction)
                                                  & ~runs["used"]).sum())}
    one = len(rows) == 1 and load is not None
    cell["interval"] = (f"t, {len(rows)} seeds" if len(rows) > 1 else
                        f"bootstrap, {len(load(rows['run_id'].iloc[0]))} patches" if one else "")
    for metric in METRICS:
        values = rows[metric].dropna().to_numpy()
        low, high = stats.t_interval(values)
        if one and len(values):
            frame = load(rows["run_id"].iloc[0])
            low, high = stats.bootstrap_interval(frame["label"].to_numpy(), frame["probability"].to_numpy(),
                                                 STATS_METRIC[metric], n_boot=n_boot, seed=seed)
        cell.update({f"{metric}_mean": values.mean() if len(values) else math.nan,
                     f"{metric}_std": values.std(ddof=1) if len(values) > 1 else math.nan,
                     f"{metric}_low": low, f"{metric}_high": high})
    return cell


def _joined(values: pd.Series) -> str:
    return ",".join(map(str, values))


def _paired(used: pd.DataFrame, conditions: Sequence[str], fractions: Sequence[int],
            load: Callable[[str], pd.DataFrame] | None, n_boot: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per fraction, every fine-tuned condition against every baseline condition, paired by seed."""
    if load is None:
        return pd.DataFrame(), pd.DataFrame()
    baselines = set(used["condition"][used["stage"] == BASELINE_STAGE])
    summaries, pairs = [], []
    for fraction in fractions:
        at = used[used["fraction"] == fraction].set_index("seed")
        for a in (c for c in conditions if c not in baselines):
            for b in (c for c in conditions if c in baselines):
                runs_a, runs_b = at[at["condition"] == a], at[at["condition"] == b]
                if runs_a.empty or runs_b.empty:
                    continue
                summary, rows = _pair(runs_a, runs_b, load, n_boot, seed)
                summaries.append({"fraction": fraction, "condition": a, "baseline": b, **summary})
                pairs += [{"fraction": fraction, "condition": a, "baseline": b, **r} for r in rows]
    return pd.DataFrame(summaries), pd.DataFrame(pairs)


def _pair(runs_a: pd.DataFrame, runs_b: pd.DataFrame, load: Callable[[str], pd.DataFrame], n_boot: int,
          seed: int) -> tuple[dict[str, object], list[dict[str, object]]]:
    """One fine-tuned condition against one baseline condition at one fraction (indexed by seed)."""
    seeds = sorted(set(runs_a.index) & set(runs_b.index))
    unpaired = "; ".join(f"{who}: {_joined(pd.Series(sorted(set(r.index) - set(seeds))))}"
                         for who, r in (("condition", runs_a), ("baseline", runs_b)) if set(r.index) - set(seeds))
    summary: dict[str, object] = {"pairs": len(seeds), "seeds": _joined(pd.Series(seeds)), "unpaired": unpaired}
    if not seeds:
        return summary, []
    labels, prob_a, prob_b = _aligned([load(runs_a.loc[s, "run_id"]) for s in seeds] +
                                      [load(runs_b.loc[s, "run_id"]) for s in seeds], len(seeds))
    rows = []
    for i, s in enumerate(seeds):
        row: dict[str, object] = {"seed": s, "version": runs_a.loc[s, "version"], "run_id": runs_a.loc[s, "run_id"],
                                  "baseline_version": runs_b.loc[s, "version"],
                                  "baseline_run_id": runs_b.loc[s, "run_id"], "patches": len(labels)}
        for m in PAIRED_METRICS:
            test = stats.paired_bootstrap(labels, prob_a[i], prob_b[i], m, n_boot=n_boot, seed=seed)
            row.update({m: stats.metric(m, labels, prob_a[i]), f"baseline_{m}": stats.metric(m, labels, prob_b[i]),
                        f"{m}_diff": test.diff, f"{m}_low": test.low, f"{m}_high": test.high, f"{m}_p": test.p})
        mcnemar = stats.mcnemar(labels, prob_a[i], prob_b[i])
        row.update(mcnemar_b=mcnemar.b, mcnemar_c=mcnemar.c, mcnemar_p=mcnemar.p)
        rows.append(row)
    summary["patches"] = len(labels)
    for m in PAIRED_METRICS:
        test = stats.paired_bootstrap(labels, prob_a, prob_b, m, n_boot=n_boot, seed=seed)
        seed_low, seed_high = stats.t_interval([r[f"{m}_diff"] for r in rows])
        summary.update({f"{m}_diff": test.diff, f"{m}_low": test.low, f"{m}_high": test.high, f"{m}_p": test.p,
                        f"{m}_seed_low": seed_low, f"{m}_seed_high": seed_high})
    p_values = [r["mcnemar_p"] for r in rows]
    summary.update(mcnemar_p_max=max(p_values), mcnemar_significant=sum(p < SIGNIFICANCE for p in p_values))
    return summary, rows


def _aligned(frames: list[pd.DataFrame], k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and the (k, n) probabilities of the first k frames (A) and the next k (B), on one patch order;
    every frame must hold the same patches with the same labels."""
    first = frames[0]
    for frame in frames[1:]:
        if len(frame) != len(first) or not (frame["name"].to_numpy() == first["name"].to_numpy()).all():
            raise UserError(f"predictions: runs of one comparison cover different test patches ({len(first)} and "
                            f"{len(frame)} patches, or other names); were they scored on the same test set?")
        if not (frame["label"].to_numpy() == first["label"].to_numpy()).all():
            raise UserError("predictions: runs of one comparison disagree on the labels of the same test patches")
    probabilities = np.stack([f["probability"].to_numpy(dtype=np.float64) for f in frames])
    return first["label"].to_numpy().astype(bool), probabilities[:k], probabilities[k:]


def _duplicates(runs: pd.DataFrame) -> pd.DataFrame:
    """Every run of a (condition, fraction, seed) registered more than once, with the version that counts."""
    key = ["condition", "fraction", "seed"]
    dup = runs[runs.duplicated(key, keep=False)]
    counted = dup[dup["used"]].set_index(key)["version"].rename("counted_version")
    columns = [*key, "version", "run_id", "used", *METRICS]
    return dup[columns].join(counted, on=key).sort_values([*key, "version"]).reset_index(drop=True)
