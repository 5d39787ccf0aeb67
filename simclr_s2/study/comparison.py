"""The study's comparison: every condition (an encoder fine-tuned one way, a baseline) across data fractions,
with the uncertainty of each number and paired tests against the baselines on the same test patches.

Input contract: `runs`, one row per registered classifier version, with the columns of REQUIRED:
- version (int), run_id (str): the model version and the run that trained it;
- the CONDITION columns: stage ("finetune" or "baseline"), pretrained (encoder name, or "scratch"),
  encoder_version ("simclr-s2-encoder/3"; FILE_ENCODER + sha256 for an encoder file; "" for none), arch,
  trainable (the trainable-part policy), epochs (int), settings (the training hyperparameters in one
  string, e.g. "lr=5e-05 batch=32 wd=0 dropout=0.5 patience=25"), tuned (bool: the final run of a tuning
  study), split_kind ("random", "tile", "block-<n>km", "official") and pretraining_overlap ("0",
  "unknown" for an encoder whose pretraining data is not known, or "override:<n>" when a run went on
  despite n test patches seen in pretraining);
- fraction (int, %), seed (int), test_digest (sha256 of the test set that scored it);
- the METRICS columns (test_accuracy, test_f1, test_auc; NaN where a run lacks one);
- optionally DIGEST_COLUMNS (train_digest, val_digest, index_digest, encoder_digest), shown by the report,
  the NATURAL_METRICS (the natural-prevalence test set at the threshold chosen on natural validation,
  and the calibration), OVERLAP (the split's share of test patches near train) and CONSTANT (1 for a run
  whose predictions are constant or nearly so): averaged per cell, NaN where absent;
- optionally THRESHOLD_SOURCE (why the run's natural threshold is the default 0.5 rather than chosen on its
  natural validation set, which held no positive; "" where it was chosen): counted per cell;
- optionally the INPUT columns (bands: the input bands in channel order, "B04,B03,..."; scaling: the input
  scaling; "" or absent reads as DEFAULT_INPUT), the LABEL_RULE columns (min_fraction, ambiguous: the rule
  that made the labels; "" or absent reads as DEFAULT_LABEL_RULE, see label_rule) and RECALIBRATED ("true"
  when the encoder's BatchNorm statistics were recomputed on the training patches, "false" when not, "" for a
  run older than the tag), part of the condition; VARIANT columns
  (fold, held_out: a cross-validation run's fold and what it holds out, "" for none; encoder_fold: the
  fold its encoder was pretrained for, "" for a shared one); COUNTRY metrics
  (test_country_<country>_<accuracy|f1|patches>, logged by the classifier run from country_metrics).

A condition is the tuple of CONDITION, INPUT, LABEL_RULE and RECALIBRATED columns: runs that differ in any
are never pooled, and each condition is its own row, bar and line, labelled by what tells it apart from the
other conditions of the same encoder ("ben (head2)", "ben (all)", "scratch resnet18", "ben tuned",
"scratch bands all", "ben min_fraction 0.05", "ssl4eo BN recalibrated").
Runs scored on more than one test set are refused, except that each label rule (which draws its own
split) has its own test set, and each fold its own; paired tests stay within a label rule. A (condition,
fraction, seed) registered more than once counts once, with its newest version (a rerun supersedes), so n
counts seeds; the others are listed in `duplicates`.

Every cell gets n, mean, std and a 95 % interval, by one method for the whole comparison: with per-patch
predictions, the bootstrap over the test set's spatial groups with Student t over the cell's seeds (stats.py;
groups from the predictions' `group` column, their unit from its `unit` column: what the split kept apart,
stats.resampling_unit; a file without `unit` holds stats.LEGACY_UNIT; each patch its own group when the
predictions lack `group`; the method text names the unit, and warns under stats.MIN_GROUPS groups); without,
a t interval across seeds (none for one seed). Paired tests, for each
fraction, each fine-tuned condition against each baseline condition of the same input bands (a difference
against a baseline of other bands would be the bands' too, not pretraining's alone; a condition with
baselines of other bands only gets a row of 0 pairs saying so, as does one at a fraction where no baseline
ran): runs are paired by seed, on the
seeds both have (the others are listed as unpaired and left out); the same method, on the seed pairs'
differences, gives the mean difference's interval and p. Every p of a comparison (all fractions,
conditions, baselines and metrics) is adjusted together by Holm's method (`<metric>_p_holm`, beside the
raw p); a difference counts only when its adjusted p < SIGNIFICANCE. Per seed pair, `pairs` lists the
differences on the whole test set, without a test of its own (one seed pair is not the unit).

Folds: runs that differ only in fold are one condition; so are runs of one encoder recipe pretrained for
each fold (encoder_fold set), named by fold_encoder_alias: the condition names the recipe, and its
encoder_version reads PER_FOLD_ENCODER. Each fold has its own test set (one digest per
fold), so a (condition, fraction, seed) counts when it has every fold of the comparison (the others are
left out, logged) and is scored on its pooled out-of-fold predictions: the folds' test sets
concatenated, every metric, interval and paired test computed on them as on one test set (the spatial
groups of all folds resampled together, the seeds by t). Without predictions, a seed's figure is the mean
over folds of the per-fold metrics. `folds` has the per-fold table (mean per condition, fraction and fold over seeds),
`countries` the per-country one (mean over the runs, seeds and folds, that scored a country).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from simclr_s2.bigearthnet.bands import BANDS, STUDY_BANDS, ZSCORE
from simclr_s2.errors import UserError
from simclr_s2.learning.metrics import THRESHOLD_SOURCE, reliability
from simclr_s2.study import stats

log = logging.getLogger(__name__)

CONDITION = ("stage", "pretrained", "encoder_version", "arch", "trainable", "epochs", "settings", "tuned",
             "split_kind", "pretraining_overlap")
METRICS = {"test_accuracy": "accuracy", "test_f1": "F1", "test_auc": "AUC"}
NATURAL_METRICS = {"test_natural_pr_auc": "PR-AUC", "test_natural_valthr_f1": "F1",
                   "test_natural_valthr_mcc": "MCC",
                   "test_natural_valthr_balanced_accuracy": "balanced accuracy",
                   "test_natural_brier": "Brier", "test_natural_ece": "ECE"}
OVERLAP = "footprint_overlap_test"
CONSTANT = "test_near_constant"
OPTIONAL_METRICS = (*NATURAL_METRICS, OVERLAP, CONSTANT)
STATS_METRIC = {"test_accuracy": "accuracy", "test_f1": "f1", "test_auc": "auc"}  # names in stats.METRICS
PAIRED_METRICS = ("accuracy", "f1")
REQUIRED = ("version", "run_id", *CONDITION, "fraction", "seed", "test_digest", *METRICS)
RECALIBRATED = "bn_recalibrated"  # optional; part of the condition (recomputed statistics change the model)
VARIANT = ("fold", "held_out", "encoder_fold")  # optional; runs that differ only in these are pooled
PER_FOLD_ENCODER = "per fold"  # encoder_version of a run whose encoder was pretrained for its fold
FILE_ENCODER = "sha256:"  # encoder_version of a run whose encoder was a file: this, then the file's sha256
DEFAULT_LABEL_RULE = {"min_fraction": "auto", "ambiguous": "exclude"}
"""create_splits' defaults: the rule of a run without the LABEL_RULE tags (a finetune of the demo splits, or a
main cell made before main tagged every cell it draws), which must pool with one tagged with these values."""
LABEL_RULE = tuple(DEFAULT_LABEL_RULE)  # optional; part of the condition
DEFAULT_INPUT = {"bands": ",".join(STUDY_BANDS), "scaling": ZSCORE}
"""The model input of a version registered before its `bands` and `scaling` (registry.SCALING_TAG) tags: the
study's bands, z-scored (the only input then)."""
INPUT = tuple(DEFAULT_INPUT)  # optional; part of the condition
KEY = (*CONDITION, *INPUT, *LABEL_RULE, RECALIBRATED)  # what tells conditions apart
COUNTRY_PREFIX = "test_country_"
COUNTRY_METRIC = re.compile(rf"{COUNTRY_PREFIX}(?P<country>.+)_(?P<metric>accuracy|f1|patches)")
POOLED = "+"  # joins the run ids of a seed's folds into the id of its pooled unit
DIGEST_COLUMNS = ("train_digest", "val_digest", "index_digest", "encoder_digest")
BASELINE_STAGE = "baseline"
PREDICTION_COLUMNS = ("name", "label", "probability")
ONE_SEED = ("a cell of one seed, or a pairing of one seed pair: its interval is the spread over test patches "
            "alone (no seed-to-seed spread to resample), and a pairing of one seed pair gets no p")
