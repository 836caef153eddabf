"""Time the confidence step against the run's own scoring of the same candidates.

A ranking's own scoring computes the sort score once per candidate on the full sample
(N x D features); the confidence step (:func:`zoosel.confidence.assess`) recomputes it
B times per candidate on resampled rows (half of each class by default), from the
arrays already extracted. The ratio (confidence / own scoring) is what ``--confidence B``
adds to the scoring part of a run (extraction, usually the larger part, is not repeated).

Run: .venv/bin/python benchmarks/bench_confidence.py [--quick]
Writes benchmarks/results/confidence.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import cpu_model, make_data  # noqa: E402

from zoosel.api import list_scorers  # noqa: E402
from zoosel.confidence import assess  # noqa: E402
from zoosel.engine.preprocess import scoring_threads  # noqa: E402
from zoosel.engine.runner import score_arrays  # noqa: E402
from zoosel.threads import torch_threads  # noqa: E402
from zoosel.types import CandidateResult, DatasetSummary, Ranking  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "confidence.md"


def pool(n: int, d: int, c: int, candidates: int) -> tuple[dict, np.ndarray]:
    """``candidates`` synthetic feature sets of the same labelled sample."""
    arrays, labels = {}, np.sort(np.arange(n) % c)
    for m in range(candidates):
        f, y = make_data(n, d, c, seed=m)  # rows sorted by class: the same labels for all
        arrays[f"m{m}"] = {"features": f.numpy()[np.argsort(y.numpy(), kind="stable")]}
    return arrays, labels


def own_scoring(arrays: dict, labels: np.ndarray, c: int, name: str) -> tuple[float, dict]:
    """Seconds of scoring every candidate once (and the pool step), and the scores."""
    scorer = list_scorers()[name]
    began = time.perf_counter()
    scores, parts = {}, {}
    n, d = next(iter(arrays.values()))["features"].shape
    for cand, held in arrays.items():
        with torch_threads(scoring_threads(n, d, torch.get_num_threads())):  # as the runner
            values, components, _ = score_arrays(held, labels, c, {name: scorer})
        if name in components:
            parts[cand] = components[name]
        else:
            scores[cand] = values[name]
    if scorer.pool_normalize is not None:
        scores = scorer.pool_normalize(parts)
    return time.perf_counter() - began, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--replicates", type=int, default=50)
    parser.add_argument("--unlocked", action="store_true",
                        help="say in the results that the CPU lock was not held")
    parser.add_argument("--no-write", action="store_true", help="do not write the results file")
    args = parser.parse_args()
    n, d, c, m = (100, 128, 10, 4) if args.quick else (250, 2048, 10, 10)
    b = 5 if args.quick else args.replicates
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    arrays, labels = pool(n, d, c, m)
    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for name in ("consensus", "lfc"):
            scorer = list_scorers()[name]
            own_scoring(arrays, labels, c, name)  # warm-up (thread pools, lazy imports)
            own, scores = own_scoring(arrays, labels, c, name)
            results = [CandidateResult(candidate=k, source="bench", scores={name: v})
                       for k, v in sorted(scores.items(), key=lambda kv: -kv[1])]
            ranking = Ranking(DatasetSummary("bench", "train", "f", c, n, n // c, 0,
                                             tuple(map(str, range(c)))),
                              [name], name, results, [], [])
            for method in ("half", "bootstrap"):
                assess(ranking, arrays, labels, scorer, 1, 0, method)  # warm-up
                began = time.perf_counter()
                conf = assess(ranking, arrays, labels, scorer, b, 0, method)
                took = time.perf_counter() - began
                leader = conf.leader
                rows.append((threads, name, method, own, took, took / own,
                             took / b, conf.p_best[leader], conf.rank_interval[leader]))
                print(rows[-1], flush=True)
    lines = [
        "# Confidence step: B resamples vs the run's own scoring",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_confidence.py"
        f"{' --quick' if args.quick else ''}` (B = {b})",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} logical cores, torch {torch.__version__}, "
        f"Python {platform.python_version()}, CPU only.",
        "",
        f"Load average when started (other jobs share this machine): {load}."
        + (" Run without the exclusive CPU lock (other jobs held it): absolute seconds are "
           "inflated by the other jobs; the ratios compare two timings of the same run."
           if args.unlocked else ""),
        "",
        f"Data: {m} candidates of synthetic ReLU-like features with class structure "
        f"(benchmarks/_common.py), N = {n} ({c} classes x {n // c}), D = {d}, float32. "
        "Own scoring: the sort score once per candidate on the full sample (plus the pool "
        "step). Confidence: `zoosel.confidence.assess` with B resamples, same arrays, no "
        "model. Both use the engine's thread policy (`scoring_threads`: inputs of at most "
        "600,000 values run on one thread whatever the setting). One timing each after a "
        "warm-up call (the confidence step is itself B repeats).",
        "",
        "| torch threads | sort score | resampling | own scoring (s) | confidence (s) | "
        "ratio | per resample (s) | leader P(best) | leader rank 90% |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for threads, name, method, own, took, ratio, per, p, (lo, hi) in rows:
        lines.append(f"| {threads} | {name} | {method} | {own:.3f} | {took:.2f} | "
                     f"{ratio:.1f}x | {per:.3f} | {p:.2f} | {lo}-{hi} |")
    lines += [
        "",
        "Notes: `half` (the default) scores half of each class per resample, so one resample "
        "costs less than the own scoring when the score's cost grows faster than linearly "
        "in N; `bootstrap` keeps N rows. Feature extraction (a forward pass of every "
        "candidate over the sample) is not repeated and is not in these figures; on a real "
        "run it is usually the larger part.",
        "",
    ]
    if not args.no_write:
        RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
