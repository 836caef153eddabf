"""Helpers the score tests share: seeded labels, tensors, and the common bad-input checks."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from zoosel.errors import ScoringError


def labels(rng: np.random.Generator, n: int, weights: list[float],
           min_count: int = 1) -> np.ndarray:
    """Labels drawn with class ``weights``, every class present at least ``min_count``
    times."""
    c = len(weights)
    y = rng.choice(c, size=n, p=np.asarray(weights) / sum(weights))
    y[: min_count * c] = np.arange(min_count * c) % c
    return rng.permutation(y)


def t(a: np.ndarray) -> torch.Tensor:
    """A contiguous tensor sharing ``a``'s data type."""
    return torch.from_numpy(np.ascontiguousarray(a))


def assert_rejects_bad_labelled_input(fn: Callable[..., object], bad: float,
                                      n: int = 6) -> None:
    """``fn(features, labels[, num_classes])`` raises ScoringError, with the shared validation's
    message, for: one class, labels of the wrong length, a ``bad`` (non-finite) feature,
    float labels, and labels outside ``num_classes``."""
    f = torch.randn(n, 3, dtype=torch.float64)
    y = torch.arange(n) % 2
    with pytest.raises(ScoringError, match="2 distinct classes"):
        fn(f, torch.zeros(n, dtype=torch.int64))
    with pytest.raises(ScoringError, match="rows"):
        fn(f, torch.tensor([0, 1, 0]))
    broken = f.clone()
    broken[2, 1] = bad
    with pytest.raises(ScoringError, match="non-finite"):
        fn(broken, y)
    with pytest.raises(ScoringError, match="integer"):
        fn(f, y.double())
    outside = y.clone()
    outside[-1] = 5
    with pytest.raises(ScoringError, match="lie in"):
        fn(f, outside, 3)