GROUP_COLUMN = stats.GROUP_COLUMN  # optional in predictions: the patch's resampling group (stats.Groups)
UNIT_COLUMN = stats.UNIT_COLUMN  # optional in predictions: the groups' unit; without it, stats.LEGACY_UNIT
SIGNIFICANCE = 0.05
NATURAL_PREVALENCE = "natural_prevalence"
"""A cell's column: the share irrigated of its natural-prevalence test predictions, what a predictor without
skill scores as PR-AUC there."""
_BAND_SETS = {DEFAULT_INPUT["bands"]: "study", ",".join(BANDS): "all"}  # how a band list reads in a label
_OVERLAP = re.compile(r"0|unknown|override:[0-9]+")

Predictions = Callable[[str], pd.DataFrame | None]
"""run_id -> that run's test-set predictions, columns name, label (0/1), probability and optionally group
and unit; None where the run logged none."""
NaturalPredictions = Callable[[str], pd.DataFrame | None]


def fold_encoder_alias(recipe: str, kind: str, fold: int | str) -> str:
    """The registry alias (and the classifier's `pretrained` name) of `recipe` pretrained for one fold of the
    cross-validation kind `kind`; compare reads the recipe back from it."""
    return f"{recipe}-{kind}-f{fold}"


def label_rule(tags: Mapping[str, str]) -> dict[str, str]:
    """The label rule a run's tags (or a runs frame's row) record, DEFAULT_LABEL_RULE where one is absent or
    "": the one place a run without the tags and a run tagged with the default become one condition."""
    return {column: str(tags.get(column) or default) for column, default in DEFAULT_LABEL_RULE.items()}


