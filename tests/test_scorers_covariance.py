"""H-score, regularised H-score, GBC, TransRate, feature sparsity and the random baseline,
each against an independent computation (float64, 1e-6 relative)."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch
from scipy import stats
from scorer_cases import assert_rejects_bad_labelled_input, registered
from scorer_cases import labels as _labels
from scorer_cases import t as _t

from zoosel.errors import ScoringError
from zoosel.scorers import feature_metrics as fm_mod
from zoosel.scorers import gbc as gbc_mod
from zoosel.scorers import hscore as hscore_mod
from zoosel.scorers import random_score as random_mod
from zoosel.scorers import transrate as transrate_mod
from zoosel.scorers.feature_metrics import feature_sparsity, hoyer_sparsity
from zoosel.scorers.gbc import bhattacharyya_distances, gbc, pca_project, top_eigh
from zoosel.scorers.hscore import hscore, ledoit_wolf_shrinkage, regularized_hscore
from zoosel.scorers.random_score import random_score
from zoosel.scorers.transrate import coding_rate, transrate
from zoosel.types import Need, ScoreInputs

REL = 1e-6
EPS64 = np.finfo(np.float64).eps
MODULES = {
    "hscore": hscore_mod,
    "gbc": gbc_mod,
    "transrate": transrate_mod,
    "feature_metrics": fm_mod,
    "random_score": random_mod,
}
NAMES = {"hscore", "hscore_reg", "gbc", "transrate", "feature_sparsity", "random"}


def _informative(rng: np.random.Generator, y: np.ndarray, d: int, noise: float = 1.0):
    """Class means plus Gaussian noise of unequal scale per dimension."""
    means = rng.normal(size=(int(y.max()) + 1, d))
    scales = np.linspace(0.5, 1.5, d)
    return means[y] + noise * scales * rng.normal(size=(y.size, d))


def _orthogonal(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


# ---------------------------------------------------------------------------- H-score


def _class_mean_matrix(f: np.ndarray, y: np.ndarray) -> np.ndarray:
    """g_i = E[f | y = y_i], by an explicit loop over classes."""
    g = np.zeros_like(f)
    for c in np.unique(y):
        g[y == c] = f[y == c].mean(axis=0)
    return g


def _cov(x: np.ndarray) -> np.ndarray:
    return np.atleast_2d(np.cov(x, rowvar=False, bias=True))


def _hscore_brute(f: np.ndarray, y: np.ndarray) -> float:
    """tr(pinv(cov f) cov g) with numpy's pseudo-inverse of the D x D covariance."""
    n, d = f.shape
    cov_f = _cov(f)
    cov_g = _cov(_class_mean_matrix(f, y))
    return float(np.trace(np.linalg.pinv(cov_f, rcond=max(n, d) * EPS64) @ cov_g))


@pytest.mark.parametrize(
    ("n", "d", "weights", "offset"),
    [
        (60, 8, [1, 1, 1], 0.0),  # N > D
        (90, 12, [8, 3, 1, 1], 3.0),  # unbalanced, offset features
        (200, 40, [1] * 6, 0.0),
        (30, 30, [2, 1, 1], 1.0),  # N == D: rank N - 1 < D
        (14, 40, [1, 1, 1, 1], 0.0),  # N < D
    ],
)
def test_hscore_matches_pinv(n: int, d: int, weights: list[float], offset: float) -> None:
    rng = np.random.default_rng(n * 100 + d)
    y = _labels(rng, n, weights)
    f = _informative(rng, y, d) + offset
    got = hscore(_t(f), _t(y))
    assert got == pytest.approx(_hscore_brute(f, y), rel=REL)
    assert 0.0 <= got <= len(weights) - 1 + 1e-9


def test_hscore_hand_worked_one_dimension() -> None:
    # D = 1: H is between-class variance / total variance. f = (0, 1, 2, 3), y = (0, 0, 1, 1):
    # class means 0.5 and 2.5, overall 1.5, between variance 1, total variance 5/4: H = 0.8.
    f = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    assert hscore(f, torch.tensor([0, 0, 1, 1])) == pytest.approx(0.8, rel=1e-12)
    # y = (0, 1, 0, 1): class means 1 and 2, between variance 1/4: H = 0.2
    assert hscore(f, torch.tensor([0, 1, 0, 1])) == pytest.approx(0.2, rel=1e-12)
    # features that determine the class exactly: H = C - 1 = 1
    g = torch.tensor([[0.0], [0.0], [5.0], [5.0]])
    assert hscore(g, torch.tensor([0, 0, 1, 1])) == pytest.approx(1.0, rel=1e-12)


