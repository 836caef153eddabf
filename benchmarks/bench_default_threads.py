"""The default sort's components (``consensus.COMPONENTS``) on 1 and 2 torch threads.

Prints, for a few input sizes, the best of 3 timings of scoring the components once on
each thread count, and their ratio: the evidence for ``SMALL_SCORING`` in
``zoosel/engine/preprocess.py`` (inputs up to that size are scored on one thread).

    python benchmarks/bench_default_threads.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's zoosel

from _common import make_data  # noqa: E402

import zoosel  # noqa: E402
from zoosel.scorers import consensus  # noqa: E402

SIZES = ((250, 768), (250, 2048), (500, 2048), (1000, 2048), (2500, 2048))


def best_of(features: torch.Tensor, labels: torch.Tensor, repeats: int = 3) -> float:
    """Fastest of ``repeats`` scorings of the components, after a warm-up."""
    scorers = list(consensus.COMPONENTS)
    zoosel.score(features, labels, scorers=scorers)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        zoosel.score(features, labels, scorers=scorers)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    print(f"components: {', '.join(consensus.COMPONENTS)}; 10 classes")
    print("| N | D | N x D | 1 thread (s) | 2 threads (s) | 2 / 1 |")
    print("|---|---|---|---|---|---|")
    for n, d in SIZES:
        features, labels = make_data(n, d, 10, seed=0)[:2]
        times = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            times.append(best_of(features, labels))
        print(f"| {n} | {d} | {n * d:,} | {times[0]:.4f} | {times[1]:.4f} | "
              f"{times[1] / times[0]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