def country_metrics(index: pd.DataFrame, names: Sequence[str], labels: np.ndarray,
                    probabilities: np.ndarray) -> dict[str, float]:
    """A run's test accuracy, F1 and patch count per country of the index (COUNTRY_METRIC names; a patch
    with no country counts as "unknown"), for compare's per-country table; {} for an index without
    countries. A country's name keeps only letters, digits and '-'."""
    if "country" not in index.columns:
        return {}
    country = index.set_index("name")["country"]
    countries = country.reindex(list(names)).fillna("unknown").astype(str).to_numpy()
    labels, probabilities = np.asarray(labels), np.asarray(probabilities)
    out: dict[str, float] = {}
    for country in sorted(set(countries)):
        at = countries == country
        key = f"{COUNTRY_PREFIX}{re.sub(r'[^A-Za-z0-9-]+', '-', country)}"
        out.update({f"{key}_{m}": stats.metric(m, labels[at], probabilities[at]) for m in PAIRED_METRICS})
        out[f"{key}_patches"] = float(at.sum())
    return out


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
    method: str  # how every interval and p of this comparison was computed, for captions
    reliability: pd.DataFrame  # per condition and fraction, the natural test set's calibration bins
    folds: pd.DataFrame = field(default_factory=pd.DataFrame)  # per condition, fraction and fold, or empty
    countries: pd.DataFrame = field(default_factory=pd.DataFrame)  # per condition, fraction and country
    resolution: str = ""  # where n_boot is too few for Holm to call any difference, a sentence saying so


def compare(runs: pd.DataFrame, fractions: Sequence[int], *, predictions: Predictions | None = None,
            natural: NaturalPredictions | None = None, n_boot: int = stats.N_BOOT,
            seed: int = 0) -> Comparison:
    """The comparison of `runs` (the input contract above) at `fractions`: every condition found gets a row
    at every fraction asked, with n_runs 0 where it has no run. Without `predictions`, intervals are t
    across seeds and there are no paired tests. `natural`: a run's natural-prevalence test predictions
    (None where it has none), for the reliability diagram. Bootstraps use `n_boot` resamples seeded with
    `seed`."""
    runs = _checked(runs)
    digest = _test_sets(runs)
    if outside := sorted(set(runs["fraction"]) - set(fractions)):
        log.info("ignoring fractions %s (not asked for)", outside)
    runs = runs[runs["fraction"].isin(fractions)]
    if runs.empty:
        raise UserError(f"fractions {list(fractions)}: no run at these fractions; found {outside}")
    runs = runs.assign(condition=_labels(runs)).sort_values(["version"], kind="stable")
    newest = runs.duplicated(["condition", "fraction", "seed", "fold"], keep="last")
    runs = runs.assign(used=~newest)
    conditions = _ordered(runs)
    used = runs[runs["used"]]
    predictions = _every_or_none(used, predictions)
    folded = bool((used["fold"] != "").any())
    if folded:
        used = _pooled(used)
        predictions, natural = _concatenated(predictions), _concatenated(natural)
    scores = _scored(used, predictions) if predictions is not None else None
    if folded and scores is not None:
        used = _rescored(used, scores)
    bins = _reliability(used, natural)
    cells = pd.DataFrame([_cell(used, runs, c, f, (scores or {}).get(c), n_boot, seed)
                          for c in conditions for f in fractions])
    cells[NATURAL_PREVALENCE] = _prevalence(cells, bins)
    paired, pairs = _paired(used, conditions, fractions, scores, n_boot, seed)
    if resolution := _resolution(paired, n_boot):
        log.warning(resolution)
    counted = runs[runs["used"]]
    method = (" / ".join(dict.fromkeys(_method(s, folded) for s in scores.values())) if scores
              else _method(None, folded))
    if scores and ((cells["n_runs"] == 1).any() or (not paired.empty and (paired["pairs"] == 1).any())):
        method += f"; {ONE_SEED}"
    return Comparison(runs.reset_index(drop=True), cells, paired, pairs, _duplicates(runs), digest,
                      tuple(conditions), method, bins,
                      _per_fold(counted) if folded else pd.DataFrame(), _per_country(counted), resolution)


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
    for column in (*INPUT, *LABEL_RULE, RECALIBRATED, *VARIANT, THRESHOLD_SOURCE):
        if column not in out.columns:
            out[column] = ""
    # a baseline never recalibrates: one registered before the tag existed pools with the newer ones
    out.loc[(out["stage"] == BASELINE_STAGE) & (out[RECALIBRATED] == ""), RECALIBRATED] = "false"
    text += [*INPUT, *LABEL_RULE, RECALIBRATED, *VARIANT, THRESHOLD_SOURCE]
    for column in OPTIONAL_METRICS:
        if column not in out.columns:
            out[column] = math.nan
    for column, kind in (("version", int), ("fraction", int), ("seed", int), ("epochs", int),
                         *((m, float) for m in (*METRICS, *OPTIONAL_METRICS))):
        try:
            out[column] = out[column].astype(kind)
        except (ValueError, TypeError):
            raise UserError(f"runs: {column}: expected {kind.__name__} values, "
                            f"got {out[column].tolist()[:5]}") from None
    out[text] = out[text].fillna("").astype(str)
    for column, default in DEFAULT_INPUT.items():
        out[column] = out[column].replace("", default)
    out[list(LABEL_RULE)] = pd.DataFrame([label_rule(row) for row in out[list(LABEL_RULE)].to_dict("records")],
                                         index=out.index)
    if bad := sorted(set(out["fold"][~out["fold"].str.fullmatch("[0-9]*")])):
        raise UserError(f"runs: fold {bad}: expected a fold number, or '' for a run without folds")
    # one encoder recipe pretrained once per fold is one condition: its alias and version differ by fold
    per_fold = out["encoder_fold"] != ""
    named = out.loc[per_fold, ["pretrained", "split_kind", "encoder_fold"]].itertuples(index=False)
    out.loc[per_fold, "pretrained"] = [p.removesuffix(fold_encoder_alias("", k, f)) for p, k, f in named]
    out.loc[per_fold, "encoder_version"] = PER_FOLD_ENCODER
    bad = sorted(set(out["pretraining_overlap"][~out["pretraining_overlap"].str.fullmatch(_OVERLAP)]))
    if bad:
        raise UserError(f"runs: pretraining_overlap {bad}: expected '0', 'unknown' or 'override:<n>'")
    return out


