"""Do the installed scorers reproduce the values a benchmark build recorded?

A scorer whose version changed in how it computes, not what (speed, rounding), declares
the earlier versions it reproduces (``Scorer.same_values_as``); the recorded results of
those versions then stay usable (``zoosel bench fit``, ``bench report``). This check is
the evidence: it recomputes the chosen scores with the installed scorers on a build's
cached features (no model runs when the cache has them) for every (task, regime) pair of
its ``results.json`` and compares them with the recorded values, member by member.

    python benchmarks/check_same_values.py --dir /work/bench-diverse \\
        --results benchmarks/results/selection-diverse/results.json --scores linft

``--work DIR`` scores in another folder (its ``data`` and ``zoo`` linked to the build's,
its cache a copy the caller made), so the build's own folder is only read.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import load_average, machine_line, write_results  # noqa: E402
from zoosel.api import select_scorers  # noqa: E402
from zoosel.bench import profiles, selectors  # noqa: E402
from zoosel.bench.results_file import load_results  # noqa: E402

OUT = Path(__file__).parent / "results" / "same_values.md"


def _ranks(values: dict[str, float]) -> list[str]:
    return sorted(values, key=lambda m: (-values[m], m))


def compare(old: dict[str, float], new: dict[str, float]) -> dict[str, float | bool | int]:
    """Largest relative difference, whether the order and the top-1 are the same, over
    the members both have a finite value for."""
    common = {m for m in old if m in new and old[m] is not None and new[m] is not None
              and math.isfinite(old[m]) and math.isfinite(new[m])}
    a = {m: float(old[m]) for m in common}
    b = {m: float(new[m]) for m in common}
    rel = max((abs(b[m] - a[m]) / max(abs(a[m]), 1e-12) for m in common), default=0.0)
    return {"members": len(common), "max_rel": rel, "same_order": _ranks(a) == _ranks(b),
            "same_top1": bool(common) and _ranks(a)[0] == _ranks(b)[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, required=True, help="the build folder")
    parser.add_argument("--results", type=Path, required=True, help="its results.json")
    parser.add_argument("--scores", default="linft", help="comma-separated scores")
    parser.add_argument("--profile", default="diverse")
    parser.add_argument("--work", type=Path, help="score here instead of in --dir")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    names = [s.strip() for s in args.scores.split(",") if s.strip()]
    results = load_results(args.results)
    root = args.dir
    if args.work:
        root = args.work
        for part in ("data", "zoo"):
            if not (root / part).exists():
                (root / part).symlink_to((args.dir / part).resolve())
    profile = replace(profiles.get_profile(args.profile), scorers=tuple(names))
    members = {p.name: p for p in sorted((root / "zoo").iterdir()) if p.is_dir()}
    ablations = set(results.get("ablations") or ())
    rows = {name: [] for name in names}
    for task in sorted(results["tasks"]):
        for regime, entry in sorted(results["tasks"][task].items()):
            if regime in ablations:
                continue
            recorded = entry.get("scores") or {}
            zoo = {m: members[m] for m in entry["accuracy"] if m in members}
            new = selectors.score(root, profile, selectors.Scoring(task, regime), zoo)
            for name in names:
                if name in recorded:
                    cell = compare(recorded[name], new["scores"].get(name, {}))
                    rows[name].append({"pair": f"{task} / {regime}", **cell})
                    print(f"{name} {task} {regime}: {cell}", flush=True)
    recorded_versions = results.get("scorer_versions") or {}
    lines = [
        "# Installed scorers against a build's recorded values", "",
        "Command:", "",
        f"    python benchmarks/check_same_values.py --dir {args.dir} --results "
        f"{args.results} --scores {','.join(names)}", "",
        machine_line(), f"Load average: {load_average()}", "",
        "| score | recorded version | installed version | pairs | members per pair | "
        "largest relative difference | pairs with another order | pairs with another "
        "top-1 |", "|---|---|---|---|---|---|---|---|"]
    versions = selectors.scorer_versions(select_scorers(names))
    for name, cells in rows.items():
        if not cells:
            continue
        lines.append(
            f"| {name} | {recorded_versions.get(name, 'not recorded')} | "
            f"{versions.get(name, '?')} | {len(cells)} | "
            f"{min(c['members'] for c in cells)}-{max(c['members'] for c in cells)} | "
            f"{max(c['max_rel'] for c in cells):.2e} | "
            f"{sum(not c['same_order'] for c in cells)} | "
            f"{sum(not c['same_top1'] for c in cells)} |")
    lines.append("")
    write_results(args.out, "\n".join(lines))
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
