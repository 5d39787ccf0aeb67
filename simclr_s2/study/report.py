"""What `compare` writes: tables (CSV and Markdown), the write-up's figures with 95 % error bars and run
counts, a figure of the paired differences, a reliability diagram of the natural-prevalence test set, and
one self-contained report.html (figures embedded as base64 PNG) that links every cell to its runs and
model versions and names the digests behind it. Every figure's intervals come from one method, named in
its caption (Comparison.method); paired tables show each raw p beside its Holm-adjusted p. Where the runs
have folds or per-country metrics, the per-fold and per-country tables follow (folds.csv, countries.csv).

Figures are matplotlib Figure objects (no pyplot state); the same comparison gives the same files.
"""

from __future__ import annotations

import base64
import html
import math
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from simclr_s2.learning.metrics import CALIBRATION_BINS, DEFAULT_THRESHOLD
from simclr_s2.study.comparison import (
    BASELINE_STAGE,
    DIGEST_COLUMNS,
    METRICS,
    NATURAL_METRICS,
    NATURAL_PREVALENCE,
    OVERLAP,
    PAIRED_METRICS,
    SIGNIFICANCE,
    Comparison,
    holm_tests,
)
from simclr_s2.study.stats import LEVEL

BAR_METRICS = ("test_accuracy", "test_f1")  # the write-up's Figures 1 and 2
PERCENT = f"{100 * LEVEL:g} %"  # the level of every interval shown: "95 %"
PAIRED_NAMES = {"accuracy": "accuracy", "f1": "F1"}
CHARACTER_EM = 0.6
"""A character's width in ems, a little above DejaVu Sans' average, so that text broken by `_fitted` fits."""


def caption(comparison: Comparison, counts: str) -> str:
    """The one interval method of a comparison's figures, in words, and what the figure's counts count."""
    return f"error bars: {PERCENT} intervals, {comparison.method}; {counts}"


@dataclass(frozen=True)
class Links:
    """How report.html links to the tracking server: URLs built by the caller."""

    run: Callable[[str], str]  # run_id -> URL of the run's page
    version: Callable[[str, str], str]  # (registered model name, version) -> URL of the version's page
    classifier_model: str  # registered model name of the compared classifier versions


def write_report(comparison: Comparison, out: Path, title: str, links: Links | None = None) -> list[Path]:
    """table.csv, paired.csv, pairs.csv, duplicates.csv, runs.csv, folds.csv and countries.csv (where the
    comparison has them), table.md, bars_accuracy.png, bars_f1.png,
    lines.png, paired.png (when there are paired tests), reliability.png (when runs have natural-prevalence
    predictions) and report.html in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    tables = {"table.csv": comparison.cells, "paired.csv": comparison.paired, "pairs.csv": comparison.pairs,
              "duplicates.csv": comparison.duplicates, "runs.csv": comparison.runs,
              **{b.file: b.frame for b in _breakdowns(comparison)}}
    for name, frame in tables.items():
        frame.to_csv(out / name, index=False)
    (out / "table.md").write_text(to_markdown(comparison, title))
    figures = [plot_bars(comparison, m, out / f"bars_{METRICS[m].lower()}.png", f"{title}: test {METRICS[m]}")
               for m in BAR_METRICS]
    figures.append(plot_lines(comparison, out / "lines.png", title))
    if not comparison.paired.empty and (comparison.paired["pairs"] > 0).any():
        figures.append(plot_paired(comparison, out / "paired.png", title))
    if not comparison.reliability.empty:
        figures.append(plot_reliability(comparison, out / "reliability.png", title))
    (out / "report.html").write_text(to_html(comparison, title, figures, links))
    return [*(out / name for name in tables), out / "table.md", *figures, out / "report.html"]


def _series(cells: pd.DataFrame, condition: str, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, (2, k) error-bar offsets (0 where there is no interval) and run counts per fraction."""
    rows = cells[cells["condition"] == condition]
    mean = rows[f"{metric}_mean"].to_numpy(float)
    return mean, _offsets(mean, rows[f"{metric}_low"], rows[f"{metric}_high"]), rows["n_runs"].to_numpy()