def _test_sets(runs: pd.DataFrame) -> str:
    """The comparison's test sets: one per label rule (each rule draws its own split), after its rule
    where there are several. Runs of cross-validation folds never share a comparison with others."""
    if (runs["fold"] != "").any() and (runs["fold"] == "").any():
        raise UserError("compare: runs of cross-validation folds and runs without a fold cannot share one "
                        "comparison; compare one split at a time (test_set=folds, or test_set=<digest>)")
    rules = list(runs.groupby(list(LABEL_RULE), sort=True))
    if len(rules) == 1:
        return _one_test_set(runs)
    return " ".join(f"[{' '.join(_show(c, v) for c, v in zip(LABEL_RULE, rule, strict=True))}] "
                    f"{_one_test_set(part)}" for rule, part in rules)


def _one_test_set(runs: pd.DataFrame) -> str:
    """The comparison's test set: its digest, or with folds, each fold's digest after its fold number."""
    if (runs["fold"] != "").any():
        return " ".join(f"{fold}:{_one_test_set(runs[runs['fold'] == fold].assign(fold=''))[:12]}"
                        for fold in sorted(set(runs["fold"]), key=int))
    counts = runs["test_digest"].value_counts().sort_index()
    if len(counts) > 1:
        found = ", ".join(f"{d[:12] or '(none)'} ({n} runs)" for d, n in counts.items())
        raise UserError(f"compare: runs scored on {len(counts)} test sets cannot share one comparison: "
                        f"{found}; compare one test set at a time (test_set=<digest>)")
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
        shown = value[:len(FILE_ENCODER) + 12] if value.startswith(FILE_ENCODER) else value.rsplit("/", 1)[-1]
        return f"encoder {shown}" if value else "no encoder"
    if column == "split_kind":
        return f"[{value}]"
    if column == "settings":
        return f"{{{value}}}"
    if column == "pretraining_overlap":
        return {"0": "", "unknown": "pretraining unknown"}.get(value, value)
    if column == "min_fraction":
        return f"min_fraction {value}" if value else ""
    if column == "ambiguous":
        return f"ambiguous {value}" if value else ""
    if column == RECALIBRATED:
        return {"true": "BN recalibrated", "": "BN unknown"}.get(str(value), "")
    if column == "bands":
        return f"bands {_BAND_SETS.get(str(value), value)}"
    if column == "scaling":
        return f"scaling {value}"
    return str(value)


def _labels(runs: pd.DataFrame) -> pd.Series:
    """Each run's condition label: its encoder (pretrained) and the condition columns in which the
    conditions of that encoder differ."""
    keys = runs[list(KEY)].drop_duplicates()
    names = {}
    for row in keys.itertuples(index=False):
        peers = keys[keys["pretrained"] == row.pretrained]
        varying = [c for c in KEY if c != "pretrained" and peers[c].nunique() > 1]
        parts = [row.pretrained, *(_show(c, getattr(row, c)) for c in varying)]
        names[tuple(row)] = " ".join(p for p in parts if p)
    return pd.Series([names[tuple(k)] for k in runs[list(KEY)].itertuples(index=False)], index=runs.index)


def _ordered(runs: pd.DataFrame) -> list[str]:
    """Fine-tuned conditions first, then the baselines, each sorted by label."""
    stage = runs.drop_duplicates("condition").set_index("condition")["stage"]
    return sorted(stage.index, key=lambda c: (stage[c] == BASELINE_STAGE, c))