def test_hscore_saturates_when_n_le_d() -> None:
    rng = np.random.default_rng(3)
    y = _labels(rng, 20, [1, 1, 1, 1, 1])
    for f in (_informative(rng, y, 50), rng.normal(size=(20, 50))):  # informative or noise
        assert hscore(_t(f), _t(y)) == pytest.approx(4.0, rel=1e-12)
        assert _hscore_brute(f, y) == pytest.approx(4.0, rel=1e-8)


def test_hscore_rank_deficient() -> None:
    rng = np.random.default_rng(5)
    y = _labels(rng, 70, [3, 2, 1])
    base = _informative(rng, y, 6)
    dead = np.zeros((70, 2))  # dead units: exactly constant columns
    dup = np.concatenate([base, 2.0 * base[:, :3], base[:, :1] - base[:, 1:2], dead], axis=1)
    ref = _hscore_brute(base, y)
    assert _hscore_brute(dup, y) == pytest.approx(ref, rel=1e-8)
    assert hscore(_t(dup), _t(y)) == pytest.approx(ref, rel=REL)
    # rank-deficient with N < D: rank 6 < N = 20 < D = 30
    y2 = _labels(rng, 20, [1, 1, 1])
    low = _informative(rng, y2, 6)
    f2 = np.concatenate([low, low @ rng.normal(size=(6, 24))], axis=1)
    assert hscore(_t(f2), _t(y2)) == pytest.approx(_hscore_brute(f2, y2), rel=REL)
    assert hscore(_t(f2), _t(y2)) == pytest.approx(_hscore_brute(low, y2), rel=REL)


def test_hscore_fast_path_equals_eigen_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(8)
    y = _labels(rng, 80, [2, 2, 1, 1])
    cases = [(_informative(rng, y, 15), y)]
    y2 = _labels(rng, 16, [1, 1, 2])
    cases.append((_informative(rng, y2, 30), y2))
    fast = [hscore(_t(f), _t(lab)) for f, lab in cases]
    monkeypatch.setattr(hscore_mod, "RANK_MARGIN", math.inf)  # refuse every fast path
    slow = [hscore(_t(f), _t(lab)) for f, lab in cases]
    assert fast == pytest.approx(slow, rel=1e-9)


def test_hscore_invariances() -> None:
    rng = np.random.default_rng(9)
    y = _labels(rng, 60, [3, 2, 1, 1])
    f = _informative(rng, y, 7)
    base = hscore(_t(f), _t(y))
    perm = rng.permutation(60)
    assert hscore(_t(f[perm]), _t(y[perm])) == pytest.approx(base, rel=1e-9)
    relabel = np.array([3, 0, 2, 1])
    assert hscore(_t(f), _t(relabel[y])) == pytest.approx(base, rel=1e-9)
    mix = rng.normal(size=(7, 7))  # any invertible affine map
    assert hscore(_t(f @ mix + 4.0), _t(y)) == pytest.approx(base, rel=1e-8)
    assert hscore(_t(f).float(), _t(y)) == pytest.approx(
        _hscore_brute(_t(f).float().double().numpy(), y), rel=REL
    )


def test_hscore_degenerate_inputs() -> None:
    y = torch.tensor([0, 0, 1, 1, 2])
    assert hscore(torch.ones(5, 3), y) == 0.0
    assert regularized_hscore(torch.full((5, 3), 2.5), y) == 0.0
    rng = np.random.default_rng(10)
    yy = np.array([0, 0, 0, 1, 1, 1, 2])  # class 2 has one sample
    f = rng.normal(size=(7, 3))
    assert hscore(_t(f), _t(yy)) == pytest.approx(_hscore_brute(f, yy), rel=REL)
    dup = np.concatenate([f, f])  # duplicated samples
    assert hscore(_t(dup), _t(np.concatenate([yy, yy]))) == pytest.approx(
        _hscore_brute(dup, np.concatenate([yy, yy])), rel=REL
    )


# ---------------------------------------------------------------- regularised H-score


