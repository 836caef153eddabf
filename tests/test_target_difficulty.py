"""benchmarks/target_difficulty.py: the two few-shot classifiers against independent
computations, and a run over a one-member zoo."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import target_difficulty as td  # noqa: E402


def test_nearest_centroid_matches_a_loop() -> None:
    rng = np.random.default_rng(0)
    xtr, ytr = rng.normal(size=(12, 5)), np.repeat([2, 5, 7], 4)
    xte = rng.normal(size=(9, 5))
    expected = []
    for x in xte:
        dist = {c: np.linalg.norm(x - xtr[ytr == c].mean(0)) for c in (2, 5, 7)}
        expected.append(min(dist, key=dist.get))
    assert td.nearest_centroid(xtr, ytr, xte).tolist() == expected


def test_ridge_dual_matches_the_primal_solution() -> None:
    rng = np.random.default_rng(1)
    xtr, ytr = rng.normal(size=(10, 4)) * [1.0, 5.0, 0.2, 2.0] + 3.0, np.repeat([0, 1], 5)
    xte = rng.normal(size=(20, 4)) * [1.0, 5.0, 0.2, 2.0] + 3.0
    lam = 0.7
    a = (xtr - xtr.mean(0)) / (xtr.std(0) + 1e-6)
    b = (xte - xtr.mean(0)) / (xtr.std(0) + 1e-6)
    t = np.eye(2)[ytr]
    w = np.linalg.solve(a.T @ a + lam * len(a) * np.eye(4), a.T @ (t - t.mean(0)))
    assert td.ridge(xtr, ytr, xte, lam).tolist() == (b @ w).argmax(1).tolist()
    # Separable classes are recovered.
    far = np.concatenate([rng.normal(size=(5, 3)) - 4.0, rng.normal(size=(5, 3)) + 4.0])
    assert td.ridge(far, ytr, far).tolist() == ytr.tolist()


def test_difficulty_of_a_one_member_zoo(tmp_path: Path) -> None:
    import torch

    from zoosel.bench import nets

    arch = nets.get_arch("resnet")
    model = nets.create(arch, 10, 32, seed=0)
    nets.save(model, tmp_path / "resnet-a", arch, [f"c{k}" for k in range(10)],
              {"arch": "resnet"})
    (tmp_path / "not-a-member").mkdir()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = td.difficulty(tmp_path, ["materials"], draws=1)
    finally:
        torch.set_num_threads(threads)
    figures = result["materials"]
    assert set(figures) == {"pixels", "resnet-a"}
    for acc in figures.values():
        assert set(acc) == {"centroid", "ridge"}
        assert all(0.0 <= v <= 1.0 and v * 240 == pytest.approx(round(v * 240))
                   for v in acc.values())  # a fraction of the 8 x 30 test images
    line = td.summary("materials", {**figures, "resnet-b": {"centroid": 0.0, "ridge": 0.0}})
    assert line.startswith("materials") and "resnet-a" in line