@dataclass(frozen=True)
class Scores:
    """Every used run's test predictions on one patch order: labels (n,), probabilities by run id, each
    patch's spatial group (None: every patch its own) and the groups' unit in words, plural ("tiles")."""

    labels: np.ndarray
    probabilities: dict[str, np.ndarray]
    groups: np.ndarray | None
    unit: str  # "" without groups

    def of(self, run_ids: Sequence[str]) -> np.ndarray:
        return np.stack([self.probabilities[r] for r in run_ids])

    @property
    def n_groups(self) -> int:
        return len(self.labels) if self.groups is None else len(np.unique(self.groups))


def _scores(used: pd.DataFrame, predictions: Predictions) -> Scores:
    """Each used run's predictions, read once, in name order; every run must hold the same patches with
    the same labels (and groups)."""
    frames = {}
    for run_id in used["run_id"]:
        frame = predictions(run_id)
        if missing := [c for c in PREDICTION_COLUMNS if c not in frame.columns]:
            raise UserError(f"predictions of run {run_id}: missing columns {missing}")
        frames[run_id] = frame.sort_values("name", kind="stable").reset_index(drop=True)
    first = next(iter(frames.values()))
    for frame in frames.values():
        if len(frame) != len(first) or not (frame["name"].to_numpy() == first["name"].to_numpy()).all():
            raise UserError(f"predictions: runs of one comparison cover different test patches "
                            f"({len(first)} and {len(frame)} patches, or other names); were they scored on "
                            "the same test set?")
        if not (frame["label"].to_numpy() == first["label"].to_numpy()).all():
            raise UserError("predictions: runs of one comparison disagree on the labels of the same test "
                            "patches")
    return Scores(first["label"].to_numpy().astype(bool),
                  {r: f["probability"].to_numpy(dtype=np.float64) for r, f in frames.items()},
                  *_groups(list(frames.values()), set(used["split_kind"])))


def _groups(frames: Sequence[pd.DataFrame], kinds: set[str]) -> tuple[np.ndarray | None, str]:
    """The test patches' groups (`frames` in one patch order) and their unit in words: those of the first run
    that records the unit (groups belong to the patches, so one run's serve every run); else, where every run
    has groups, stats.LEGACY_UNIT's, said not to be the split's own where its kind keeps others apart; else
    none."""
    if recorded := [f for f in frames if UNIT_COLUMN in f.columns]:
        return recorded[0][GROUP_COLUMN].astype(str).to_numpy(), f"{recorded[0][UNIT_COLUMN].iloc[0]}s"
    if not all(GROUP_COLUMN in f.columns for f in frames):
        return None, ""
    unit = f"{stats.LEGACY_UNIT}s"
    if own := sorted({stats.resampling_unit(kind)[1] for kind in kinds} - {stats.LEGACY_UNIT}):
        unit += f", not the split's own {'/'.join(own)}s: predictions logged before those were recorded"
    return frames[0][GROUP_COLUMN].astype(str).to_numpy(), unit


def _scored(used: pd.DataFrame, predictions: Predictions) -> dict[str, Scores]:
    """Each condition's Scores, one per label rule (a rule draws its own split: its own test patches)."""
    out: dict[str, Scores] = {}
    for _, rule in used.groupby(list(LABEL_RULE), sort=False):
        out.update(dict.fromkeys(rule["condition"], _scores(rule, predictions)))
    return out


def _method(scores: Scores | None, folded: bool = False) -> str:
    """The comparison's one interval method, in words, for captions and the report."""
    if scores is None:
        folds = "; each seed the mean over its folds" if folded else ""
        return f"Student t across seeds (no per-patch predictions; none for one seed){folds}"
    patches = f"{len(scores.labels)} test patches"
    unit = (f"{scores.n_groups} spatial groups ({scores.unit}) of {patches}" if scores.groups is not None
            else f"{patches} (the predictions name no spatial group: each patch its own)")
    folds = ("; folds pooled: each seed scored on its folds' out-of-fold test predictions together" if folded
             else "")
    few = (f"; only {scores.n_groups} groups: a bootstrap over fewer than {stats.MIN_GROUPS} understates the "
           "spread, so its intervals are too narrow and its p too small" if scores.n_groups < stats.MIN_GROUPS
           else "") + ("; one group holds every test patch: a cell or pairing of one seed gets no interval, and the "
                       "others hold the seeds' spread alone" if scores.n_groups < 2 else "")
    return f"{stats.METHOD}: {unit} resampled, seeds by t with k - 1 df{folds}{few}"


