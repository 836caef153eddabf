"""Predicted fine-tuning accuracy (linft) against explicit numpy computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zoosel.errors import ScoringError
from zoosel.scorers import linft as linft_mod
from zoosel.scorers.linft import DEFAULT_LAMBDAS, linft_fit, predicted_accuracy
from zoosel.types import Need, ScoreInputs


def _data(n: int, d: int, c: int, seed: int, noise: float = 1.5, offset: float = 0.0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    rng.shuffle(y)
    means = rng.normal(size=(c, d))
    x = means[y] + noise * rng.normal(size=(n, d)) + offset
    return x, y


def _scaled(x: np.ndarray) -> np.ndarray:
    """Centred columns, trace(X X^T) = N: the documented preprocessing."""
    xc = x - x.mean(axis=0)
    return xc * np.sqrt(x.shape[0] / np.sum(xc * xc))


def _onehot(y: np.ndarray) -> np.ndarray:
    classes, inv = np.unique(y, return_inverse=True)
    out = np.zeros((y.size, classes.size))
    out[np.arange(y.size), inv] = 1.0
    return out


def _ridge_predict(x_train, y_train, x_test, lam):
    """Ridge with an unpenalised bias, solved directly on [1, X] (no centring tricks)."""
    z = np.hstack([np.ones((x_train.shape[0], 1)), x_train])
    penalty = lam * np.eye(z.shape[1])
    penalty[0, 0] = 0.0
    coef = np.linalg.solve(z.T @ z + penalty, z.T @ y_train)
    return np.hstack([np.ones((x_test.shape[0], 1)), x_test]) @ coef


def _explicit_gcv(xs: np.ndarray, yoh: np.ndarray, lam: float) -> float:
    n = xs.shape[0]
    k = xs @ xs.T
    h = np.ones((n, n)) / n + k @ np.linalg.inv(k + lam * np.eye(n))
    resid = (np.eye(n) - h) @ yoh
    return float(np.sum(resid**2) / n / (1 - np.trace(h) / n) ** 2)


def _explicit_loo(xs: np.ndarray, yoh: np.ndarray, lam: float) -> np.ndarray:
    """Each sample predicted by the ridge fitted without it (a loop of N fits)."""
    loo = np.empty_like(yoh)
    for i in range(len(xs)):
        keep = np.arange(len(xs)) != i
        loo[i] = _ridge_predict(xs[keep], yoh[keep], xs[i:i + 1], lam)[0]
    return loo

CASES = [(40, 6, 3, 0), (30, 60, 4, 1), (36, 36, 2, 2), (50, 12, 5, 3)]


@pytest.mark.parametrize(("n", "d", "c", "seed"), CASES)
def test_closed_form_loo_equals_explicit_loop(n: int, d: int, c: int, seed: int) -> None:
    x, y = _data(n, d, c, seed, offset=3.0)
    fit = linft_fit(torch.from_numpy(x), torch.from_numpy(y))
    xs, yoh = _scaled(x), _onehot(y)
    loo = _explicit_loo(xs, yoh, fit.lam)
    np.testing.assert_allclose(fit.loo_predictions, loo, rtol=1e-7, atol=1e-9)
    assert fit.accuracy == pytest.approx(float(np.mean(loo.argmax(1) == y)))
    assert 0.0 <= fit.accuracy <= 1.0


@pytest.mark.parametrize(("n", "d", "c", "seed"), CASES)
def test_gcv_picks_the_explicit_minimiser(n: int, d: int, c: int, seed: int) -> None:
    x, y = _data(n, d, c, seed)
    grid = np.logspace(-4, 3, 15)
    fit = linft_fit(torch.from_numpy(x), torch.from_numpy(y), lambdas=grid)
    xs, yoh = _scaled(x), _onehot(y)
    explicit = np.array([_explicit_gcv(xs, yoh, lam) for lam in grid])
    np.testing.assert_allclose(fit.gcv_curve, explicit, rtol=1e-7)
    assert fit.lam == grid[int(np.argmin(explicit))]
    assert fit.gcv == pytest.approx(float(explicit.min()), rel=1e-7)
    h_trace = 1 + np.trace(xs @ xs.T @ np.linalg.inv(xs @ xs.T + fit.lam * np.eye(n)))
    assert fit.dof == pytest.approx(h_trace, rel=1e-7)


@pytest.mark.parametrize(("n", "d", "c", "seed"), CASES)
def test_diagnostics_match_numpy(n: int, d: int, c: int, seed: int) -> None:
    x, y = _data(n, d, c, seed, offset=1.0)
    fit = linft_fit(torch.from_numpy(x), torch.from_numpy(y))
    xs = _scaled(x)
    k = xs @ xs.T
    assert np.trace(k) == pytest.approx(n)
    dy = _onehot(y) - _onehot(y).mean(axis=0)
    speed = np.trace(dy.T @ k @ dy) / np.sum(dy * dy)
    gen = np.trace(dy.T @ np.linalg.solve(k + fit.lam * np.eye(n), dy)) / n
    assert fit.training_speed == pytest.approx(speed, rel=1e-7)
    assert fit.generalization == pytest.approx(gen, rel=1e-7)


def test_separable_data_gives_accuracy_one() -> None:
    x, y = _data(60, 10, 4, 9, noise=0.05)
    assert predicted_accuracy(torch.from_numpy(x), torch.from_numpy(y)) == 1.0
    # also through the sketch-sized regime N < D
    x2, y2 = _data(20, 200, 4, 10, noise=0.05)
    assert predicted_accuracy(torch.from_numpy(x2), torch.from_numpy(y2)) == 1.0


def test_noise_is_near_chance_and_scale_free() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(80, 30))
    y = np.arange(80) % 4
    fit = linft_fit(torch.from_numpy(x), torch.from_numpy(y))
    assert 0.0 <= fit.accuracy <= 0.5
    scaled = linft_fit(torch.from_numpy(1e4 * x + 7.0), torch.from_numpy(y))
    assert scaled.accuracy == fit.accuracy
    assert scaled.lam == fit.lam
    np.testing.assert_allclose(scaled.loo_predictions, fit.loo_predictions, rtol=1e-6, atol=1e-9)


def test_default_grid_and_errors() -> None:
    assert DEFAULT_LAMBDAS.min() == pytest.approx(1e-6)
    assert DEFAULT_LAMBDAS.max() == pytest.approx(1e6)
    x, y = _data(20, 5, 2, 0)
    with pytest.raises(ScoringError, match="rows are equal"):
        predicted_accuracy(torch.ones(10, 4), torch.arange(10) % 2)
    with pytest.raises(ScoringError, match="positive"):
        linft_fit(torch.from_numpy(x), torch.from_numpy(y), lambdas=np.array([0.0, 1.0]))
    with pytest.raises(ScoringError, match="2 distinct"):
        predicted_accuracy(torch.from_numpy(x), torch.zeros(20, dtype=torch.int64))


def test_registered_scorers() -> None:
    seen = {}
    linft_mod.register_scorers(register=lambda s: seen.__setitem__(s.name, s))
    assert set(seen) == {"linft", "linft_grad"}
    assert seen["linft"].needs == frozenset({Need.FEATURES})
    assert seen["linft_grad"].needs == frozenset({Need.GRADIENT_SKETCH})
    x, y = _data(30, 8, 3, 5)
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y)
    expected = predicted_accuracy(xt, yt)
    assert seen["linft"].fn(ScoreInputs(labels=yt, num_classes=3, features=xt)) == expected
    assert seen["linft_grad"].fn(ScoreInputs(labels=yt, num_classes=3, gradient_sketch=xt)) == (
        expected
    )
    with pytest.raises(ScoringError):
        seen["linft_grad"].fn(ScoreInputs(labels=yt, num_classes=3, features=xt))


@pytest.mark.parametrize(("n", "d"), [(40, 6), (30, 60), (36, 36), (50, 12)])
def test_kernel_eigen_reconstructs_the_kernel_from_either_side(n: int, d: int) -> None:
    """Both routes (N x N kernel when N <= D, D x D Gram when N > D) against numpy's
    eigenvalues of the explicit N x N kernel."""
    x, _ = _data(n, d, 3, n + d, offset=2.0)
    xs = _scaled(x)
    u, e = linft_mod.kernel_eigen(torch.from_numpy(xs))
    u, e = u.numpy(), e.numpy()
    k = xs @ xs.T
    rank = min(n - 1, d)  # centred columns: the ones vector is in K's null space
    assert e.shape == (rank,)
    np.testing.assert_allclose(u.T @ u, np.eye(rank), atol=1e-10)
    np.testing.assert_allclose(u @ np.diag(e) @ u.T, k, atol=1e-10 * np.abs(k).max())
    np.testing.assert_allclose(np.sort(e), np.linalg.eigvalsh(k)[-rank:], rtol=1e-9)


@pytest.mark.parametrize(("n", "d"), [(48, 20), (20, 48)])
def test_rank_deficient_features_match_the_explicit_loop(n: int, d: int) -> None:
    """Dead (all-zero) and duplicated feature columns: K has fewer nonzero eigenvalues than
    min(N, D) on both routes; the closed form still equals the explicit leave-one-out fits."""
    x, y = _data(n, d, 4, 7, offset=1.0)
    dead = max(5, d - n // 2)
    x[:, :dead] = 0.0
    x[:, -4:] = x[:, -8:-4]
    rank = d - dead - 4
    assert rank < min(n - 1, d)
    assert linft_mod.kernel_eigen(torch.from_numpy(_scaled(x)))[1].numel() == rank
    grid = np.logspace(-3, 2, 11)
    fit = linft_fit(torch.from_numpy(x), torch.from_numpy(y), lambdas=grid)
    xs, yoh = _scaled(x), _onehot(y)
    explicit = np.array([_explicit_gcv(xs, yoh, lam) for lam in grid])
    np.testing.assert_allclose(fit.gcv_curve, explicit, rtol=1e-7)
    loo = _explicit_loo(xs, yoh, fit.lam)
    np.testing.assert_allclose(fit.loo_predictions, loo, rtol=1e-7, atol=1e-9)
    assert fit.accuracy == pytest.approx(float(np.mean(loo.argmax(1) == y)))


def test_gcv_at_tiny_ridges_matches_extended_precision() -> None:
    """N < D: the kernel is invertible on the centred labels, so the residual at a tiny
    ridge is ~lambda^2 and the GCV denominator ~lambda. Both are computed without
    cancellation; checked against a 40-digit evaluation of the defining formulas."""
    import mpmath

    n, d, c = 24, 48, 3
    x, y = _data(n, d, c, 11, offset=2.0)
    xs, yoh = _scaled(x), _onehot(y)
    grid = np.array([1e-10, 1e-8, 1e-6, 1e-3])
    fit = linft_fit(torch.from_numpy(xs), torch.from_numpy(y), lambdas=grid)
    with mpmath.workdps(40):
        xm = mpmath.matrix(xs.tolist())
        km = xm * xm.T
        ym = mpmath.matrix(yoh.tolist())
        expected = []
        for lam in grid.tolist():
            hat = mpmath.ones(n, n) / n + km * mpmath.inverse(km + mpmath.mpf(lam) * mpmath.eye(n))
            resid = (mpmath.eye(n) - hat) * ym
            trace = sum(hat[i, i] for i in range(n))
            energy = sum(resid[i, j] ** 2 for i in range(n) for j in range(c))
            expected.append(float(energy / n / (1 - trace / n) ** 2))
    np.testing.assert_allclose(fit.gcv_curve, expected, rtol=1e-8)
