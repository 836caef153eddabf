"""Helpers the score tests share: seeded labels, tensors, and the common bad-input checks."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import ModuleType

import numpy as np
import pytest
import torch

from zoosel.errors import ScoringError
from zoosel.types import Scorer


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


def registered(modules: Mapping[str, ModuleType]) -> dict[str, Scorer]:
    """The scorers ``modules`` register, by name, through a plugin manager of their own."""
    import pluggy

    from zoosel import hookspecs

    pm = pluggy.PluginManager("zoosel")
    pm.add_hookspecs(hookspecs)
    for name, module in modules.items():
        pm.register(module, name=name)
    found: dict[str, Scorer] = {}
    pm.hook.register_scorers(register=lambda s: found.__setitem__(s.name, s))
    return found


def registered_by_default() -> dict[str, Scorer]:
    """The scorers zoosel's default plugins register, by name (a skip when one of those
    plugins does not import)."""
    import importlib

    from zoosel import plugins

    for _, module in plugins.DEFAULT_PLUGINS:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            pytest.skip(f"default plugin {module} not importable: {exc}")
    plugins.reset_plugin_manager()
    try:
        return plugins.collect("register_scorers", "scorer")
    finally:
        plugins.reset_plugin_manager()