def _pooled(used: pd.DataFrame) -> pd.DataFrame:
    """One row per (condition, fraction, seed) holding every fold of the comparison: its runs' ids joined
    by POOLED, its newest version, the mean over folds of each metric (near-constant if any fold is, at the
    default threshold if any fold's was).
    Seeds that miss a fold are left out, logged."""
    folds = sorted(set(used["fold"]), key=int)
    rows = []
    for (condition, fraction, seed), runs in used.groupby(["condition", "fraction", "seed"], sort=False):
        runs = runs.sort_values("fold", key=lambda f: f.astype(int))
        if runs["fold"].tolist() != folds:
            log.warning("%s at %s %% seed %s has folds %s of %s: left out", condition, fraction, seed,
                        _joined(runs["fold"]), ",".join(folds))
            continue
        row = runs.iloc[0].copy()
        pooled = {"run_id": POOLED.join(runs["run_id"]), "version": runs["version"].max(), "fold": "all",
                  "held_out": "", **runs[[*METRICS, *OPTIONAL_METRICS]].mean(),
                  CONSTANT: runs[CONSTANT].max(), THRESHOLD_SOURCE: max(runs[THRESHOLD_SOURCE])}
        for column, value in pooled.items():
            row[column] = value
        rows.append(row)
    if not rows:
        raise UserError(f"compare: no (condition, fraction, seed) has every fold {','.join(folds)}; run the "
                        "missing folds (main) or compare the folds one at a time (test_set=<digest>)")
    return pd.DataFrame(rows, columns=used.columns)


def _every_or_none(used: pd.DataFrame, fetch: Predictions | None) -> Predictions | None:
    """The predictions of the runs the comparison counts (`used`), each read once: None where none has any
    (intervals then t across seeds); a used run without them beside runs with them is one line naming its
    version, as its cell's intervals and tests would mix two methods. Duplicates not counted do not matter."""
    if fetch is None:
        return None
    read = {run_id: fetch(run_id) for run_id in used["run_id"]}
    missing = used[[read[r] is None for r in used["run_id"]]]
    if len(missing) == len(used):
        return None
    if not missing.empty:
        row = missing.iloc[0]
        raise UserError(f"version {row['version']} (run {row['run_id']}) has no test predictions, which other "
                        "versions of this comparison have; compare resamples every run's predictions or none "
                        "(fractions and test_set leave versions out)")
    return read.__getitem__


def _concatenated(fetch: NaturalPredictions | None) -> NaturalPredictions | None:
    """`fetch` for pooled ids: the predictions of the pooled runs, concatenated (groups, and their unit, kept
    when every run has them); None where no run has any."""
    if fetch is None:
        return None

    def pooled(run_id: str) -> pd.DataFrame | None:
        frames = [f for f in map(fetch, run_id.split(POOLED)) if f is not None]
        for column in (GROUP_COLUMN, UNIT_COLUMN):
            if not all(column in f.columns for f in frames):
                frames = [f.drop(columns=column, errors="ignore") for f in frames]
        return pd.concat(frames, ignore_index=True) if frames else None

    return pooled


def _rescored(used: pd.DataFrame, scores: dict[str, Scores]) -> pd.DataFrame:
    """Each pooled unit's METRICS on its pooled out-of-fold predictions (what its intervals resample)."""
    units = list(zip(used["condition"], used["run_id"], strict=True))
    return used.assign(**{m: [stats.metric(STATS_METRIC[m], scores[c].labels, scores[c].probabilities[r])
                              for c, r in units] for m in METRICS})


def _per_fold(runs: pd.DataFrame) -> pd.DataFrame:
    """Per condition, fraction and fold: the runs (seeds) and the mean of each metric over them."""
    ordered = runs.assign(order=runs["fold"].astype(int))
    rows = [{"condition": condition, "fraction": fraction, "fold": fold, "held_out": held_out,
             "n_runs": len(at), "seeds": _joined(at["seed"].sort_values()),
             **{f"{m}_mean": at[m].mean() for m in METRICS}}
            for (condition, fraction, _, fold, held_out), at in
            ordered.groupby(["condition", "fraction", "order", "fold", "held_out"])]
    return pd.DataFrame(rows)


def _per_country(runs: pd.DataFrame) -> pd.DataFrame:
    """Per condition, fraction and country (from the COUNTRY metrics): the runs (seeds and folds) that
    scored it, its test patches per run and the mean accuracy and F1 over those runs; empty without any."""
    found: dict[str, dict[str, str]] = {}
    for column in runs.columns:
        if match := COUNTRY_METRIC.fullmatch(column):
            found.setdefault(match["country"], {})[match["metric"]] = column
    rows = []
    for (condition, fraction), at in runs.groupby(["condition", "fraction"]):
        for country, columns in sorted(found.items()):
            scored = at[at[columns["patches"]] > 0] if len(columns) == 3 else at.iloc[:0]
            if len(scored):
                rows.append({"condition": condition, "fraction": fraction, "country": country,
                             "n_runs": len(scored), "patches": scored[columns["patches"]].mean(),
                             **{f"{m}_mean": scored[columns[m]].mean() for m in PAIRED_METRICS}})
    return pd.DataFrame(rows)