def _offsets(centre: np.ndarray, low: pd.Series, high: pd.Series) -> np.ndarray:
    """(2, k) error-bar lengths below and above; 0 where there is no interval, or where a percentile
    bootstrap interval does not reach the estimate (it need not contain it)."""
    below, above = centre - low.to_numpy(float), high.to_numpy(float) - centre
    return np.clip(np.nan_to_num(np.stack([below, above])), 0, None)


def _colours(comparison: Comparison) -> dict[str, str]:
    """Encoders in matplotlib's cycle, baselines in greys."""
    stage = comparison.cells.drop_duplicates("condition").set_index("condition")["stage"]
    tuned = [c for c in comparison.conditions if stage[c] != BASELINE_STAGE]
    greys = [c for c in comparison.conditions if stage[c] == BASELINE_STAGE]
    return {**{c: f"C{i % 10}" for i, c in enumerate(tuned)},
            **{c: str(0.35 + 0.4 * i / max(len(greys), 1)) for i, c in enumerate(greys)}}


def _fractions(comparison: Comparison) -> list[int]:
    return list(dict.fromkeys(comparison.cells["fraction"]))


def plot_bars(comparison: Comparison, metric: str, path: Path, title: str) -> Path:
    """Grouped bars: one group per fraction, one bar per condition, 95 % error bars, n above each bar, and
    "n/a" where a condition has no run at a fraction."""
    conditions, fractions, colours = comparison.conditions, _fractions(comparison), _colours(comparison)
    width = 0.8 / len(conditions)
    fig = Figure(figsize=(max(6.0, 0.4 * len(conditions) * len(fractions) + 2), 4.6))
    ax = fig.subplots()
    for i, condition in enumerate(conditions):
        mean, offsets, n = _series(comparison.cells, condition, metric)
        x = np.arange(len(fractions)) + (i - (len(conditions) - 1) / 2) * width
        ax.bar(x, np.nan_to_num(mean), width, label=condition, color=colours[condition])
        ax.errorbar(x, mean, yerr=offsets, fmt="none", ecolor="black", capsize=2)
        for xi, top, runs in zip(x, np.nan_to_num(mean) + offsets[1], n, strict=True):
            ax.text(xi, top + 0.01, f"n={runs}" if runs else "n/a", rotation=90, ha="center", va="bottom",
                    fontsize=6)
    ax.set_xticks(np.arange(len(fractions)), [f"{f} %" for f in fractions])
    ax.set(xlabel="labelled training data (fraction of the balanced set)", ylabel=f"test {METRICS[metric]}",
           ylim=(0, 1.3), title=title)
    ax.legend(loc="upper center", ncols=min(len(conditions), 4), fontsize=7, frameon=False)
    fig.supxlabel(_fitted(fig, caption(comparison, "n = runs (seeds) per bar"), 6), fontsize=6)
    return _save(fig, path)


def plot_lines(comparison: Comparison, path: Path, title: str) -> Path:
    """Each metric against the fraction (log scale), one line per condition, 95 % error bars, and the run
    count beside each point; a missing cell is a gap, bridged by a faint dotted line."""
    fractions, colours = _fractions(comparison), _colours(comparison)
    x = np.asarray(fractions, dtype=float)
    fig = Figure(figsize=(4.4 * len(METRICS), 4.4))
    axes = fig.subplots(1, len(METRICS))
    for ax, (metric, name) in zip(axes, METRICS.items(), strict=True):
        for condition in comparison.conditions:
            mean, offsets, n = _series(comparison.cells, condition, metric)
            known = ~np.isnan(mean)
            colour = colours[condition]
            ax.plot(x[known], mean[known], linestyle=":", alpha=0.5, color=colour)
            ax.errorbar(x, mean, yerr=offsets, marker="o", label=condition, color=colour, capsize=2)
            for xi, yi, runs in zip(x[known], mean[known], n[known], strict=True):
                ax.annotate(f"{runs}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=6,
                            color=colour)
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(x, [str(f) for f in fractions])
        ax.set(xlabel="labelled training data (%)", ylabel=f"test {name}")
    axes[0].legend(loc="lower right", fontsize=7)
    fig.suptitle(_fitted(fig, f"{title}\n{caption(comparison, 'number = runs (seeds)')}", 9), fontsize=9)
    return _save(fig, path)


