"""What the scorer benchmarks share: their synthetic features, the timer, the machine name."""

from __future__ import annotations

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
