"""Time the logistic linear probe's two fold schedules on one large input, in one process.

Folds in parallel (one torch thread each) against folds one after the other on every
thread, at N=20000, D=2048, C=100 and the caller's torch threads (default 2).

Run: .venv/bin/python benchmarks/bench_probe_schedule.py [--threads T]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import zoosel.scorers.linear_probe as lp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    n, d, c = 20000, 2048, 100
    y = np.arange(n) % c
    rng.shuffle(y)
    means = rng.normal(size=(c, d)) * 0.3
    x = torch.from_numpy(np.maximum(means[y] + rng.normal(size=(n, d)), 0.0)).float()
    labels = torch.from_numpy(y)
    default = lp._PARALLEL_FOLD_WORK
    for name, limit in (("folds in parallel", 10**12), ("folds one after the other", 0)):
        lp._PARALLEL_FOLD_WORK = limit
        began = time.perf_counter()
        accuracy = lp.linear_probe_accuracy(x, labels, solver="logistic")
        print(f"{name}: {time.perf_counter() - began:.1f} s, accuracy {accuracy:.4f}")
    lp._PARALLEL_FOLD_WORK = default


if __name__ == "__main__":
    main()
