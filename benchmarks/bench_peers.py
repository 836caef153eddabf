"""Time zoosel's scores against re-implementations of their peers' algorithms.

Every module in ``benchmarks/peers/`` describes one score (``SCORE``, ``TITLE``, ``NOTES``,
``cases(quick)``, ``run_case(case, repeats)``; see benchmarks/peers/__init__.py). For each
thread count the cases run in a fresh subprocess whose OMP_NUM_THREADS,
OPENBLAS_NUM_THREADS and MKL_NUM_THREADS are set before numpy and torch are imported, with
torch.set_num_threads to match; a warm-up call of each module's smallest quick case runs
first and is not timed. The results are one markdown table per score (case, threads,
zoosel's seconds, each peer's, the fastest peer / zoosel ratio, the relative differences
of the values) in ``benchmarks/results/peers.md`` and the raw rows in ``peers.json``. A run
limited by ``--scores`` replaces only those scores' tables and keeps the others; one
limited by ``--threads`` replaces only those thread counts' rows.

Run: .venv/bin/python benchmarks/bench_peers.py [--quick] [--scores logme,nleep]
     [--threads 1,2] [--repeats R] [--timeout S] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
_FORMER = "zoosel "  # zoosel's former implementations ("zoosel 0.1"), where a module keeps them
_GRAM = "one Gram"  # the yardstick, where a module times it: not a peer


def _paths() -> None:
    for p in (str(HERE), str(ROOT)):
        if p not in sys.path:
            sys.path.insert(0, p)


def discover() -> list[str]:
    """Names of the modules in benchmarks/peers/, sorted."""
    return sorted(m.name for m in pkgutil.iter_modules([str(HERE / "peers")])
                  if not m.name.startswith("_"))


def _load(names: list[str], scores: set[str] | None) -> list[Any]:
    _paths()
    mods = [importlib.import_module(f"peers.{name}") for name in names]
    return [m for m in mods if scores is None or m.SCORE in scores]


def _repeats(case: dict, repeats: int | None) -> int:
    if repeats:
        return repeats
    return 3 if case["n"] * case["d"] <= 1_000_000 else 1


def worker(threads: int, scores: set[str] | None, quick: bool, repeats: int | None,
           out: Path) -> None:
    """Run the cases on ``threads`` threads (environment already set by the parent)."""
    import torch

    torch.set_num_threads(threads)
    mods = _load(discover(), scores)
    for mod in mods:  # warm-up: imports, allocator, BLAS threads
        mod.run_case(mod.cases(True)[0], 1)
    records = []
    for mod in mods:
        for case in mod.cases(quick):
            load = os.getloadavg()
            t0 = time.perf_counter()
            rows = mod.run_case(case, _repeats(case, repeats))
            records.append({"score": mod.SCORE, "case": case, "threads": threads,
                            "rows": rows, "load": list(load)})
            out.write_text(json.dumps(records))  # what is done survives a time-out
            print(f"{mod.SCORE} {case['label']} threads={threads} "
                  f"({time.perf_counter() - t0:.1f} s): "
                  + ", ".join(f"{r['impl']} {r['seconds']:.3g} s" for r in rows), flush=True)
    out.write_text(json.dumps(records))


def _run_threads(threads: int, args: argparse.Namespace) -> list[dict]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(threads),
               "--out", str(out)]
        if args.quick:
            cmd.append("--quick")
        if args.scores:
            cmd += ["--scores", args.scores]
        if args.repeats:
            cmd += ["--repeats", str(args.repeats)]
        try:
            subprocess.run(cmd, env=env, check=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            print(f"threads={threads}: stopped after {args.timeout} s; keeping the cases "
                  "done", file=sys.stderr)
        return json.loads(out.read_text()) if out.exists() else []


def _machine() -> str:
    _paths()
    import torch
    from _common import cpu_model

    return (f"{cpu_model()}, {os.cpu_count()} logical cores, torch {torch.__version__}, "
            f"Python {platform.python_version()}, CPU only")


def _fmt_s(x: float) -> str:
    return f"{x:.3g}"


def render(results: dict) -> str:
    """The markdown report of ``results`` (the peers.json structure)."""
    lines = [
        "# zoosel's scores against their peers' algorithms",
        "",
        "Each table times zoosel and re-implementations of the peers' algorithms (written "
        "from the papers and the peers' public code) on the same seeded features "
        "(benchmarks/_common.py make_data: ReLU-like features with class structure, float32 "
        "in). Times are the best of the repeats (3 when N x D <= 1e6, else 1), after an "
        "untimed warm-up. `fastest peer / zoosel` > 1 means zoosel is faster; "
        "`zoosel / one Gram` is zoosel's time over that of one float64 Gram matrix of the "
        "same features (F^T F, or F F^T when N < D), timed in the same run; "
        "`zoosel 0.1` (or another `zoosel <version>`) is a former implementation of zoosel's, "
        "timed in the same run. "
        "`rel. diff` is |peer - zoosel| / max(|peer|, |zoosel|).",
        "",
    ]
    for score in sorted(results["scores"]):
        entry = results["scores"][score]
        records = entry["records"]
        impls: list[str] = []
        for rec in records:
            for row in rec["rows"][1:]:
                if row["impl"] not in impls:
                    impls.append(row["impl"])
        peers = [i for i in impls if not i.startswith("zoosel") and i != _GRAM]
        befores = [i for i in impls if i.startswith(_FORMER)]
        head = ["case", "N", "D", "C", "threads", "zoosel s", *[f"{i} s" for i in impls],
                "fastest peer / zoosel"]
        if _GRAM in impls:
            head.append("zoosel / one Gram")
        head += [f"{i} / zoosel" for i in befores]
        head += ["zoosel value", "rel. diff", "notes"]
        lines += [f"## {entry['title']}", "",
                  f"Command: `{entry['command']}`", "",
                  f"Machine: {entry['machine']}.", "",
                  f"Load average when started: {entry['load']}.", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for rec in records:
            case, rows = rec["case"], rec["rows"]
            zoo = rows[0]
            by = {r["impl"]: r for r in rows[1:]}
            cells = [case["label"], str(case["n"]), str(case["d"]), str(case["c"]),
                     str(rec["threads"]), _fmt_s(zoo["seconds"])]
            cells += [_fmt_s(by[i]["seconds"]) if i in by else "-" for i in impls]
            times = [by[i]["seconds"] for i in peers if i in by]
            cells.append(f"{min(times) / zoo['seconds']:.2f}x" if times else "-")
            if _GRAM in impls:
                cells.append(f"{zoo['seconds'] / by[_GRAM]['seconds']:.1f}x"
                             if _GRAM in by else "-")
            cells += [f"{by[i]['seconds'] / zoo['seconds']:.2f}x" if i in by else "-"
                      for i in befores]
            cells.append(f"{zoo['value']:.6g}")
            cells.append("; ".join(f"{i} {by[i]['rel_diff']:.1e}" for i in impls
                                   if i in by and "rel_diff" in by[i] and i != _GRAM))
            cells.append("; ".join(f"{r['impl']}: {r['note']}" for r in rows if r.get("note")))
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", entry["notes"], ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--scores", default="", help="comma-separated subset, e.g. logme,leep")
    parser.add_argument("--threads", default="1,2", help="thread counts, e.g. 1,2")
    parser.add_argument("--repeats", type=int, default=0, help="repeats per timing")
    parser.add_argument("--out-dir", type=Path, default=RESULTS, help="where to write")
    parser.add_argument("--no-write", action="store_true", help="do not write the results")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per thread count; the cases done by then are kept")
    parser.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    scores = {s.strip() for s in args.scores.split(",") if s.strip()} or None

    if args.worker:
        worker(args.worker, scores, args.quick, args.repeats or None, args.out)
        return

    known = {m.SCORE for m in _load(discover(), None)}
    if scores and not scores <= known:
        parser.error(f"unknown scores {sorted(scores - known)}; known: {sorted(known)}")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    records: list[dict] = []
    for t in (int(x) for x in args.threads.split(",")):
        records += _run_threads(t, args)

    json_path, md_path = args.out_dir / "peers.json", args.out_dir / "peers.md"
    results: dict = {"scores": {}}
    if json_path.exists():
        results = json.loads(json_path.read_text())
    command = "python benchmarks/bench_peers.py " + " ".join(sys.argv[1:])
    machine = _machine()
    ran = {int(x) for x in args.threads.split(",")}
    for mod in _load(discover(), scores):
        # a run over some thread counts keeps the earlier records of the others
        kept = [r for r in results["scores"].get(mod.SCORE, {}).get("records", [])
                if r["threads"] not in ran and not args.quick]
        entry = results["scores"].get(mod.SCORE, {})
        commands = [c for c in entry.get("command", "").split(" ; ") if c and kept]
        loads = [x for x in str(entry.get("load", "")).split(" ; ") if x and kept]
        fresh = [r for r in records if r["score"] == mod.SCORE]
        results["scores"][mod.SCORE] = {
            "title": mod.TITLE, "notes": mod.NOTES,
            "command": " ; ".join([*commands, command.strip()]),
            "machine": machine, "load": " ; ".join([*loads, load]),
            "records": sorted(kept + fresh, key=lambda r: r["threads"]),
        }
    text = render(results)
    if args.no_write:
        print(text)
        return
    args.out_dir.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=1) + "\n")
    md_path.write_text(text)
    print(f"wrote {md_path} and {json_path}")


if __name__ == "__main__":
    main()
