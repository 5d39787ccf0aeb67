"""The study's comparison: each pretrained encoder and the from-scratch baseline across data fractions.

A table of test accuracy, F1 and AUC (mean and spread across seeds, with the number of runs) and the
write-up's figures: grouped bars per fraction, one bar per encoder plus the baseline, for accuracy and
for F1; and metric-against-fraction lines. Every (model, fraction) asked for keeps its row and its place
in the figures even without runs, marked missing, so a hole in the grid shows instead of vanishing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

log = logging.getLogger(__name__)

BASELINE = "scratch"  # the `pretrained` tag of baselines
METRICS = {"test_accuracy": "accuracy", "test_f1": "F1", "test_auc": "AUC"}
BAR_METRICS = ("test_accuracy", "test_f1")  # the write-up's Figures 1 and 2
CELL = ["pretrained", "fraction"]
RUN_COLUMNS = ["version", *CELL, "seed", *METRICS]


def summarise(runs: pd.DataFrame, fractions: Sequence[int], models: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (pretrained, fraction) of `models` x `fractions`: n_runs, `<metric>_mean`, `<metric>_std`
    (sample std, NaN for one run) and the versions used; cells without runs have n_runs 0 and NaN.

    `runs` holds one row per registered version (RUN_COLUMNS). A (pretrained, fraction, seed) registered
    more than once counts once, with its newest version, so the spread is across seeds only. `models`
    defaults to the encoders found, sorted, then the baseline."""
    runs = runs.astype({"version": int, "fraction": int, "seed": int})
    latest = runs.sort_values("version").drop_duplicates([*CELL, "seed"], keep="last")
    if superseded := sorted(set(runs["version"]) - set(latest["version"])):
        log.warning("versions %s are superseded by newer versions of the same model, fraction and seed", superseded)
    if outside := sorted(set(latest["fraction"]) - set(fractions)):
        log.info("ignoring fractions %s (not asked for)", outside)
    if models is None:
        models = [*sorted(set(latest["pretrained"]) - {BASELINE}), BASELINE]
    grouped = latest.groupby(CELL)
    stats = grouped[list(METRICS)].agg(["mean", "std"])
    stats.columns = [f"{metric}_{stat}" for metric, stat in stats.columns]
    table = pd.concat([grouped.size().rename("n_runs"), stats,
                       grouped["version"].agg(lambda v: ",".join(map(str, sorted(v)))).rename("versions")], axis=1)
    table = table.reindex(pd.MultiIndex.from_product([list(models), list(fractions)], names=CELL))
    table["n_runs"] = table["n_runs"].fillna(0).astype(int)
    table["versions"] = table["versions"].fillna("")
    return table.reset_index()


def _series(table: pd.DataFrame, model: str, metric: str, fractions: Sequence[int]
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and std of `metric` per fraction for `model`, and where an error bar means something (n > 1)."""
    rows = table[table["pretrained"] == model].set_index("fraction").reindex(fractions)
    mean = rows[f"{metric}_mean"].to_numpy(float)
    std = rows[f"{metric}_std"].to_numpy(float)
    return mean, std, (rows["n_runs"].to_numpy() > 1) & ~np.isnan(std) & ~np.isnan(mean)


def _models(table: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(table["pretrained"]))


def _label(model: str) -> str:
    return f"{model} (baseline)" if model == BASELINE else model


def _colour(model: str, index: int) -> str:
    return "0.55" if model == BASELINE else f"C{index}"


def plot_bars(table: pd.DataFrame, metric: str, path: Path, title: str) -> Path:
    """Grouped bars: one group per fraction, one bar per model; error bars show the std across seeds,
    and a model without runs at a fraction gets an "n/a" where its bar would be."""
    models, fractions = _models(table), list(dict.fromkeys(table["fraction"]))
    width = 0.8 / len(models)
    fig = Figure(figsize=(max(6.0, 0.35 * len(models) * len(fractions) + 2), 4.2))
    ax = fig.subplots()
    for i, model in enumerate(models):
        mean, std, spread = _series(table, model, metric, fractions)
        x = np.arange(len(fractions)) + (i - (len(models) - 1) / 2) * width
        ax.bar(x, np.nan_to_num(mean), width, label=_label(model), color=_colour(model, i))
        ax.errorbar(x[spread], mean[spread], yerr=std[spread], fmt="none", ecolor="black", capsize=3)
        for xi in x[np.isnan(mean)]:
            ax.text(xi, 0.02, "n/a", rotation=90, ha="center", va="bottom", fontsize=8)
    ax.set_xticks(np.arange(len(fractions)), [f"{f} %" for f in fractions])
    ax.set(xlabel="labelled training data (fraction of the balanced set)", ylabel=f"test {METRICS[metric]}",
           ylim=(0, 1.15), title=title)
    ax.legend(loc="upper center", ncols=len(models), fontsize=8, frameon=False)
    return _save(fig, path)


def plot_lines(table: pd.DataFrame, path: Path, title: str) -> Path:
    """Each metric against the fraction (log scale), one line per model, error bars across seeds; a missing
    cell is a gap in the solid line, bridged by a faint dotted one so the trend stays readable."""
    models, fractions = _models(table), list(dict.fromkeys(table["fraction"]))
    fig = Figure(figsize=(4.2 * len(METRICS), 4.0))
    axes = fig.subplots(1, len(METRICS))
    x = np.asarray(fractions, dtype=float)
    for ax, (metric, name) in zip(axes, METRICS.items(), strict=True):
        for i, model in enumerate(models):
            mean, std, spread = _series(table, model, metric, fractions)
            known = ~np.isnan(mean)
            ax.plot(x[known], mean[known], linestyle=":", alpha=0.5, color=_colour(model, i))
            ax.plot(x, mean, marker="o", label=_label(model), color=_colour(model, i))
            ax.errorbar(x[spread], mean[spread], yerr=std[spread], fmt="none", ecolor=_colour(model, i), capsize=3)
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(x, [str(f) for f in fractions])
        ax.set(xlabel="labelled training data (%)", ylabel=f"test {name}")  # lines need no zero baseline
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _cell(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def to_markdown(table: pd.DataFrame) -> str:
    """The table as people read it: mean ± std per metric, "n/a" for a cell without runs (written here so
    that pandas' optional `tabulate` dependency is not needed)."""
    header = ["pretrained", "fraction (%)", "runs", *(f"test {name}" for name in METRICS.values())]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.to_dict("records"):
        cells = [_label(row["pretrained"]), str(row["fraction"]), str(row["n_runs"]),
                 *(_cell(row[f"{m}_mean"], row[f"{m}_std"]) for m in METRICS)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(table: pd.DataFrame, runs: pd.DataFrame, out: Path, title: str) -> list[Path]:
    """table.csv, table.md, runs.csv (the versions behind the table), bars_accuracy.png, bars_f1.png and
    lines.png in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "table.csv", index=False)
    runs.to_csv(out / "runs.csv", index=False)
    (out / "table.md").write_text(f"# {title}\n\n{to_markdown(table)}")
    paths = [out / "table.csv", out / "table.md", out / "runs.csv"]
    for metric in BAR_METRICS:
        paths.append(plot_bars(table, metric, out / f"bars_{METRICS[metric].lower()}.png",
                               f"{title}: test {METRICS[metric]}"))
    paths.append(plot_lines(table, out / "lines.png", title))
    return paths