def plot_paired(comparison: Comparison, path: Path, title: str) -> Path:
    """Condition minus baseline on the same test patches, per fraction: the mean over seed pairs with its
    paired-bootstrap 95 % interval, the number of seed pairs beside each point."""
    paired, colours = comparison.paired, _colours(comparison)
    styles = {b: ("-", "--", ":", "-.")[i % 4] for i, b in enumerate(dict.fromkeys(paired["baseline"]))}
    fig = Figure(figsize=(5.0 * len(PAIRED_METRICS), 4.4))
    axes = fig.subplots(1, len(PAIRED_METRICS))
    for ax, metric in zip(axes, PAIRED_METRICS, strict=True):
        series = list(paired.groupby(["condition", "baseline"], sort=False))
        for i, ((condition, baseline), rows) in enumerate(series):
            rows = rows[rows["pairs"] > 0]
            if rows.empty:  # never paired (no common seed, no baseline of its bands): nothing to draw or name
                continue
            dodge = 1.03 ** (i - (len(series) - 1) / 2)  # side by side on the log axis
            x, diff = rows["fraction"].to_numpy(float) * dodge, rows[f"{metric}_diff"].to_numpy(float)
            offsets = _offsets(diff, rows[f"{metric}_low"], rows[f"{metric}_high"])
            ax.errorbar(x, diff, yerr=offsets, marker="o", capsize=2, color=colours[condition],
                        linestyle=styles[baseline],
                        label=f"{condition} - {baseline}")
            for xi, yi, k in zip(x, diff, rows["pairs"], strict=True):
                ax.annotate(f"{k}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=6)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        ax.minorticks_off()
        fractions = sorted(set(paired["fraction"]))
        ax.set_xticks(fractions, [str(f) for f in fractions])
        ax.set(xlabel="labelled training data (%)", ylabel=f"difference in test {PAIRED_NAMES[metric]}")
    axes[0].legend(loc="best", fontsize=7)
    fig.suptitle(_fitted(fig, f"{title}: paired differences, {PERCENT} intervals\n{comparison.method}; "
                              "number = seed pairs", 9), fontsize=9)
    return _save(fig, path)


def plot_reliability(comparison: Comparison, path: Path, title: str) -> Path:
    """Reliability diagram of the natural-prevalence test set, one column per fraction: per condition (its
    seeds pooled) the observed share of irrigated patches against the mean probability of each bin, and below
    it each bin's patch count (log scale): at natural prevalence the upper bins hold a few patches, whose
    share swings between 0 and 1, and the count says how much a point weighs."""
    bins, colours = comparison.reliability, _colours(comparison)
    fractions = list(dict.fromkeys(bins["fraction"]))
    fig = Figure(figsize=(3.6 * len(fractions), 5.2))
    axes = fig.subplots(2, len(fractions), squeeze=False, sharex="col", height_ratios=(3, 1))
    for ax, counts, fraction in zip(axes[0], axes[1], fractions, strict=True):
        for condition, rows in bins[bins["fraction"] == fraction].groupby("condition", sort=False):
            filled = rows[rows["patches"] > 0]
            ax.plot(filled["mean_probability"], filled["observed"], marker="o", markersize=3,
                    color=colours[condition], label=condition)
            counts.plot(filled["mean_probability"], filled["patches"], marker="o", markersize=2,
                        color=colours[condition], label=condition)
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
        ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="observed share irrigated", title=f"{fraction} %")
        counts.set(yscale="log", xlabel="mean predicted probability", ylabel="patches per bin")
    axes[0, 0].legend(loc="upper left", fontsize=6)
    fig.suptitle(_fitted(fig, f"{title}: calibration on the natural-prevalence test set ({CALIBRATION_BINS} "
                              "bins, seeds pooled; below, each bin's patches)", 9), fontsize=9)
    return _save(fig, path)


