"""`make bench`'s one table: a benchmark script adds its headline figures to the file BENCH_TABLE names,
and `benchmarks/figures.py` prints every script's figures together, each with its baseline, the ratio
and the load averages. Run here on a tiny store (the figures themselves are not checked: speed lives in
the scripts, never in tests)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def _python(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_a_script_adds_its_figures_and_the_table_prints_them_with_ratios(tmp_path):
    table = tmp_path / "figures.jsonl"
    env = {**os.environ, "BENCH_TABLE": str(table), "PYTHONPATH": str(ROOT)}
    own = _python([str(BENCH / "bench_loader.py"), "--patches", "24", "--small", "6", "--workers", "1",
                   "--seconds", "0.05"], env)
    # packing, 5 warm-loader baselines, threads vs inline, cold shuffled and cold in file order vs the disk
    assert len(table.read_text().splitlines()) == 9

    combined = _python([str(BENCH / "figures.py"), str(table)], env)
    rows = [line for line in combined.splitlines() if line.startswith(("| packing", "| loader"))]
    assert len(rows) == 9 and all(row in own for row in rows)  # the same rows the script printed
    for row in rows:  # a ratio to the baseline, or (torchgeo not installed) the reason there is none
        assert re.search(r"\| [0-9.]+x \|$", row) or ("torchgeo" in row and row.endswith("| - | - | - | - |"))


def test_the_demo_bench_reads_the_readmes_quoted_lines_with_their_elisions():
    """bench_demo checks the README's quoted summary and map lines against a full-size demo (the tests run a
    smaller one): "..." in a quote stands for the text it leaves out, and nothing else may differ."""
    sys.path.insert(0, str(BENCH))
    try:
        import bench_demo
    finally:
        sys.path.remove(str(BENCH))
    quote = bench_demo.quoted(bench_demo.MAP_LINE)
    assert quote.startswith("demo-scene: ") and "..." in quote
    line = quote.replace("...", "no evaluate run of simclr-s2-irrigation/1 on a test set recorded val_threshold", 1)
    assert bench_demo.says(quote, line.replace("...", "/home/me/simclr-s2"))
    assert not bench_demo.says(quote, line.replace("432 ha", "576 ha"))
    assert bench_demo.SUMMARY.search(bench_demo.README.read_text())