def _cell(used: pd.DataFrame, runs: pd.DataFrame, condition: str, fraction: int, scores: Scores | None,
          n_boot: int, seed: int) -> dict[str, object]:
    """One row of the table: the condition's columns, who is in the cell, per metric n, mean, std and the
    95 % interval (the comparison's method), and the means of the optional metrics."""
    rows = used[(used["condition"] == condition) & (used["fraction"] == fraction)].sort_values("seed")
    first = runs[runs["condition"] == condition].iloc[0]
    cell: dict[str, object] = {"condition": condition, **{c: first[c] for c in KEY}, "fraction": fraction,
                               "n_runs": len(rows), "seeds": _joined(rows["seed"]),
                               "versions": _joined(rows["version"]), "run_ids": _joined(rows["run_id"]),
                               "duplicates": int(((runs["condition"] == condition)
                                                  & (runs["fraction"] == fraction) & ~runs["used"]).sum())}
    cell["interval"] = (f"{len(rows)} seeds x {scores.n_groups} groups" if scores is not None and len(rows)
                        else f"t, {len(rows)} seeds" if len(rows) > 1 else "")
    for metric in METRICS:
        values = rows[metric].dropna().to_numpy()
        low, high = stats.t_interval(values)
        if scores is not None and len(rows):
            estimate = stats.interval(scores.labels, scores.of(rows["run_id"]), STATS_METRIC[metric],
                                      scores.groups, n_boot=n_boot, seed=seed)
            low, high = estimate.low, estimate.high
        cell.update({f"{metric}_mean": values.mean() if len(values) else math.nan,
                     f"{metric}_std": values.std(ddof=1) if len(values) > 1 else math.nan,
                     f"{metric}_low": low, f"{metric}_high": high})
    for metric in OPTIONAL_METRICS:
        values = rows[metric].dropna().to_numpy()
        cell[f"{metric}_mean"] = values.mean() if len(values) else math.nan
    cell["near_constant_runs"] = int((rows[CONSTANT] > 0).sum())
    cell["default_threshold_runs"] = int((rows[THRESHOLD_SOURCE] != "").sum())
    return cell


def _joined(values: pd.Series) -> str:
    return ",".join(map(str, values))


