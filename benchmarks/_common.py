"""What the scorer benchmarks share: their synthetic features, the timer, the one-Gram
reference, the machine and load lines of their results and the writing of them."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch


def make_data(n: int, d: int, c: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-negative (ReLU-like) features with class structure; every class present."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    rng.shuffle(y)
    means = rng.normal(size=(c, d))
    f = np.maximum(means[y] + 1.5 * rng.normal(size=(n, d)), 0.0)
    return torch.from_numpy(f).to(torch.float32), torch.from_numpy(y)


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """The fastest of ``repeats`` calls of ``fn`` (seconds), and its last result."""
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def gram(f64: torch.Tensor) -> torch.Tensor:
    """One float64 Gram of the features: F^T F when N > D, else F F^T."""
    n, d = f64.shape
    return f64.T @ f64 if n > d else f64 @ f64.T


def cpu_model() -> str:
    """The CPU's model name, for the results' machine line."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def rel_diff(a: float, b: float) -> float:
    """|a - b| relative to the larger magnitude."""
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, two decimals each."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine_line() -> str:
    """The results' machine line: CPU, cores, torch threads and versions."""
    return (f"Machine: {cpu_model()}, {os.cpu_count()} logical cores "
            f"(torch threads {torch.get_num_threads()}), torch {torch.__version__}, "
            f"Python {platform.python_version()}, CPU only, float64 arithmetic.")


def write_results(path: Path, text: str) -> None:
    """Write a results file (its folder made if needed) and say so."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {path}")