def _ledoit_wolf_loops(f: np.ndarray) -> tuple[float, np.ndarray, float]:
    """Ledoit-Wolf 2004 with explicit loops over samples: (alpha, S, mu)."""
    n, d = f.shape
    mean = np.zeros(d)
    for row in f:
        mean += row / n
    x = [row - mean for row in f]
    s = np.zeros((d, d))
    for row in x:
        s += np.outer(row, row) / n
    mu = float(np.trace(s)) / d  # <S, I> with <A, B> = tr(A B^T) / d
    d2 = float(np.sum((s - mu * np.eye(d)) ** 2)) / d
    b2bar = 0.0
    for row in x:
        b2bar += float(np.sum((np.outer(row, row) - s) ** 2)) / d
    b2bar /= n * n
    b2 = min(b2bar, d2)
    alpha = 0.0 if b2 == 0.0 else b2 / d2
    return alpha, s, mu


def _regularized_brute(f: np.ndarray, y: np.ndarray) -> float:
    d = f.shape[1]
    alpha, s, mu = _ledoit_wolf_loops(f)
    cov_alpha = (1 - alpha) * s + alpha * mu * np.eye(d)
    cov_g = _cov(_class_mean_matrix(f, y))
    return float(np.trace(np.linalg.solve(cov_alpha, (1 - alpha) * cov_g)))


@pytest.mark.parametrize(("n", "d"), [(40, 6), (25, 60), (12, 12), (100, 20)])
def test_ledoit_wolf_matches_loops(n: int, d: int) -> None:
    rng = np.random.default_rng(n + 7 * d)
    f = rng.normal(size=(n, d)) * np.linspace(0.2, 3.0, d) + 2.0
    alpha = ledoit_wolf_shrinkage(_t(f))
    assert alpha == pytest.approx(_ledoit_wolf_loops(f)[0], rel=REL)
    assert 0.0 < alpha <= 1.0


@pytest.mark.parametrize(
    ("n", "d", "weights"),
    [(60, 8, [1, 1, 1]), (90, 12, [8, 3, 1, 1]), (30, 30, [2, 1, 1]), (14, 40, [1, 1, 1, 1])],
)
def test_regularized_hscore_matches_brute(n: int, d: int, weights: list[float]) -> None:
    rng = np.random.default_rng(n * 3 + d)
    y = _labels(rng, n, weights)
    f = _informative(rng, y, d) + 1.0
    got = regularized_hscore(_t(f), _t(y))
    assert got == pytest.approx(_regularized_brute(f, y), rel=REL)
    assert 0.0 <= got < hscore(_t(f), _t(y))


def test_regularized_hscore_does_not_saturate_when_n_lt_d() -> None:
    rng = np.random.default_rng(12)
    y = _labels(rng, 20, [1, 1, 1, 1])
    good = _informative(rng, y, 50, noise=0.3)
    bad = rng.normal(size=(20, 50))
    assert hscore(_t(good), _t(y)) == hscore(_t(bad), _t(y)) == pytest.approx(3.0)
    assert regularized_hscore(_t(good), _t(y)) > regularized_hscore(_t(bad), _t(y))


def test_regularized_hscore_zero_shrinkage_is_hscore() -> None:
    # D = 1: S is its own multiple of the identity, d^2 = 0 and alpha = 0.
    rng = np.random.default_rng(13)
    y = _labels(rng, 30, [1, 2])
    f = _informative(rng, y, 1)
    assert ledoit_wolf_shrinkage(_t(f)) == 0.0
    assert regularized_hscore(_t(f), _t(y)) == pytest.approx(hscore(_t(f), _t(y)), rel=1e-12)


def test_regularized_hscore_invariances() -> None:
    rng = np.random.default_rng(14)
    y = _labels(rng, 50, [2, 1, 1])
    f = _informative(rng, y, 9)
    base = regularized_hscore(_t(f), _t(y))
    q = _orthogonal(rng, 9)
    assert regularized_hscore(_t(3.0 * f @ q - 1.0), _t(y)) == pytest.approx(base, rel=1e-9)
    perm = rng.permutation(50)
    assert regularized_hscore(_t(f[perm]), _t(y[perm])) == pytest.approx(base, rel=1e-9)
    assert regularized_hscore(_t(f), _t(np.array([2, 0, 1])[y])) == pytest.approx(base, rel=1e-9)


# ------------------------------------------------------------------------------- GBC