def _fitted(fig: Figure, text: str, points: float) -> str:
    """`text` with each of its lines broken to the figure's width: a caption naming its interval method
    (folds pooled, spatial groups) runs longer than any figure is wide. The figure's layout then makes
    room."""
    width = int(fig.get_figwidth() * 72 / (CHARACTER_EM * points))
    return "\n".join(textwrap.fill(line, width) for line in text.split("\n"))


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    return path


def _estimate(mean: float, low: float, high: float) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.4f}" if math.isnan(low) else f"{mean:.4f} [{low:.4f}, {high:.4f}]"


def _p(value: float) -> str:
    """A p, or "-" for no test (a pairing of one seed pair)."""
    return "-" if math.isnan(value) else f"{value:.3g}"


def pretraining_status(overlap: str, encoder_version: str) -> str:
    """The leakage guard's verdict on a cell, in words."""
    if overlap == "unknown":
        return "pretraining data unknown"
    if overlap.startswith("override:"):
        return f"leakage override: {overlap.removeprefix('override:')} test patches seen in pretraining"
    return "no test patch in pretraining" if encoder_version else "no pretrained encoder"


def _plain(value: float, digits: int = 4) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def _flag(row: dict) -> str:
    """A constant or near-constant predictor is named, never ranked (its balanced F1 flatters it); runs whose
    natural figures are at the default threshold, their natural validation set holding no positive, are
    counted (those figures are not at a chosen threshold)."""
    counts = {"near-constant predictor": row["near_constant_runs"],
              f"natural threshold {DEFAULT_THRESHOLD}, no positive in natural validation":
                  row["default_threshold_runs"]}
    return "; ".join(f"{what} ({n} of {row['n_runs']} runs)" for what, n in counts.items() if n) or "-"


def _cell_rows(cells: pd.DataFrame) -> list[list[str]]:
    return [[row["condition"], str(row["fraction"]), str(row["n_runs"]),
             *(_estimate(row[f"{m}_mean"], row[f"{m}_low"], row[f"{m}_high"]) for m in METRICS),
             _plain(row[NATURAL_PREVALENCE]), *(_plain(row[f"{m}_mean"]) for m in NATURAL_METRICS),
             _plain(100 * row[f"{OVERLAP}_mean"], 1),
             _flag(row), row["interval"] or "-",
             pretraining_status(row["pretraining_overlap"], row["encoder_version"]), str(row["duplicates"])]
            for row in cells.to_dict("records")]


CELL_HEADER = ["condition", "fraction (%)", "runs",
               *(f"test {n} [{PERCENT} interval]" for n in METRICS.values()),
               "natural prevalence", *(f"natural {n}" for n in NATURAL_METRICS.values()),
               "test patches near train (%)", "flag", "interval", "pretraining", "duplicates"]
PAIRED_HEADER = ["fraction (%)", "condition", "baseline", "seed pairs", "groups",
                 *(h for m in PAIRED_METRICS
                   for h in (f"difference in {PAIRED_NAMES[m]} [{PERCENT} interval]",
                             f"p ({PAIRED_NAMES[m]})", f"Holm p ({PAIRED_NAMES[m]})")),
                 "unpaired seeds"]


def _paired_rows(paired: pd.DataFrame) -> list[list[str]]:
    rows = []
    for row in paired.to_dict("records"):
        cells = [str(row["fraction"]), row["condition"], row["baseline"], str(row["pairs"]),
                 str(int(row["groups"])) if row["pairs"] else "-"]
        for m in PAIRED_METRICS:
            cells += ([_estimate(row[f"{m}_diff"], row[f"{m}_low"], row[f"{m}_high"]), _p(row[f"{m}_p"]),
                       _p(row[f"{m}_p_holm"]) + (" *" if row[f"{m}_p_holm"] < SIGNIFICANCE else "")]
                      if row["pairs"] else ["-", "-", "-"])
        rows.append([*cells, row["unpaired"] or "-"])
    return rows


NO_PAIRED = "No paired tests (no per-patch predictions, or no baseline)."
DUPLICATE_HEADER = ["condition", "fraction (%)", "seed", "version", "counted version", "run"]


