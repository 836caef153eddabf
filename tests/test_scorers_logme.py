"""LogME's Gram and SVD routes and its 1-D maximisation, against independent computations.

The reference evidence is the dense log N(y; 0, F F^T / alpha + I / beta) from scipy; the
reference maximum comes from scipy's optimiser on that dense function, started from
several points. Both are independent of zoosel's spectrum and Newton steps.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize
import torch
from scipy.stats import multivariate_normal
from scorer_cases import labels

from zoosel.scorers import logme as logme_mod
from zoosel.scorers.logme import logme_fit


def _dense(f: np.ndarray, y: np.ndarray, log_a: float, log_b: float) -> float:
    n = y.size
    cov = f @ f.T * np.exp(-log_a) + np.eye(n) * np.exp(-log_b)
    return float(multivariate_normal.logpdf(y, mean=np.zeros(n), cov=cov)) / n


def _dense_max(f: np.ndarray, y: np.ndarray) -> float:
    """The dense evidence maximised over (log alpha, log beta) by Nelder-Mead, from a few
    starts (the best of them)."""
    best = -np.inf
    for start in ([0.0, 0.0], [5.0, 2.0], [-3.0, 4.0], [8.0, 8.0]):
        res = scipy.optimize.minimize(lambda p: -_dense(f, y, *p), start, method="Nelder-Mead",
                                      options={"xatol": 1e-9, "fatol": 1e-13, "maxiter": 4000})
        best = max(best, -res.fun)
    return best


def _data(seed: int, n: int, d: int, weights: list[float], sep: float = 1.0):
    rng = np.random.default_rng(seed)
    y = labels(rng, n, weights, min_count=2)
    means = sep * rng.normal(size=(len(weights), d))
    f = means[y] + rng.normal(size=(n, d)) * np.linspace(1.5, 0.3, d)
    return f, y


def _svd_route(monkeypatch: pytest.MonkeyPatch, f: np.ndarray, y: np.ndarray):
    with monkeypatch.context() as m:
        m.setattr(logme_mod, "GRAM_RCOND", np.inf)
        fit = logme_fit(torch.from_numpy(f), torch.from_numpy(y))
    assert fit.route == "svd"
    return fit


@pytest.mark.parametrize(("n", "d", "weights", "sep"), [
    (70, 12, [1, 1, 1], 1.0),  # N > D
    (18, 40, [1, 1, 1], 0.3),  # N < D, weak classes: interior optimum
    (15, 40, [1, 1, 1], 3.0),  # N < D, separable: beta -> inf for some classes
])
def test_logme_is_the_dense_maximum(n: int, d: int, weights: list[float], sep: float) -> None:
    f, y = _data(n + d, n, d, weights, sep)
    fit = logme_fit(torch.from_numpy(f), torch.from_numpy(y))
    assert fit.route == "gram" and fit.converged and fit.iterations < logme_mod.MAX_ITERATIONS
    for j, cls in enumerate(fit.classes.tolist()):
        onehot = (y == cls).astype(np.float64)
        la, lb = float(torch.log(fit.alpha[j])), float(torch.log(fit.beta[j]))
        value = _dense(f, onehot, la, lb)
        assert float(fit.evidence[j]) == pytest.approx(value, rel=1e-6, abs=1e-9)
        # no higher evidence anywhere: the global maximum of an independent optimiser
        assert value >= _dense_max(f, onehot) - 1e-9 * max(1.0, abs(value))
        # stationary where the optimum is interior: central differences vanish
        h = 1e-4
        ga = (_dense(f, onehot, la + h, lb) - _dense(f, onehot, la - h, lb)) / (2 * h)
        gb = (_dense(f, onehot, la, lb + h) - _dense(f, onehot, la, lb - h)) / (2 * h)
        if float(fit.beta[j]) * float(fit.alpha[j]) ** -1 < 1e10:
            assert abs(ga) < 1e-7 and abs(gb) < 1e-7


@pytest.mark.parametrize(("n", "d"), [(80, 20), (20, 60)])
def test_logme_gram_route_equals_svd_route(monkeypatch: pytest.MonkeyPatch, n: int,
                                           d: int) -> None:
    f, y = _data(3, n, d, [2, 1, 1, 1])
    gram = logme_fit(torch.from_numpy(f), torch.from_numpy(y))
    svd = _svd_route(monkeypatch, f, y)
    assert gram.route == "gram" and gram.rank == svd.rank == min(n, d)
    np.testing.assert_allclose(gram.evidence.numpy(), svd.evidence.numpy(), rtol=1e-9)
    np.testing.assert_allclose(gram.alpha.numpy(), svd.alpha.numpy(), rtol=1e-6)


def test_logme_gram_guard_falls_back_to_svd(monkeypatch: pytest.MonkeyPatch) -> None:
    f, y = _data(5, 60, 10, [1, 1, 1])
    yt = torch.from_numpy(y)
    scaled = f * np.r_[np.ones(9), 1e-5]  # cond(F) ~ 1e5: the Gram would lose digits
    fit = logme_fit(torch.from_numpy(scaled), yt)
    assert fit.route == "svd"
    for j, cls in enumerate(fit.classes.tolist()):
        value = _dense(scaled, (y == cls).astype(np.float64), float(torch.log(fit.alpha[j])),
                       float(torch.log(fit.beta[j])))
        assert float(fit.evidence[j]) == pytest.approx(value, rel=1e-6)
    twin = np.concatenate([f, f[:, :2]], axis=1)  # rank 10 < D = 12
    assert logme_fit(torch.from_numpy(twin), yt).route == "svd"
    dead = np.concatenate([f, np.zeros((60, 3))], axis=1)  # dead units are dropped exactly
    fit = logme_fit(torch.from_numpy(dead), yt)
    assert fit.route == "gram" and fit.rank == 10
    assert fit.score == pytest.approx(_svd_route(monkeypatch, f, y).score, rel=1e-10)


def test_logme_labels_inside_column_space(monkeypatch: pytest.MonkeyPatch) -> None:
    """y almost in the column space: |y|^2 - |z|^2 would cancel; the residual is used."""
    rng = np.random.default_rng(7)
    y = np.arange(40) % 4
    f = np.concatenate([np.eye(4)[y] + 1e-4 * rng.normal(size=(40, 4)),
                        rng.normal(size=(40, 6))], axis=1)
    gram = logme_fit(torch.from_numpy(f), torch.from_numpy(y))
    assert gram.route == "gram"
    svd = _svd_route(monkeypatch, f, y)
    np.testing.assert_allclose(gram.evidence.numpy(), svd.evidence.numpy(), rtol=1e-7)


def test_logme_n_less_than_d_converges_in_few_steps() -> None:
    """Where MacKay's fixed point needs hundreds of steps (N < D), Newton needs a few."""
    f, y = _data(0, 30, 200, [1, 1, 1], 0.1)
    fit = logme_fit(torch.from_numpy(f), torch.from_numpy(y))
    assert fit.converged and fit.iterations <= 20
    assert bool((fit.beta / fit.alpha < 1e10).all())  # every optimum is interior
    # MacKay's iteration from the returned point stays there: it is its fixed point
    ft = torch.from_numpy(f)
    s2 = torch.linalg.svdvals(ft) ** 2
    u, _, _ = torch.linalg.svd(ft, full_matrices=False)
    for j, cls in enumerate(fit.classes.tolist()):
        z2 = (u.T @ torch.from_numpy((y == cls).astype(np.float64))) ** 2
        a, b = float(fit.alpha[j]), float(fit.beta[j])
        denom = a + b * s2
        gamma = float((b * s2 / denom).sum())
        m2 = float(((b / denom) ** 2 * s2 * z2).sum())
        r2 = float(((a / denom) ** 2 * z2).sum())
        assert gamma / m2 == pytest.approx(a, rel=1e-7)
        assert (30 - gamma) / r2 == pytest.approx(b, rel=1e-7)