def _gbc_brute(z: np.ndarray, y: np.ndarray, spherical: bool) -> float:
    """Explicit per-pair Bhattacharyya distances with full covariance matrices."""
    classes = np.unique(y)
    k = z.shape[1]
    floor = 1e-4 * float(np.mean(np.var(z, axis=0)))
    stats_: dict = {}
    for c in classes:
        zc = z[y == c]
        var = np.maximum(zc.var(axis=0), floor)  # population variance, floored
        if spherical:
            var = np.full(k, var.mean())
        stats_[c] = (zc.mean(axis=0), np.diag(var))
    total = 0.0
    for a in classes:
        for b in classes:
            if a == b:
                continue
            mu1, s1 = stats_[a]
            mu2, s2 = stats_[b]
            s = (s1 + s2) / 2
            dm = mu1 - mu2
            logdet = np.linalg.slogdet(s)[1]
            d_b = dm @ np.linalg.solve(s, dm) / 8 + 0.5 * (
                logdet - 0.5 * (np.linalg.slogdet(s1)[1] + np.linalg.slogdet(s2)[1])
            )
            total += math.exp(-d_b)
    return -total


@pytest.mark.parametrize("gaussian", ["diagonal", "spherical"])
@pytest.mark.parametrize(
    ("n", "d", "weights", "noise"),
    [(60, 5, [1, 1, 1], 1.0), (80, 9, [5, 2, 1, 1, 1], 0.6), (25, 3, [1, 1], 2.0)],
)
def test_gbc_matches_pairwise_loop(
    n: int, d: int, weights: list[float], noise: float, gaussian: str
) -> None:
    rng = np.random.default_rng(n + d)
    y = _labels(rng, n, weights)
    f = _informative(rng, y, d, noise) + 2.0
    got = gbc(_t(f), _t(y), pca_dim=None, gaussian=gaussian)
    assert got == pytest.approx(_gbc_brute(f - f.mean(axis=0), y, gaussian == "spherical"), rel=REL)
    c = len(weights)
    assert -c * (c - 1) <= got <= 0.0


def test_gbc_with_pca_matches_numpy_pca() -> None:
    rng = np.random.default_rng(21)
    y = _labels(rng, 150, [2, 1, 1, 1])
    f = _informative(rng, y, 20) * np.linspace(0.3, 3.0, 20)  # distinct variances
    fc = f - f.mean(axis=0)
    _, vec = np.linalg.eigh(fc.T @ fc)
    for k in (4, 20, 64):  # 64 > D: all D principal axes
        z = fc @ vec[:, ::-1][:, : min(k, 20)]
        for gaussian in ("diagonal", "spherical"):
            got = gbc(_t(f), _t(y), pca_dim=k, gaussian=gaussian)
            assert got == pytest.approx(_gbc_brute(z, y, gaussian == "spherical"), rel=REL)
    # N < D: the principal scores come from the N x N Gram
    y2 = _labels(rng, 12, [1, 1, 1])
    f2 = _informative(rng, y2, 30)
    fc2 = f2 - f2.mean(axis=0)
    lam, vec2 = np.linalg.eigh(fc2.T @ fc2)
    z2 = fc2 @ vec2[:, ::-1][:, :5]
    assert gbc(_t(f2), _t(y2), pca_dim=5) == pytest.approx(_gbc_brute(z2, y2, False), rel=REL)
    proj = pca_project(_t(f2), 5).numpy()
    assert np.abs(proj).sum(axis=0) == pytest.approx(np.abs(z2).sum(axis=0), rel=1e-8)


def test_gbc_hand_worked() -> None:
    # Two 1-D classes {0, 2} and {4, 6}: means 1 and 5, variances 1 (floor 5e-4 inactive).
    # D_B = (5 - 1)^2 / (8 * 1) + 0 = 2, both ordered pairs: GBC = -2 exp(-2).
    f = torch.tensor([[0.0], [2.0], [4.0], [6.0]])
    y = torch.tensor([0, 0, 1, 1])
    assert gbc(f, y, pca_dim=None) == pytest.approx(-2 * math.exp(-2), rel=1e-12)
    # Spherical, D = 3, equal means, variances 1 and 4: s = 2.5, and the log-det term
    # carries the dimension: D_B = 3/2 log 2.5 - 3/4 (log 1 + log 4).
    means = torch.zeros(2, 3, dtype=torch.float64)
    var = torch.tensor([[1.0] * 3, [4.0] * 3], dtype=torch.float64)
    expected = 1.5 * math.log(2.5) - 0.75 * math.log(4.0)
    dist = bhattacharyya_distances(means, var)
    assert float(dist[0, 1]) == pytest.approx(expected, rel=1e-12)
    assert float(dist[1, 0]) == pytest.approx(expected, rel=1e-12)
    assert float(dist[0, 0]) == pytest.approx(0.0, abs=1e-14)


