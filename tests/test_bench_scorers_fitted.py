"""bench_scorers_fitted.py: a run limited to some scores replaces only their rows."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_merge_replaces_only_the_rerun_rows_and_says_so() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_scorers_fitted

    old = "\n".join([
        "# Scorer benchmark", "", "Command: `all`", "", "Machine: A.", "",
        "Load average when started: 1.", "", "Data: ...", "", "| score | N | D |", "|---|",
        "| sfda | 2500 | 2048 | 1 |", "| pactran | 2500 | 2048 | old |",
        "| pactran | 10000 | 2048 | old |", ""])
    rows = ["| pactran | 2500 | 2048 | new |", "| pactran | 10000 | 2048 | new |"]
    once = bench_scorers_fitted._merge(old, rows, "Command: `p`", "Machine: B.", "Load: 2.")
    twice = bench_scorers_fitted._merge(once, rows, "Command: `q`", "Machine: B.", "Load: 3.")
    for text, command in ((once, "`p`"), (twice, "`q`")):
        lines = text.split("\n")
        assert "| sfda | 2500 | 2048 | 1 |" in lines and "Command: `all`" in lines
        assert [line for line in lines if line.startswith("| pactran")] == rows
        notes = [line for line in lines if line.startswith("Rows of ")]
        assert len(notes) == 1 and command in notes[0] and "Machine: B." in notes[0]
        assert text.endswith("| pactran | 10000 | 2048 | new |\n")
    assert twice.count("\n\n\n") == 0