def _duplicate_rows(duplicates: pd.DataFrame) -> list[list[str]]:
    return [[r["condition"], str(r["fraction"]), str(r["seed"]), str(r["version"]), str(r["counted_version"]),
             r["run_id"]] for r in duplicates.to_dict("records")]


def _intro(comparison: Comparison) -> list[str]:
    kinds = ", ".join(sorted(set(comparison.cells["split_kind"]))) or "-"
    return [f"Test set (balanced, as in the study) sha256 {comparison.test_digest}; split kind {kinds}.",
            (f"Intervals and p: {PERCENT}, {comparison.method}. Paired tests: condition minus baseline on "
             f"the same test patches, runs paired by seed. Holm's adjustment over all "
             f"{holm_tests(comparison.paired)} tests of this comparison; * marks a Holm p < {SIGNIFICANCE:g}, the "
             "only differences to call a difference."
             + (f" {comparison.resolution}." if comparison.resolution else "")),
            ("Natural columns: the natural-prevalence test set at the threshold chosen on the fraction's "
             "natural-prevalence validation set (PR-AUC, Brier and ECE need no threshold), means over seeds; "
             "its prevalence (share irrigated) is the PR-AUC of a predictor without skill. "
             "Test patches near train: the split's measured footprint overlap (same ground on any date, or a "
             "neighbour). A near-constant predictor is flagged: balanced F1 rewards it. So are runs whose "
             f"natural validation set held no positive: their natural figures are at {DEFAULT_THRESHOLD}, "
             "not at a chosen threshold."),
            ("A (condition, fraction, seed) registered more than once counts once, with its newest version; "
             "the others are listed under duplicates.")]


@dataclass(frozen=True)
class Breakdown:
    """A table of means below the cells: per fold, or per country."""

    heading: str
    note: str
    file: str
    frame: pd.DataFrame
    header: list[str]
    rows: list[list[str]]


def _breakdowns(comparison: Comparison) -> list[Breakdown]:
    """The per-fold and per-country tables, where the comparison has them."""
    out = []
    if not comparison.folds.empty:
        rows = [[r["condition"], str(r["fraction"]), r["fold"], r["held_out"], r["seeds"],
                 *(_plain(r[f"{m}_mean"]) for m in METRICS)] for r in comparison.folds.to_dict("records")]
        out.append(Breakdown("Folds", "Each fold's test set alone: the mean over the seeds that ran it. The "
                             "cells above pool the folds.", "folds.csv", comparison.folds,
                             ["condition", "fraction (%)", "fold", "held out", "seeds",
                              *(f"test {n} (mean)" for n in METRICS.values())], rows))
    if not comparison.countries.empty:
        rows = [[r["condition"], str(r["fraction"]), r["country"], str(r["n_runs"]), _plain(r["patches"], 1),
                 *(_plain(r[f"{m}_mean"]) for m in PAIRED_METRICS)]
                for r in comparison.countries.to_dict("records")]
        out.append(Breakdown("Countries", "Test patches of each country, per run that scored them (seeds and "
                             "folds): the mean over those runs, no interval.", "countries.csv",
                             comparison.countries,
                             ["condition", "fraction (%)", "country", "runs", "test patches per run",
                              *(f"test {PAIRED_NAMES[m]} (mean)" for m in PAIRED_METRICS)], rows))
    return out