def test_top_eigh_iterative_matches_dense(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(22)
    m, k = 300, 10
    x = rng.normal(size=(400, m)) * (1.0 / np.arange(1, m + 1) ** 0.4)
    a = x.T @ x
    lam, q = np.linalg.eigh(a)
    lam, q = lam[::-1], q[:, ::-1]
    monkeypatch.setattr(gbc_mod, "DENSE_EIGH_MAX", 16)  # force the subspace iteration
    vals, vecs = top_eigh(_t(a), k, seed=3)
    assert vals.numpy() == pytest.approx(lam[:k], rel=1e-9)
    cosines = np.abs(np.sum(vecs.numpy() * q[:, :k], axis=0))
    assert cosines == pytest.approx(np.ones(k), abs=1e-9)
    # GBC through the iterative PCA equals GBC through numpy's eigh
    y = _labels(rng, 300, [1] * 5)
    f = _informative(rng, y, 150) * np.linspace(0.2, 2.0, 150)
    got = gbc(_t(f), _t(y), pca_dim=8, seed=5)
    fc = f - f.mean(axis=0)
    _, vec = np.linalg.eigh(fc.T @ fc)
    assert got == pytest.approx(_gbc_brute(fc @ vec[:, ::-1][:, :8], y, False), rel=REL)
    # rank-deficient input: a rank-5 matrix of size 300, k = 10
    b = rng.normal(size=(m, 5))
    vals, _ = top_eigh(_t(b @ b.T), k)
    ref = np.linalg.eigvalsh(b @ b.T)[::-1][:k]
    assert np.abs(vals.numpy() - ref).max() <= 1e-9 * ref[0]


def test_gbc_invariances() -> None:
    rng = np.random.default_rng(23)
    y = _labels(rng, 90, [3, 2, 1, 1])
    f = _informative(rng, y, 6) * np.array([0.3, 0.6, 1.0, 1.5, 2.2, 3.0])
    base = gbc(_t(f), _t(y), pca_dim=None)
    assert gbc(_t(7.0 * f - 3.0), _t(y), pca_dim=None) == pytest.approx(base, rel=1e-9)
    perm = rng.permutation(90)
    assert gbc(_t(f[perm]), _t(y[perm]), pca_dim=None) == pytest.approx(base, rel=1e-9)
    relabel = _t(np.array([1, 3, 0, 2])[y])
    assert gbc(_t(f), relabel, pca_dim=None) == pytest.approx(base, rel=1e-9)
    q = _orthogonal(rng, 6)  # rotations: invariant once PCA picks the principal axes
    with_pca = gbc(_t(f), _t(y), pca_dim=6)
    assert gbc(_t(f @ q), _t(y), pca_dim=6) == pytest.approx(with_pca, rel=1e-8)
    sph = gbc(_t(f), _t(y), pca_dim=None, gaussian="spherical")
    assert gbc(_t(f @ q), _t(y), pca_dim=None, gaussian="spherical") == pytest.approx(
        sph, rel=1e-9
    )


def test_gbc_degenerate_inputs() -> None:
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    assert gbc(torch.full((6, 4), 3.0), y) == -6.0
    rng = np.random.default_rng(24)
    yy = np.array([0, 0, 0, 1, 1, 1, 2])  # one-sample class: variance floored
    f = rng.normal(size=(7, 3))
    got = gbc(_t(f), _t(yy), pca_dim=None)
    assert got == pytest.approx(_gbc_brute(f - f.mean(axis=0), yy, False), rel=REL)
    assert math.isfinite(gbc(_t(f[:, :1]), _t(yy)))  # D = 1
    assert math.isfinite(gbc(_t(rng.normal(size=(6, 100))), y))  # N < D
    with pytest.raises(ScoringError, match="gaussian"):
        gbc(_t(f), _t(yy), gaussian="full")
    with pytest.raises(ScoringError, match="pca_dim"):
        gbc(_t(f), _t(yy), pca_dim=0)


# ------------------------------------------------------------------------- TransRate


def _rate_full(z: np.ndarray, eps: float) -> float:
    """1/2 log det(I_D + Z^T Z / (n eps)) with the explicit D x D matrix."""
    n, d = z.shape
    sign, logdet = np.linalg.slogdet(np.eye(d) + z.T @ z / (n * eps))
    assert sign > 0
    return 0.5 * logdet


def _transrate_brute(f: np.ndarray, y: np.ndarray, eps: float = 1e-4) -> float:
    z = f - f.mean(axis=0)
    n = len(y)
    cond = sum((y == c).sum() / n * _rate_full(z[y == c], eps) for c in np.unique(y))
    return _rate_full(z, eps) - cond


@pytest.mark.parametrize(
    ("n", "d", "weights"),
    [(60, 5, [1, 1, 1]), (120, 10, [6, 3, 1]), (20, 35, [1, 1, 1, 1]), (40, 25, [4, 1])],
)
def test_transrate_matches_explicit_logdet(n: int, d: int, weights: list[float]) -> None:
    rng = np.random.default_rng(n * 2 + d)
    y = _labels(rng, n, weights)
    f = _informative(rng, y, d, 0.5) + 1.0
    for eps in (1e-4, 0.3):
        got = transrate(_t(f), _t(y), eps=eps)
        assert got == pytest.approx(_transrate_brute(f, y, eps), rel=REL)
        assert got >= 0.0
    assert coding_rate(_t(f - f.mean(axis=0))) == pytest.approx(
        _rate_full(f - f.mean(axis=0), 1e-4), rel=REL
    )


def test_transrate_hand_worked() -> None:
    # Z = (1,0), (-1,0) | (0,1), (0,-1): Z^T Z = 2 I, each class Z_c^T Z_c = diag(2, 0):
    # R(Z) = log(1 + 1/(2 eps)), R(Z_c) = 1/2 log(1 + 1/eps), weights 1/2.
    z = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    y = torch.tensor([0, 0, 1, 1])
    eps = 1e-4
    expected = math.log(1 + 1 / (2 * eps)) - 0.5 * math.log(1 + 1 / eps)
    assert transrate(z, y) == pytest.approx(expected, rel=1e-12)


def test_transrate_invariances_and_scale() -> None:
    rng = np.random.default_rng(31)
    y = _labels(rng, 50, [2, 2, 1])
    f = _informative(rng, y, 8)
    base = transrate(_t(f), _t(y))
    q = _orthogonal(rng, 8)
    assert transrate(_t(f @ q + 5.0), _t(y)) == pytest.approx(base, rel=1e-9)
    perm = rng.permutation(50)
    assert transrate(_t(f[perm]), _t(np.array([2, 0, 1])[y][perm])) == pytest.approx(
        base, rel=1e-9
    )
    # scaling the features by s is dividing eps by s^2 (not scale invariant)
    assert transrate(_t(10.0 * f), _t(y)) == pytest.approx(
        transrate(_t(f), _t(y), eps=1e-6), rel=1e-9
    )
    assert transrate(_t(10.0 * f), _t(y)) > base


def test_transrate_degenerate_inputs() -> None:
    y = torch.tensor([0, 0, 1, 1, 2])
    assert transrate(torch.full((5, 3), 0.1), y) == 0.0
    rng = np.random.default_rng(32)
    yy = np.array([0, 0, 0, 1, 1, 1, 2])  # one-sample class
    f = rng.normal(size=(7, 4))
    assert transrate(_t(f), _t(yy)) == pytest.approx(_transrate_brute(f, yy), rel=REL)
    assert transrate(_t(f[:, :1]), _t(yy)) == pytest.approx(
        _transrate_brute(f[:, :1], yy), rel=REL
    )  # D = 1
    dup = np.concatenate([f, f])
    assert transrate(_t(dup), _t(np.concatenate([yy, yy]))) == pytest.approx(
        _transrate_brute(dup, np.concatenate([yy, yy])), rel=REL
    )
    with pytest.raises(ScoringError, match="eps"):
        transrate(_t(f), _t(yy), eps=0.0)


# ------------------------------------------------------------------- feature sparsity


def _hoyer_loop(f: np.ndarray) -> float:
    n, d = f.shape
    total = 0.0
    for row in f:
        l1 = sum(abs(float(v)) for v in row)
        l2 = math.sqrt(sum(float(v) ** 2 for v in row))
        total += 1.0 if l2 == 0 else (math.sqrt(d) - l1 / l2) / (math.sqrt(d) - 1)
    return total / n


@pytest.mark.parametrize(("n", "d"), [(30, 16), (5, 200), (40, 2)])
def test_feature_sparsity_matches_loop(n: int, d: int) -> None:
    rng = np.random.default_rng(n + d)
    f = np.maximum(rng.normal(size=(n, d)) - 0.5, 0.0)  # ReLU-like, some exact zeros
    f[0] = 0.0  # an all-zero row
    assert feature_sparsity(_t(f)) == pytest.approx(_hoyer_loop(f), rel=REL)


def test_feature_sparsity_hand_worked_and_invariances() -> None:
    f = torch.tensor([[0.0, 0.0, 3.0, 0.0], [1.0, -1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    assert hoyer_sparsity(f).tolist() == pytest.approx([1.0, 0.0, 1.0], abs=1e-12)
    assert feature_sparsity(f) == pytest.approx(2 / 3, rel=1e-12)
    rng = np.random.default_rng(41)
    g = np.abs(rng.normal(size=(20, 10))) ** 3
    base = feature_sparsity(_t(g))
    row_scales = rng.uniform(0.1, 100.0, size=(20, 1))
    assert feature_sparsity(_t(g * row_scales)) == pytest.approx(base, rel=1e-12)
    assert feature_sparsity(_t(g[:, rng.permutation(10)] * -1.0)) == pytest.approx(base, rel=1e-12)
    assert feature_sparsity(_t(1e-200 * g)) == pytest.approx(base, rel=1e-12)
    assert feature_sparsity(_t(1e200 * g)) == pytest.approx(base, rel=1e-12)
    with pytest.raises(ScoringError, match="D >= 2"):
        feature_sparsity(torch.ones(5, 1))


# ----------------------------------------------------------------------------- random


def test_random_reproducible_and_label_free() -> None:
    rng = np.random.default_rng(51)
    f = _t(rng.normal(size=(30, 8)).astype(np.float32))
    value = random_score(f)
    assert 0.0 <= value < 1.0
    assert random_score(f.clone()) == value
    assert random_score(f.double()) == value  # enters as float32 bytes
    # independently: SHA-256 of the shape and the float32 bytes, four words with the seed
    digest = hashlib.sha256(b"30x8:float32:" + f.numpy().tobytes()).digest()
    words = np.frombuffer(digest, dtype="<u8").tolist()
    assert value == np.random.default_rng([0, *words]).random()
    # labels never enter: any labels, any numbering, any num_classes
    found = registered(MODULES)
    for labels, c in ((torch.zeros(30, dtype=torch.int64), 1), (torch.arange(30) % 3, 3)):
        assert found["random"].fn(ScoreInputs(labels=labels, num_classes=c, features=f)) == value
    # what does change it: the seed, the features, the row order (documented)
    assert random_score(f, seed=1) != value
    assert random_score(f + 1.0) != value
    assert random_score(f[torch.arange(29, -1, -1)]) != value


def test_random_values_look_uniform() -> None:
    rng = np.random.default_rng(52)
    values = [random_score(_t(rng.normal(size=(4, 3)))) for _ in range(300)]
    assert stats.kstest(values, "uniform").pvalue > 1e-3
    assert len(set(values)) == 300


def test_random_degenerate_inputs() -> None:
    for f in (torch.zeros(3, 4), torch.ones(1, 1), torch.arange(6).reshape(2, 3)):
        assert 0.0 <= random_score(f) < 1.0
    with pytest.raises(ScoringError, match="non-finite"):
        random_score(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(ScoringError, match="2-D"):
        random_score(torch.ones(4))


# ----------------------------------------------------------------------- properties


@pytest.mark.parametrize("seed", range(20))
def test_bounds_hold(seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    n, d, c = int(rng.integers(4, 31)), int(rng.integers(1, 13)), int(rng.integers(2, 5))
    y = _labels(rng, n, [1.0] * min(c, n))
    c = len(np.unique(y))
    f = _t(np.maximum(rng.normal(size=(n, d)) + rng.normal(size=(c, d))[y], 0.0))
    yt = _t(y)
    assert -1e-9 <= hscore(f, yt) <= c - 1 + 1e-9
    assert -1e-9 <= regularized_hscore(f, yt) <= c - 1 + 1e-9
    assert -c * (c - 1) - 1e-9 <= gbc(f, yt) <= 0.0
    assert transrate(f, yt) >= -1e-9
    if d >= 2:
        assert 0.0 <= feature_sparsity(f) <= 1.0


# ------------------------------------------------------------------------------ errors

LABELLED = [hscore, regularized_hscore, gbc, transrate]


@pytest.mark.parametrize("fn", LABELLED)
def test_labelled_scorers_reject_bad_input(fn) -> None:
    assert_rejects_bad_labelled_input(fn, float("inf"))
    f = torch.randn(6, 3, dtype=torch.float64)
    with pytest.raises(ScoringError, match="at least 2 samples"):
        fn(f[:1], torch.tensor([0]))
    with pytest.raises(ScoringError, match="2-D"):
        fn(torch.randn(6), torch.tensor([0, 1, 0, 1, 0, 1]))


@pytest.mark.parametrize("fn", LABELLED)
def test_absent_classes_are_ignored(fn) -> None:
    rng = np.random.default_rng(62)
    y = _labels(rng, 40, [1, 2])
    f = _t(np.maximum(_informative(rng, y, 5), 0.0))
    sparse_ids = _t(np.where(y == 1, 3, 0))  # classes 1, 2 and 4 absent
    assert fn(f, sparse_ids, 5) == pytest.approx(fn(f, _t(y)), rel=1e-12)


@pytest.mark.parametrize("fn", [feature_sparsity, random_score])
def test_label_free_scorers_reject_bad_input(fn) -> None:
    with pytest.raises(ScoringError, match="non-finite"):
        fn(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))
    with pytest.raises(ScoringError, match="2-D"):
        fn(torch.ones(2, 2, 2))
    with pytest.raises(ScoringError):
        fn(np.ones((2, 2)))


@pytest.mark.parametrize("fn", LABELLED + [feature_sparsity])
def test_float32_input(fn) -> None:
    rng = np.random.default_rng(61)
    y = _t(_labels(rng, 40, [1, 1, 2]))
    f32 = _t(_informative(rng, y.numpy(), 6).astype(np.float32))
    args = (f32,) if fn is feature_sparsity else (f32, y)
    ref_args = (f32.double(),) if fn is feature_sparsity else (f32.double(), y)
    got = fn(*args)
    assert isinstance(got, float)
    assert got == pytest.approx(fn(*ref_args), rel=1e-12)


# ------------------------------------------------------------------------ registration


def test_registration() -> None:
    found = registered(MODULES)
    assert set(found) == NAMES
    for scorer in found.values():
        assert set(scorer.needs) == {Need.FEATURES}
        assert scorer.summary and scorer.reference and scorer.cost
        assert scorer.pool_normalize is None
        assert scorer.raw == ""  # every one is "higher is better" as the literature reports


def test_scorer_fns_use_features_and_labels() -> None:
    rng = np.random.default_rng(71)
    y = _labels(rng, 40, [1, 1, 1])
    f = _t(np.maximum(_informative(rng, y, 6), 0.0))
    yt = _t(y)
    inputs = ScoreInputs(labels=yt, num_classes=3, features=f)
    found = registered(MODULES)
    assert found["hscore"].fn(inputs) == hscore(f, yt)
    assert found["hscore_reg"].fn(inputs) == regularized_hscore(f, yt)
    assert found["gbc"].fn(inputs) == gbc(f, yt)
    assert found["transrate"].fn(inputs) == transrate(f, yt)
    assert found["feature_sparsity"].fn(inputs) == feature_sparsity(f)
    assert found["random"].fn(inputs) == random_score(f)
    missing = ScoreInputs(labels=yt, num_classes=3, source_probs=torch.full((40, 2), 0.5))
    for name in NAMES:
        with pytest.raises(ScoringError, match="needs"):
            found[name].fn(missing)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_gpu_matches_cpu() -> None:
    rng = np.random.default_rng(81)
    y = _t(_labels(rng, 64, [2, 1, 1]))
    f = _t(np.maximum(_informative(rng, y.numpy(), 12), 0.0)).float()
    for fn in (hscore, regularized_hscore, gbc, transrate):
        assert fn(f.cuda(), y.cuda()) == pytest.approx(fn(f, y), rel=1e-9)
    assert feature_sparsity(f.cuda()) == pytest.approx(feature_sparsity(f), rel=1e-9)
    assert random_score(f.cuda()) == random_score(f)