def _paired(used: pd.DataFrame, conditions: Sequence[str], fractions: Sequence[int],
            scores: dict[str, Scores] | None, n_boot: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per fraction, every fine-tuned condition against every baseline condition of its label rule (the
    same test patches) and its input bands, paired by seed; a condition with baselines in the comparison
    but none of its bands at a fraction gets a row of 0 pairs saying why (_not_paired). Then Holm's
    adjustment over every p of the comparison."""
    if scores is None:
        return pd.DataFrame(), pd.DataFrame()
    baselines = set(used["condition"][used["stage"] == BASELINE_STAGE])
    bands = used.drop_duplicates("condition").set_index("condition")["bands"]
    summaries, pairs = [], []
    for fraction in fractions:
        at = used[used["fraction"] == fraction].set_index("seed")
        present = set(at["condition"])
        for a in (c for c in conditions if c in present and c not in baselines):
            ours = [b for b in conditions if b in present and b in baselines and scores[a] is scores[b]]
            if not any(bands[b] == bands[a] for b in ours) and (
                    why := _not_paired(used, a, ours, [b for b in baselines if scores[a] is scores[b]], bands)):
                summaries.append({"fraction": fraction, "condition": a, "baseline": "", "pairs": 0, "seeds": "",
                                  "unpaired": why})
            for b in (b for b in ours if bands[b] == bands[a]):
                summary, rows = _pair(at[at["condition"] == a], at[at["condition"] == b], scores[a], n_boot,
                                      seed)
                summaries.append({"fraction": fraction, "condition": a, "baseline": b, **summary})
                pairs += [{"fraction": fraction, "condition": a, "baseline": b, **r} for r in rows]
    paired = pd.DataFrame(summaries)
    if not paired.empty:
        p_columns = [f"{m}_p" for m in PAIRED_METRICS if f"{m}_p" in paired.columns]
        adjusted = stats.holm(paired[p_columns].to_numpy().ravel()).reshape(len(paired), len(p_columns))
        for i, column in enumerate(p_columns):
            paired.insert(paired.columns.get_loc(column) + 1, f"{column}_holm", adjusted[:, i])
    return paired, pd.DataFrame(pairs)


def _not_paired(used: pd.DataFrame, condition: str, here: Sequence[str], rule: Sequence[str],
                bands: pd.Series) -> str:
    """Why `condition` has no baseline to pair with at a fraction whose baselines of its label rule are
    `here` (`rule`: those at any fraction): they read other bands, or there is none at this fraction, which
    the paired table says rather than leave the fraction out unseen; "" where its label rule has no baseline
    at all (the report then says there are no paired tests)."""
    if here:
        others = ", ".join(dict.fromkeys(_show("bands", bands[b]) for b in here))
        return f"not paired: no baseline of its {_show('bands', bands[condition])} (the baselines: {others})"
    if not rule:
        return ""
    ran = sorted(set(used["fraction"][used["condition"].isin(rule)]))
    return f"not paired: no baseline at this fraction (baselines at {_joined(pd.Series(ran))} %)"


def holm_tests(paired: pd.DataFrame) -> int:
    """How many tests Holm adjusts together: every p of the paired table (a pairing of one seed pair has none)."""
    columns = [f"{m}_p" for m in PAIRED_METRICS if f"{m}_p" in paired.columns]
    return int(paired[columns].notna().to_numpy().sum())


def _resolution(paired: pd.DataFrame, n_boot: int) -> str:
    """One sentence where n_boot resamples are too few for any test to reach SIGNIFICANCE after Holm's
    adjustment (stats.smallest_p times the number of tests), naming the n_boot that would; else "". A large,
    consistent difference otherwise reads as no difference, and nothing says why."""
    m = holm_tests(paired)
    floor = m * stats.smallest_p(n_boot)
    if not m or floor < SIGNIFICANCE:
        return ""
    return (f"No difference can be called with n_boot={n_boot}: the smallest p it gives, "
            f"{stats.smallest_p(n_boot):.3g}, times the {m} tests Holm adjusts is {floor:.3g}, not below "
            f"{SIGNIFICANCE:g}; rerun with n_boot={math.ceil(2 * m / SIGNIFICANCE)} or more")


def _pair(runs_a: pd.DataFrame, runs_b: pd.DataFrame, scores: Scores, n_boot: int,
          seed: int) -> tuple[dict[str, object], list[dict[str, object]]]:
    """One fine-tuned condition against one baseline condition at one fraction (indexed by seed)."""
    seeds = sorted(set(runs_a.index) & set(runs_b.index))
    unpaired = "; ".join(f"{who}: {_joined(pd.Series(sorted(set(r.index) - set(seeds))))}"
                         for who, r in (("condition", runs_a), ("baseline", runs_b))
                         if set(r.index) - set(seeds))
    summary: dict[str, object] = {"pairs": len(seeds), "seeds": _joined(pd.Series(seeds)),
                                  "unpaired": unpaired}
    if not seeds:
        return summary, []
    labels = scores.labels
    prob_a, prob_b = scores.of(runs_a.loc[seeds, "run_id"]), scores.of(runs_b.loc[seeds, "run_id"])
    rows = []
    for i, s in enumerate(seeds):
        row: dict[str, object] = {"seed": s, "version": runs_a.loc[s, "version"],
                                  "run_id": runs_a.loc[s, "run_id"],
                                  "baseline_version": runs_b.loc[s, "version"],
                                  "baseline_run_id": runs_b.loc[s, "run_id"], "patches": len(labels)}
        for m in PAIRED_METRICS:
            mine, theirs = stats.metric(m, labels, prob_a[i]), stats.metric(m, labels, prob_b[i])
            row.update({m: mine, f"baseline_{m}": theirs, f"{m}_diff": mine - theirs})
        rows.append(row)
    summary.update(patches=len(labels), groups=scores.n_groups)
    for m in PAIRED_METRICS:
        test = stats.paired(labels, prob_a, prob_b, m, scores.groups, n_boot=n_boot, seed=seed)
        summary.update({f"{m}_diff": test.value, f"{m}_low": test.low, f"{m}_high": test.high,
                        f"{m}_p": test.p})
    return summary, rows


def _reliability(used: pd.DataFrame, natural: NaturalPredictions | None) -> pd.DataFrame:
    """Calibration bins (metrics.reliability) of each cell's natural-prevalence predictions, its seeds
    pooled; cells whose runs have none are left out."""
    rows = []
    for (condition, fraction), cell in used.groupby(["condition", "fraction"], sort=True):
        frames = [f for f in map(natural, cell["run_id"]) if f is not None] if natural is not None else []
        if not frames:
            continue
        pooled = pd.concat(frames)
        mean, observed, counts = reliability(pooled["label"].to_numpy(), pooled["probability"].to_numpy())
        rows += [{"condition": condition, "fraction": fraction, "bin": i, "mean_probability": m,
                  "observed": o, "patches": int(c)}
                 for i, (m, o, c) in enumerate(zip(mean, observed, counts, strict=True))]
    return pd.DataFrame(rows, columns=["condition", "fraction", "bin", "mean_probability", "observed",
                                       "patches"])


def _prevalence(cells: pd.DataFrame, bins: pd.DataFrame) -> np.ndarray:
    """Each cell's share of irrigated patches in its natural-prevalence test predictions (seeds pooled), from
    its calibration bins; NaN where it has none."""
    by_cell = bins.assign(positives=bins["observed"].fillna(0) * bins["patches"]).groupby(
        ["condition", "fraction"])[["positives", "patches"]].sum()
    share = by_cell["positives"] / by_cell["patches"].where(by_cell["patches"] > 0)
    return share.reindex(pd.MultiIndex.from_frame(cells[["condition", "fraction"]])).to_numpy(float)


def _duplicates(runs: pd.DataFrame) -> pd.DataFrame:
    """Every run of a (condition, fraction, seed) registered more than once, with the version that counts."""
    key = ["condition", "fraction", "seed", "fold"]
    dup = runs[runs.duplicated(key, keep=False)]
    counted = dup[dup["used"]].set_index(key)["version"].rename("counted_version")
    columns = [*key, "version", "run_id", "used", *METRICS]
    return dup[columns].join(counted, on=key).sort_values([*key, "version"]).reset_index(drop=True)