def _markdown_table(header: Sequence[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def to_markdown(comparison: Comparison, title: str) -> str:
    """The tables as people read them (written here so pandas' optional `tabulate` is not needed)."""
    parts = [f"# {title}", *_intro(comparison), "## Cells",
             _markdown_table(CELL_HEADER, _cell_rows(comparison.cells))]
    parts += ["## Paired tests",
              _markdown_table(PAIRED_HEADER, _paired_rows(comparison.paired)) if not comparison.paired.empty
              else f"{NO_PAIRED}\n"]
    parts += ["## Duplicates", _markdown_table(DUPLICATE_HEADER, _duplicate_rows(comparison.duplicates))
              if not comparison.duplicates.empty else "None.\n"]
    for b in _breakdowns(comparison):
        parts += [f"## {b.heading}", b.note, _markdown_table(b.header, b.rows)]
    return "\n\n".join(parts)


def _link(text: str, url: str | None) -> str:
    shown = html.escape(text)
    return f'<a href="{html.escape(url)}">{shown}</a>' if url else shown


def _escaped(rows: list[list[str]]) -> list[list[str]]:
    """Plain-text cells made HTML."""
    return [[html.escape(cell) for cell in row] for row in rows]


def _html_table(header: Sequence[str], rows: list[list[str]]) -> str:
    """A table of cells that are already HTML (escaped text or links)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _provenance(comparison: Comparison, row: dict, links: Links | None) -> list[str]:
    """For one cell: its model versions and runs as links, the encoder version and the digests behind it, its
    runs' own (the comparison's test_digest names one test set per label rule or fold, after its rule)."""
    runs = comparison.runs[(comparison.runs["condition"] == row["condition"])
                           & (comparison.runs["fraction"] == row["fraction"]) & comparison.runs["used"]]
    versions = ", ".join(_link(f"v{v}", links and links.version(links.classifier_model, str(v)))
                         for v in runs["version"])
    run_links = ", ".join(_link(f"{r[:8]} (s{s})", links and links.run(r))
                          for r, s in zip(runs["run_id"], runs["seed"], strict=True))
    encoder = row["encoder_version"]
    model, _, number = encoder.rpartition("/")
    digests = [f"{c.removesuffix('_digest')} {', '.join(d[:12] for d in sorted(set(runs[c])) if d)}"
               for c in ("test_digest", *DIGEST_COLUMNS) if c in runs.columns and any(runs[c])]
    encoder_link = _link(encoder, links and model and links.version(model, number)) if encoder else "-"
    return [versions or "-", run_links or "-", encoder_link, html.escape("; ".join(digests)),
            html.escape(row["split_kind"])]


def to_html(comparison: Comparison, title: str, figures: Sequence[Path], links: Links | None = None) -> str:
    """One self-contained page: the introduction, the figures (base64 PNG), the cells with their
    provenance, the paired tests and the duplicates."""
    escaped = _escaped(_cell_rows(comparison.cells))
    records = comparison.cells.to_dict("records")
    status = CELL_HEADER.index("pretraining")
    for row, record in zip(escaped, records, strict=True):  # a leakage override or unknown data stands out
        verdict = "ok" if record["pretraining_overlap"] == "0" else "warn"
        row[status] = f'<span class="{verdict}">{row[status]}</span>'
    cells = [[*row, *_provenance(comparison, record, links)]
             for row, record in zip(escaped, records, strict=True)]
    images = "".join(f'<figure><img alt="{html.escape(p.stem)}" src="data:image/png;base64,'
                     f'{base64.b64encode(p.read_bytes()).decode()}"></figure>' for p in figures)
    paired = (_html_table(PAIRED_HEADER, _escaped(_paired_rows(comparison.paired)))
              if not comparison.paired.empty else f"<p>{NO_PAIRED}</p>")
    duplicates = (_html_table(DUPLICATE_HEADER, _escaped(_duplicate_rows(comparison.duplicates)))
                  if not comparison.duplicates.empty else "<p>None.</p>")
    intro = "".join(f"<p>{html.escape(line)}</p>" for line in _intro(comparison))
    style = ("body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;font-size:12px}"
             "td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}img{max-width:100%}"
             ".warn{color:#b00;font-weight:bold}.ok{color:#060}")
    header = [*CELL_HEADER, "model versions", "runs (seed)", "encoder version", "digests", "split kind"]
    breakdowns = "".join(f"<h2>{html.escape(b.heading)}</h2><p>{html.escape(b.note)}</p>"
                         + _html_table(b.header, _escaped(b.rows))
                         for b in _breakdowns(comparison))
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{intro}{images}"
            f"<h2>Cells</h2>{_html_table(header, cells)}<h2>Paired tests</h2>{paired}"
            f"<h2>Duplicates</h2>{duplicates}{breakdowns}</body></html>\n")
