"""NLEEP, SFDA, PACTran, ETran and NCTI, each against an independent computation.

References are written here with numpy / scipy and explicit loops (per sample, per class,
per component), float64, compared to 1e-6 relative unless a test says otherwise.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.optimize
import torch
from scipy.special import logsumexp, softmax
from scipy.stats import multivariate_normal
from scorer_cases import assert_rejects_bad_labelled_input, labels, registered
from scorer_cases import t as _t

from zoosel.errors import ScoringError
from zoosel.scorers import etran as etran_mod
from zoosel.scorers import ncti as ncti_mod
from zoosel.scorers import nleep as nleep_mod
from zoosel.scorers import pactran as pactran_mod
from zoosel.scorers import sfda as sfda_mod
from zoosel.scorers.etran import (
    RELEASED_WEIGHTS,
    energy_score,
    etran_components,
    etran_pool_normalize,
    lda_score,
)
from zoosel.scorers.ncti import ncti_components, ncti_pool_normalize
from zoosel.scorers.nleep import (
    fit_diagonal_mixture,
    kmeans_plus_plus,
    nleep,
    nleep_fit,
    principal_projection,
)
from zoosel.scorers.pactran import pactran, pactran_fit
from zoosel.scorers.sfda import fisher_lda, principal_scores, sfda, sfda_fit
from zoosel.types import Need, ScoreInputs

REL = 1e-6
MODULES = {"nleep": nleep_mod, "sfda": sfda_mod, "pactran": pactran_mod,
           "etran": etran_mod, "ncti": ncti_mod}



def _labels(rng: np.random.Generator, n: int, weights: list[float]) -> np.ndarray:
    """Labels drawn with class ``weights``, every class present at least twice."""
    return labels(rng, n, weights, min_count=2)


def _informative(rng: np.random.Generator, y: np.ndarray, d: int, sep: float = 1.0,
                 noise: float = 1.0) -> np.ndarray:
    """Class means ``sep`` N(0, I) apart plus anisotropic Gaussian noise."""
    means = sep * rng.normal(size=(int(y.max()) + 1, d))
    scales = np.linspace(1.5, 0.3, d)
    return means[y] + noise * rng.normal(size=(y.size, d)) * scales


def _pca_brute(f: np.ndarray, k: int) -> np.ndarray:
    """First k principal-component scores from numpy's eigh of the covariance."""
    xc = f - f.mean(axis=0)
    evals, vecs = np.linalg.eigh(xc.T @ xc)
    order = np.argsort(evals)[::-1]
    return xc @ vecs[:, order[:k]]


def _orthogonal(rng: np.random.Generator, d: int) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return q


# ------------------------------------------------------------- Fisher / LDA reference


def _fisher_brute(z: np.ndarray, y: np.ndarray, lam: float | None = None):
    """Regularised LDA by explicit loops: per-class covariances, full S_w^-1 classifier,
    one sample at a time. Returns posteriors, lam, class means, S_w(lam), S_b."""
    n, d = z.shape
    classes = sorted(set(y.tolist()))
    mu = z.mean(axis=0)
    priors, means = [], []
    within = np.zeros((d, d))
    between = np.zeros((d, d))
    for c in classes:
        rows = z[y == c]
        m = rows.mean(axis=0)
        pi = len(rows) / n
        cov = np.zeros((d, d))
        for r in rows:
            cov += np.outer(r - m, r - m)
        within += pi * cov / len(rows)
        between += pi * np.outer(m - mu, m - mu)
        priors.append(pi)
        means.append(m)
    if lam is None:
        lam = max(math.exp(-5 * np.linalg.eigvalsh(within)[-1]), 1e-10)
    within_s = (1 - lam) * within + lam * np.trace(within) / d * np.eye(d)
    post = np.zeros((n, len(classes)))
    for i in range(n):
        logits = []
        for m, pi in zip(means, priors, strict=True):
            a = np.linalg.solve(within_s, m - mu)
            logits.append((z[i] - mu) @ a - 0.5 * (m - mu) @ a + math.log(pi))
        post[i] = softmax(np.asarray(logits))
    return post, lam, np.asarray(means), within_s, between


def _sfda_brute(f: np.ndarray, y: np.ndarray, dim: int) -> float:
    z = _pca_brute(f, dim)
    c = int(y.max()) + 1
    post, lam, means, _, _ = _fisher_brute(z, y)
    mixed = z.copy()
    for i in range(len(y)):
        soft = softmax(post[i])  # the softened confidence of the true class
        s = soft[y[i]]
        others = (means.sum(axis=0) - means[y[i]]) / (c - 1)
        mixed[i] = s * z[i] + (1 - s) * others
    post2, _, _, _, _ = _fisher_brute(mixed, y, lam)
    return float(np.mean([post2[i, y[i]] for i in range(len(y))]))


# ---------------------------------------------------------------------------- SFDA


@pytest.mark.parametrize(("n", "d", "weights"), [(60, 8, [1, 1, 1]), (80, 40, [3, 2, 1, 1]),
                                                 (30, 100, [1, 1])])
def test_generalised_eigenproblem_matches_scipy(n: int, d: int, weights: list[float]) -> None:
    rng = np.random.default_rng(n + d)
    y = _labels(rng, n, weights)
    z = _informative(rng, y, min(d, 12))
    fit = fisher_lda(_t(z), _t(y), len(weights))
    _, lam, _, within_s, between = _fisher_brute(z, y)
    assert fit.shrinkage == pytest.approx(lam, rel=REL)
    np.testing.assert_allclose(fit.within.numpy(), within_s, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fit.between.numpy(), between, rtol=1e-9, atol=1e-12)
    evals, vecs = scipy.linalg.eigh(between, within_s)  # the generalised problem
    order = np.argsort(evals)[::-1]
    k = len(weights) - 1
    assert fit.eigenvalues.numel() == k
    np.testing.assert_allclose(fit.eigenvalues.numpy(), evals[order[:k]], rtol=1e-8)
    for j in range(k):  # eigenvectors up to sign; both are S_w(lam)-normalised
        ours, ref = fit.directions[:, j].numpy(), vecs[:, order[j]]
        sign = np.sign(ours @ within_s @ ref)
        np.testing.assert_allclose(ours, sign * ref, rtol=1e-7, atol=1e-9)
    v = fit.directions.numpy()
    np.testing.assert_allclose(v.T @ within_s @ v, np.eye(k), atol=1e-9)


@pytest.mark.parametrize(("n", "d", "weights", "dim"), [
    (60, 6, [1, 1, 1], None),  # N > D, dims = min(N - C, N // C) = 20 > D: all of them
    (90, 30, [4, 2, 1], None),  # N > D, reduced to N // C = 30... = D
    (40, 120, [1, 1, 1, 1], None),  # N < D: reduced to 10 dims
    (50, 25, [2, 1], 7),  # explicit max_dim
])
def test_sfda_matches_per_sample_loops(n: int, d: int, weights: list[float], dim) -> None:
    rng = np.random.default_rng(7 * n + d)
    y = _labels(rng, n, weights)
    f = _informative(rng, y, d, sep=0.4, noise=1.0) + 3.0
    c = len(weights)
    expected_dim = dim if dim is not None else min(d, max(1, min(n - c, n // c)))
    fit = sfda_fit(_t(f), _t(y), max_dim=dim)
    assert fit.dim == expected_dim
    assert fit.pca.method == "exact"
    assert fit.score == pytest.approx(_sfda_brute(f, y, expected_dim), rel=REL)
    assert 0 < fit.score <= 1


def test_sfda_krylov_pca_matches_exact(monkeypatch) -> None:
    rng = np.random.default_rng(3)
    n, d, k = 500, 400, 6
    # a clear spectral gap after k components
    basis = _orthogonal(rng, d)[:, :k]
    f = rng.normal(size=(n, k)) * np.linspace(20, 10, k) @ basis.T + rng.normal(size=(n, d))
    xc = _t(f - f.mean(axis=0))
    exact = principal_scores(xc, k)
    monkeypatch.setattr(sfda_mod, "EXACT_PCA_MAX", 16)
    fast = principal_scores(xc, k, seed=5)
    assert exact.method == "exact" and fast.method == "krylov"
    np.testing.assert_allclose(fast.eigenvalues.numpy(), exact.eigenvalues.numpy(), rtol=1e-9)
    # the same subspace: projections onto the scores' column spaces agree
    def proj(s):
        q, _ = np.linalg.qr(s.numpy())
        return q @ q.T
    np.testing.assert_allclose(proj(fast.scores), proj(exact.scores), atol=1e-8)
    # N < D side of the Krylov path
    wide = _t(rng.normal(size=(200, k)) * np.linspace(20, 10, k) @ basis.T
              + rng.normal(size=(200, d)))
    wide = wide - wide.mean(dim=0)
    monkeypatch.setattr(sfda_mod, "EXACT_PCA_MAX", 512)
    ref = principal_scores(wide, k)
    monkeypatch.setattr(sfda_mod, "EXACT_PCA_MAX", 16)
    got = principal_scores(wide, k)
    np.testing.assert_allclose(got.eigenvalues.numpy(), ref.eigenvalues.numpy(), rtol=1e-9)
    np.testing.assert_allclose(proj(got.scores), proj(ref.scores), atol=1e-8)
    # and SFDA itself, on features with such a gap
    y = _labels(rng, n, [1, 1, 1])
    g = f + 2.0 * np.eye(3)[y] @ basis[:, :3].T
    assert sfda(_t(g), _t(y), max_dim=k) == pytest.approx(_sfda_brute(g, y, k), rel=REL)


def test_sfda_reduction_prevents_saturation() -> None:
    rng = np.random.default_rng(11)
    n, d, c = 120, 400, 4
    y = np.arange(n) % c
    noise = rng.normal(size=(n, d))  # no class information at all
    reduced = sfda(_t(noise), _t(y))
    unreduced = sfda(_t(noise), _t(y), max_dim=n - c)
    assert unreduced > 0.99  # the pitfall: in-sample Fisher fit in N - C dims
    assert reduced < 0.5  # chance is 1 / C = 0.25


def test_sfda_invariances_and_degenerate_cases() -> None:
    rng = np.random.default_rng(5)
    y = _labels(rng, 45, [2, 1, 1])
    f = _informative(rng, y, 6, sep=0.5)
    base = sfda(_t(f), _t(y))
    perm = rng.permutation(45)
    assert sfda(_t(f[perm]), _t(y[perm])) == pytest.approx(base, rel=1e-9)
    assert sfda(_t(f), _t(np.array([2, 0, 1])[y])) == pytest.approx(base, rel=1e-9)
    rot = _orthogonal(rng, 6)
    assert sfda(_t(f @ rot + 5.0), _t(y)) == pytest.approx(base, rel=1e-8)
    # a class with one sample, duplicated samples, N < D, D = 1: finite
    y1 = np.concatenate([y, [3]])
    f1 = np.concatenate([f, rng.normal(size=(1, 6))])
    assert 0 < sfda(_t(f1), _t(y1)) <= 1
    assert 0 < sfda(_t(np.concatenate([f, f])), _t(np.concatenate([y, y]))) <= 1
    assert 0 < sfda(_t(f[:, :1]), _t(y)) <= 1
    assert 0 < sfda(_t(rng.normal(size=(12, 50))), _t(np.arange(12) % 3)) <= 1
    # identical class means (S_b = 0): posteriors are the priors, SFDA = sum_c pi_c^2
    sym = np.concatenate([f - f.mean(axis=0), -(f - f.mean(axis=0))])
    ys = np.concatenate([y, y])
    pi = np.bincount(ys) / ys.size
    assert sfda(_t(sym), _t(ys)) == pytest.approx(float((pi * pi).sum()), rel=1e-9)
    with pytest.raises(ScoringError, match="constant"):
        sfda(torch.ones(10, 4), torch.arange(10) % 2)
    with pytest.raises(ScoringError, match="single sample"):
        sfda(torch.randn(3, 4, dtype=torch.float64), torch.tensor([0, 1, 2]))
    means_only = np.eye(3)[np.arange(9) % 3]
    with pytest.raises(ScoringError, match="within-class"):
        sfda(_t(means_only), _t(np.arange(9) % 3))


# --------------------------------------------------------------------------- NLEEP


def _leep_loop(theta: np.ndarray, y: np.ndarray) -> float:
    n, cs = theta.shape
    c = int(y.max()) + 1
    joint = np.zeros((c, cs))
    for i in range(n):
        for z in range(cs):
            joint[y[i], z] += theta[i, z] / n
    marg = joint.sum(axis=0)
    total = 0.0
    for i in range(n):
        eep = sum(joint[y[i], z] / marg[z] * theta[i, z] for z in range(cs) if marg[z] > 0)
        total += math.log(eep)
    return total / n


def test_nleep_em_monotone_and_posteriors_match_scipy() -> None:
    rng = np.random.default_rng(0)
    y = _labels(rng, 60, [1, 1, 1])
    f = _informative(rng, y, 8, sep=2.0)
    fit = nleep_fit(_t(f), _t(y), tol=1e-8, max_iter=60)
    mix = fit.mixture
    assert mix.weights.numel() == 15  # 5 components per class
    ll = np.asarray(mix.log_likelihood)
    assert len(ll) >= 3
    assert np.all(np.diff(ll) >= -1e-10 * np.abs(ll[1:]))  # EM never decreases L
    # posteriors at the fitted parameters, independently with scipy's log-densities
    z = fit.z.numpy()
    logp = np.stack([
        math.log(float(mix.weights[j])) + multivariate_normal.logpdf(
            z, mean=mix.means[j].numpy(), cov=np.diag(mix.variances[j].numpy()))
        for j in range(mix.weights.numel())
    ], axis=1)
    norm = logsumexp(logp, axis=1, keepdims=True)
    np.testing.assert_allclose(mix.posteriors.numpy(), np.exp(logp - norm), rtol=REL,
                               atol=1e-12)
    assert ll[-1] == pytest.approx(float(norm.mean()), rel=1e-9)
    assert float(mix.weights.sum()) == pytest.approx(1.0, rel=1e-12)
    assert bool((mix.variances >= mix.floor).all())
    # the final LEEP step against explicit loops
    assert fit.score == pytest.approx(_leep_loop(mix.posteriors.numpy(), y), rel=REL)
    assert fit.score <= 0


def test_nleep_m_step_matches_loops() -> None:
    rng = np.random.default_rng(2)
    z = _t(rng.normal(size=(30, 3)) * [3.0, 1.0, 0.5])
    start = fit_diagonal_mixture(z, 4, max_iter=0)  # posteriors at the k-means start
    one = fit_diagonal_mixture(z, 4, max_iter=1, tol=-1.0)
    r, x = start.posteriors.numpy(), z.numpy()
    for j in range(4):
        nj = sum(r[i, j] for i in range(30))
        mean = sum(r[i, j] * x[i] for i in range(30)) / nj
        var = sum(r[i, j] * (x[i] - mean) ** 2 for i in range(30)) / nj
        assert float(one.weights[j]) == pytest.approx(nj / 30, rel=1e-10)
        np.testing.assert_allclose(one.means[j].numpy(), mean, rtol=1e-9)
        np.testing.assert_allclose(one.variances[j].numpy(), np.maximum(var, one.floor),
                                   rtol=1e-8)
    # the start: each k-means cluster's own mean, variances and share of the samples
    labels, _ = _lloyd(x, x[kmeans_plus_plus(z, 4, seed=0).numpy()])
    for j in range(4):
        rows = x[labels == j]
        assert float(start.weights[j]) == pytest.approx(len(rows) / 30, rel=1e-12)
        np.testing.assert_allclose(start.means[j].numpy(), rows.mean(axis=0), rtol=1e-10)
        np.testing.assert_allclose(start.variances[j].numpy(),
                                   np.maximum(rows.var(axis=0), start.floor), rtol=1e-8)


def _lloyd(x: np.ndarray, centres: np.ndarray, tol: float = 1e-4, max_iter: int = 300):
    """Lloyd's k-means with explicit per-sample, per-centre distances (no empty clusters
    expected on the data used here)."""
    def assign(c):
        return np.array([int(np.argmin([((xi - cj) ** 2).sum() for cj in c])) for xi in x])

    threshold = tol * x.var(axis=0).mean()
    labels = assign(centres)
    for _ in range(max_iter):
        new = np.array([x[labels == j].mean(axis=0) for j in range(len(centres))])
        shift = ((new - centres) ** 2).sum()
        centres, previous = new, labels
        labels = assign(centres)
        if (labels == previous).all() or shift <= threshold:
            break
    return labels, centres


def _plain_em(x: np.ndarray, labels: np.ndarray, k: int, floor: float, tol: float,
              max_iter: int) -> np.ndarray:
    """Diagonal-covariance EM, one component at a time, started from hard labels; returns
    the posteriors of the final E-step."""
    n = len(x)
    resp = np.eye(k)[labels]
    prev = None
    for it in range(max_iter + 1):
        if it > 0 or prev is None:  # M-step (the first one from the hard labels)
            w, mu, var = [], [], []
            for j in range(k):
                nj = resp[:, j].sum()
                m = (resp[:, j, None] * x).sum(axis=0) / nj
                w.append(nj / n)
                mu.append(m)
                var.append(np.maximum((resp[:, j, None] * (x - m) ** 2).sum(axis=0) / nj,
                                      floor))
        logp = np.stack([
            math.log(w[j]) + multivariate_normal.logpdf(x, mean=mu[j], cov=np.diag(var[j]))
            for j in range(k)
        ], axis=1)
        norm = logsumexp(logp, axis=1, keepdims=True)
        resp = np.exp(logp - norm)
        ll = float(norm.mean())
        if prev is not None and ll - prev < tol:
            break
        prev = ll
    return resp


def test_nleep_matches_an_independent_kmeans_and_em() -> None:
    """k-means from the same k-means++ centres, then plain EM, all in numpy loops."""
    rng = np.random.default_rng(12)
    y = _labels(rng, 90, [1, 1, 1])
    f = _informative(rng, y, 6, sep=2.5)
    fit = nleep_fit(_t(f), _t(y), tol=1e-6, max_iter=200)
    z = fit.z.numpy()
    k = 15
    labels, _ = _lloyd(z, z[kmeans_plus_plus(fit.z, k, seed=0).numpy()])
    assert len(set(labels.tolist())) == k
    post = _plain_em(z, labels, k, fit.mixture.floor, 1e-6, 200)
    np.testing.assert_allclose(fit.mixture.posteriors.numpy(), post, rtol=1e-6, atol=1e-9)
    assert fit.score == pytest.approx(_leep_loop(post, y), rel=1e-6)


def test_nleep_components_cover_one_class_each() -> None:
    """ReLU features of 20 well-separated classes (20 samples each, 100 components): the
    components started from k-means stay inside one class each and NLEEP reads the labels
    off them. zoosel 0.1's start (k-means++ points with the global variance) let EM grow
    components over several classes here: 40 of them mixed, the largest held 29 samples,
    NLEEP -0.97."""
    rng = np.random.default_rng(0)
    y = np.arange(400) % 20
    rng.shuffle(y)
    f = np.maximum(rng.normal(size=(20, 256))[y] + 1.5 * rng.normal(size=(400, 256)), 0.0)
    fit = nleep_fit(_t(f), _t(y))
    hard = fit.mixture.posteriors.argmax(dim=1).numpy()
    mixed = sum(len(set(y[hard == j].tolist())) > 1 for j in np.unique(hard))
    assert mixed <= 5
    assert int(np.bincount(hard).max()) <= 20
    assert fit.score > -0.05


def test_nleep_principal_projection_matches_numpy() -> None:
    rng = np.random.default_rng(4)
    f = rng.normal(size=(40, 10)) * np.linspace(4, 0.5, 10)
    xc = f - f.mean(axis=0)
    ev = np.sort(np.linalg.eigvalsh(xc.T @ xc))[::-1]
    k = int(np.searchsorted(np.cumsum(ev) / ev.sum(), 0.8, side="right")) + 1
    got = principal_projection(_t(xc)).numpy()
    ref = _pca_brute(f, k)
    assert got.shape == (40, k)
    np.testing.assert_allclose(np.abs(got), np.abs(ref), rtol=1e-8, atol=1e-10)
    wide = rng.normal(size=(8, 30))  # N < D: the N x N Gram
    got = principal_projection(_t(wide - wide.mean(axis=0)), 0.999).numpy()
    ref = _pca_brute(wide, got.shape[1])
    np.testing.assert_allclose(np.abs(got), np.abs(ref), rtol=1e-7, atol=1e-9)


def test_nleep_seeded_and_invariances() -> None:
    rng = np.random.default_rng(8)
    y = _labels(rng, 50, [2, 1, 1])
    f = _informative(rng, y, 6, sep=1.5)
    a = nleep_fit(_t(f), _t(y), seed=3)
    b = nleep_fit(_t(f), _t(y), seed=3)
    assert a.score == b.score
    assert torch.equal(a.mixture.means, b.mixture.means)
    assert not torch.equal(kmeans_plus_plus(a.z, 15, seed=3), kmeans_plus_plus(a.z, 15, seed=4))
    assert nleep(_t(f), _t(np.array([1, 2, 0])[y]), seed=3) == pytest.approx(a.score, rel=1e-9)
    rot = _orthogonal(rng, 6)
    assert nleep(_t(7.5 * f @ rot + 2.0), _t(y), seed=3) == pytest.approx(a.score, rel=1e-6)


def test_nleep_degenerate_cases() -> None:
    rng = np.random.default_rng(9)
    y = _labels(rng, 24, [1, 1])
    f = _informative(rng, y, 5)
    for g, yy in [
        (np.concatenate([f, f]), np.concatenate([y, y])),  # duplicated samples
        (np.concatenate([f, f[:1]]), np.concatenate([y, [2]])),  # a class with one sample
        (f[:, :1], y),  # D = 1
        (rng.normal(size=(10, 40)), np.arange(10) % 2),  # N < D
        (np.repeat(f[:3], 4, axis=0), np.repeat(np.arange(3) % 2, 4)),  # 3 distinct rows
    ]:
        value = nleep(_t(g), _t(yy))
        assert math.isfinite(value) and value <= 1e-12
    with pytest.raises(ScoringError, match="constant"):
        nleep(torch.ones(8, 3), torch.arange(8) % 2)


# ------------------------------------------------------------------------- PACTran


def _independent_objective(x, y, w, b, reg):
    logits = x @ w + b
    ce = -torch.log_softmax(logits, dim=1)[torch.arange(len(y)), y].sum() / len(y)
    return ce + (w * w).sum() / (2 * reg)


def test_pactran_head_is_stationary() -> None:
    rng = np.random.default_rng(1)
    y = _labels(rng, 80, [2, 1, 1])
    f = _informative(rng, y, 10, sep=0.6) + 4.0
    fit = pactran_fit(_t(f), _t(y))
    x = _t(f - f.mean(axis=0))
    yt = torch.from_numpy(y)
    w = fit.weight.clone().requires_grad_(True)
    b = fit.bias.clone().requires_grad_(True)
    gw, gb = torch.autograd.grad(_independent_objective(x, yt, w, b, fit.reg), [w, b])
    w0 = torch.zeros_like(w, requires_grad=True)
    b0 = torch.zeros_like(b, requires_grad=True)
    g0 = torch.autograd.grad(_independent_objective(x, yt, w0, b0, fit.reg), [w0, b0])
    scale = max(float(g.abs().max()) for g in g0)
    assert max(float(gw.abs().max()), float(gb.abs().max())) <= 2e-6 * scale
    assert fit.grad_max <= 2e-6 * scale
    assert fit.reg == 80 and fit.prior_variance == pytest.approx(10.0)


def test_pactran_bound_term_by_term() -> None:
    rng = np.random.default_rng(2)
    n, d, k = 12, 3, 3
    y = np.arange(n) % k
    f = rng.normal(size=(n, d)) + 0.8 * np.eye(k)[y][:, :d]
    fit = pactran_fit(_t(f), _t(y))
    x = f - f.mean(axis=0)
    w, b = fit.weight.numpy(), fit.bias.numpy()
    risk = 0.0
    for i in range(n):
        logits = [sum(x[i, j] * w[j, c] for j in range(d)) + b[c] for c in range(k)]
        top = max(logits)
        risk += -(logits[y[i]] - top - math.log(sum(math.exp(v - top) for v in logits)))
    risk /= n
    reg = 1.0 * n  # lam s0^2
    s0 = 100.0 / d
    lam = reg / s0
    penalty = float((w * w).sum()) / (2 * reg)
    # tr(H) of the mean cross-entropy over (W, b), from autograd's full Hessian
    theta = torch.cat([fit.weight.reshape(-1), fit.bias]).clone()
    xt, yt = _t(x), torch.from_numpy(y)

    def mean_ce(t):
        return _independent_objective(xt, yt, t[: d * k].reshape(d, k), t[d * k:], math.inf)

    hess = torch.autograd.functional.hessian(mean_ce, theta)
    trace = float(hess.diagonal().sum())
    complexity = d * k / (2 * lam) * math.log(1 + reg * trace / (d * k))
    assert fit.risk == pytest.approx(risk, rel=1e-10)
    assert fit.penalty == pytest.approx(penalty, rel=1e-10)
    assert fit.trace_hessian == pytest.approx(trace, rel=1e-10)
    assert fit.complexity == pytest.approx(complexity, rel=1e-10)
    assert fit.bound == pytest.approx(risk + penalty + complexity, rel=1e-10)
    assert pactran(_t(f), _t(y)) == -fit.bound


def _scipy_head(x: np.ndarray, y: np.ndarray, k: int, reg: float):
    """The regularised softmax head by scipy's L-BFGS-B to a far tighter tolerance, with
    the gradient written out here."""
    n, d = x.shape
    onehot = np.eye(k)[y]

    def fun(theta):
        w, b = theta[: d * k].reshape(d, k), theta[d * k:]
        logits = x @ w + b
        log_p = logits - logsumexp(logits, axis=1, keepdims=True)
        g = (np.exp(log_p) - onehot) / n
        grad = np.concatenate([(x.T @ g + w / reg).ravel(), g.sum(0)])
        return -(onehot * log_p).sum() / n + (w * w).sum() / (2 * reg), grad

    res = scipy.optimize.minimize(fun, np.zeros(d * k + k), jac=True, method="L-BFGS-B",
                                  options={"maxiter": 20000, "gtol": 1e-13, "ftol": 1e-16})
    return res.x[: d * k].reshape(d, k), res.x[d * k:]


@pytest.mark.parametrize(("n", "d", "noise"), [(300, 12, 0.0), (300, 12, 0.5), (40, 60, 0.3),
                                               (200, 60, 0.3)])
def test_pactran_bound_matches_a_tight_independent_fit(n: int, d: int, noise: float) -> None:
    """zoosel's stopping rule (the bound stable to 1e-7 over 5 steps) leaves the bound
    within a few 1e-6 of its value at the exact minimiser (here scipy's, to a 1e-13
    gradient). Every route: principal axes (300 x 12), row space (40 x 60), the centred
    features as they are (200 x 60: D + 2 D^2 / N > 10 K)."""
    rng = np.random.default_rng(n + d)
    y = _labels(rng, n, [1, 1, 1, 1])
    f = _informative(rng, y, d, sep=1.0)
    flip = rng.random(n) < noise
    y = np.where(flip, rng.integers(0, 4, n), y)
    fit = pactran_fit(_t(f), _t(y))
    x = f - f.mean(axis=0)
    w, b = _scipy_head(x, y, 4, float(n))
    logits = x @ w + b
    p = softmax(logits, axis=1)
    risk = -np.log(p[np.arange(n), y]).mean()
    trace = (((x * x).sum(1) + 1) * (p * (1 - p)).sum(1)).sum() / n
    lam = n * d / 100.0
    bound = risk + (w * w).sum() / (2 * n) + d * 4 / (2 * lam) * math.log1p(n * trace / (d * 4))
    assert fit.bound == pytest.approx(bound, rel=5e-6)


def test_pactran_imbalanced_classes_match_a_tight_independent_fit() -> None:
    """Strongly imbalanced classes (biases far from 0 at the minimum: the block whose L-BFGS
    scaling is its own) on the centred features as they are (200 x 60: D + 2 D^2 / N > 10
    K), against scipy's fit to a 1e-13 gradient."""
    rng = np.random.default_rng(21)
    n, d, k = 200, 60, 4
    y = _labels(rng, n, [12, 4, 1, 1])
    f = _informative(rng, y, d, sep=0.8) + 2.0
    fit = pactran_fit(_t(f), _t(y))
    assert fit.z.shape == (n, d)
    x = f - f.mean(axis=0)
    w, b = _scipy_head(x, y, k, float(n))
    assert float(np.abs(b).max()) > 0.5  # the biases do move
    logits = x @ w + b
    p = softmax(logits, axis=1)
    risk = -np.log(p[np.arange(n), y]).mean()
    trace = (((x * x).sum(1) + 1) * (p * (1 - p)).sum(1)).sum() / n
    lam = n * d / 100.0
    bound = risk + (w * w).sum() / (2 * n) + d * k / (2 * lam) * math.log1p(n * trace / (d * k))
    assert fit.bound == pytest.approx(bound, rel=5e-6)


def test_pactran_lbfgs_direction_matches_dense_bfgs() -> None:
    """The two-loop direction with H0 = diag(scaling) times one factor on the weights and
    another on the biases equals -H g from dense BFGS updates of that H0; a block whose
    s^T y is not positive falls back to the whole pair's factor."""
    rng = np.random.default_rng(22)
    size, k = 9, 3
    history = pactran_mod._History(size, k, torch.device("cpu"))
    scaling = torch.from_numpy(rng.uniform(0.5, 2.0, size)).float()
    a = rng.normal(size=(size, size))
    hess = a @ a.T + np.eye(size)  # pairs from a convex quadratic: s^T y > 0
    pairs = []
    for _ in range(4):
        s = rng.normal(size=size)
        yv = hess @ s
        history.push(torch.from_numpy(s), torch.from_numpy(yv), float(s @ yv))
        pairs.append((s.astype(np.float32).astype(np.float64),
                      yv.astype(np.float32).astype(np.float64)))
    g = rng.normal(size=size)
    d = history.direction(torch.from_numpy(g), scaling).double().numpy()

    s_last, y_last = pairs[-1]
    sc = scaling.double().numpy()
    gw = s_last[:-k] @ y_last[:-k] / (y_last[:-k] @ (sc[:-k] * y_last[:-k]))
    gb = s_last[-k:] @ y_last[-k:] / (y_last[-k:] @ (sc[-k:] * y_last[-k:]))
    assert min(gw, gb) > 0
    h = np.diag(sc * np.r_[np.full(size - k, gw), np.full(k, gb)])
    eye = np.eye(size)
    for s, yv in pairs:
        rho = 1.0 / (s @ yv)
        h = (eye - rho * np.outer(s, yv)) @ h @ (eye - rho * np.outer(yv, s)) + rho * np.outer(
            s, s)
    np.testing.assert_allclose(d, -h @ g, rtol=1e-4, atol=1e-5 * np.abs(h @ g).max())

    # the biases' s^T y negative: one factor, s^T y / y^T diag(scaling) y of the whole pair
    s = np.r_[np.ones(size - k), 1.0, -1.0, 0.5]
    yv = np.r_[np.full(size - k, 2.0), -1.0, 1.0, 0.0]
    history.push(torch.from_numpy(s), torch.from_numpy(yv), float(s @ yv))
    whole = (s @ yv) / (yv @ (sc * yv))
    assert history._gammas(scaling) == pytest.approx((whole, whole), rel=1e-6)


def test_pactran_objective_with_an_own_class_probability_of_zero() -> None:
    """The line search's objective from the fused softmax equals the log-sum-exp form, also
    where a sample's own-class probability underflows to 0 (its logit 800 below the top)."""
    n, k = 5, 3
    rng = np.random.default_rng(23)
    z = _t(rng.normal(size=(n, 4)))
    y = torch.tensor([0, 1, 2, 0, 1])
    head = pactran_mod._Head(z, y, k, reg=7.0)
    u = rng.normal(size=(n, k)) * 3.0
    for logits in (u, u + np.where(np.arange(n * k).reshape(n, k) == 1, 800.0, 0.0)):
        value, p = head.at(_t(logits), ww=2.5)
        expected = float(np.mean(logsumexp(logits, axis=1) - logits[np.arange(n), y.numpy()]))
        assert value == pytest.approx(expected + 2.5 / (2 * 7.0), rel=1e-12)
        np.testing.assert_allclose(p.numpy(), softmax(logits, axis=1), rtol=1e-12, atol=1e-300)
    assert float(torch.softmax(_t(logits), dim=1)[0, 0]) == 0.0  # the fallback was taken


def test_pactran_row_space_fit_equals_full_fit() -> None:
    rng = np.random.default_rng(6)
    n, d = 15, 40  # N < D: fitted on the 14-dimensional row space
    y = _labels(rng, n, [1, 1, 1])
    f = _informative(rng, y, d, sep=0.5)
    fit = pactran_fit(_t(f), _t(y))
    assert fit.z.shape[1] == n - 1
    x = f - f.mean(axis=0)
    k, reg = 3, float(n)
    onehot = np.eye(k)[y]

    def objective(theta):
        w, b = theta[: d * k].reshape(d, k), theta[d * k:]
        logits = x @ w + b
        lse = logsumexp(logits, axis=1)
        p = np.exp(logits - lse[:, None])
        value = np.mean(lse - logits[np.arange(n), y]) + (w * w).sum() / (2 * reg)
        grad = np.concatenate([(x.T @ (p - onehot) / n + w / reg).ravel(),
                               (p - onehot).mean(axis=0)])
        return value, grad

    res = scipy.optimize.minimize(objective, np.zeros(d * k + k), jac=True, method="L-BFGS-B",
                                  options={"maxiter": 5000, "gtol": 1e-12, "ftol": 1e-15})
    w, b = res.x[: d * k].reshape(d, k), res.x[d * k:]
    logits = x @ w + b
    p = softmax(logits, axis=1)
    risk = float(np.mean(logsumexp(logits, axis=1) - logits[np.arange(n), y]))
    trace = float((((x * x).sum(axis=1) + 1) * (p * (1 - p)).sum(axis=1)).sum()) / n
    lam = reg / (100.0 / d)
    bound = risk + (w * w).sum() / (2 * reg) + d * k / (2 * lam) * math.log1p(
        reg * trace / (d * k))
    assert fit.bound == pytest.approx(bound, rel=1e-5)


def test_pactran_principal_axes_fit_equals_plain_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    """N >= D with small D: the head fitted on the principal axes (H0 scaled per axis) is
    the head fitted on the centred features as they are, returned in their coordinates."""
    rng = np.random.default_rng(8)
    y = _labels(rng, 150, [1, 1, 1, 1])
    f = _informative(rng, y, 8, sep=0.8) @ np.diag(np.geomspace(0.1, 10.0, 8))
    axes = pactran_fit(_t(f), _t(y))
    monkeypatch.setattr(pactran_mod, "_ROTATE_FACTOR", 0.0)
    plain = pactran_fit(_t(f), _t(y))
    assert torch.equal(axes.z, plain.z)  # both in the centred features' coordinates
    assert axes.bound == pytest.approx(plain.bound, rel=2e-6)
    scale = float(plain.weight.abs().max())
    assert float((axes.weight - plain.weight).abs().max()) <= 2e-3 * scale


def test_pactran_invariances_and_degenerate_cases() -> None:
    rng = np.random.default_rng(3)
    y = _labels(rng, 40, [1, 1, 2])
    f = _informative(rng, y, 5, sep=0.7)
    base = pactran(_t(f), _t(y))
    perm = rng.permutation(40)
    assert pactran(_t(f[perm]), _t(y[perm])) == pytest.approx(base, rel=1e-5)
    assert pactran(_t(f), _t(np.array([1, 2, 0])[y])) == pytest.approx(base, rel=1e-5)
    rot = _orthogonal(rng, 5)
    assert pactran(_t(f @ rot - 3.0), _t(y)) == pytest.approx(base, rel=1e-5)
    # constant features: the head is the bias, the risk the label entropy
    fit = pactran_fit(torch.ones(40, 5, dtype=torch.float64), _t(y))
    pi = np.bincount(y) / 40
    assert fit.risk == pytest.approx(float(-(pi * np.log(pi)).sum()), rel=1e-6)
    assert math.isfinite(fit.score)
    for g, yy in [(f[:, :1], y), (np.concatenate([f, f]), np.concatenate([y, y])),
                  (np.concatenate([f, f[:1]]), np.concatenate([y, [3]]))]:
        assert math.isfinite(pactran(_t(g), _t(yy)))
    # absent classes are left out
    shifted = np.where(y == 2, 4, y)
    assert pactran(_t(f), _t(shifted), 6) == pytest.approx(
        pactran(_t(f), _t(np.where(y == 2, 2, y))), rel=1e-9)


# -------------------------------------------------------------------------- ETran


def test_etran_components_match_loops() -> None:
    rng = np.random.default_rng(12)
    y = _labels(rng, 48, [1, 2, 1])
    f = np.maximum(_informative(rng, y, 9, sep=0.8), 0.0)
    parts = etran_components(_t(f), _t(y))
    energies = [math.log(sum(math.exp(v) for v in row)) for row in f]
    assert parts["energy"] == pytest.approx(sum(energies) / len(energies), rel=1e-12)
    lowest = sorted(energies)[: math.ceil(0.1 * 48)]
    assert energy_score(_t(f), 0.1) == pytest.approx(sum(lowest) / len(lowest), rel=1e-12)
    dim = min(48 - 3, 48 // 3)
    post, _, _, _, _ = _fisher_brute(_pca_brute(f, dim), y)
    expected = float(np.mean([post[i, y[i]] for i in range(48)]))
    assert parts["lda"] == pytest.approx(expected, rel=REL)
    assert lda_score(_t(f), _t(y)) == parts["lda"]


def test_etran_pool_hand_worked() -> None:
    pool = {
        "a": {"energy": 1.0, "lda": 0.5},
        "b": {"energy": 3.0, "lda": 0.7},
        "c": {"energy": 2.0, "lda": 0.9},
    }
    # energy -> a 0, b 1, c 0.5; lda -> a 0, b 0.5, c 1
    assert etran_pool_normalize(pool) == pytest.approx({"a": 0.0, "b": 1.5, "c": 1.5})
    released = etran_pool_normalize(pool, RELEASED_WEIGHTS)
    assert released == pytest.approx({"a": 0.0, "b": 0.15 + 0.425, "c": 0.075 + 0.85})
    assert etran_pool_normalize({"only": {"energy": 5.0, "lda": 0.3}}) == {"only": 0.0}
    tied = etran_pool_normalize({"x": {"energy": 2.0, "lda": 0.1},
                                 "y": {"energy": 2.0, "lda": 0.3}})
    assert tied == pytest.approx({"x": 0.0, "y": 1.0})
    with pytest.raises(ScoringError, match="lacks"):
        etran_pool_normalize({"a": {"energy": 1.0}})
    with pytest.raises(ScoringError, match="non-finite"):
        etran_pool_normalize({"a": {"energy": float("nan"), "lda": 0.1}})


# --------------------------------------------------------------------------- NCTI


def _ncti_brute(f: np.ndarray, y: np.ndarray) -> dict[str, float]:
    n = len(y)
    c = int(y.max()) + 1
    xc = f - f.mean(axis=0)
    evals = np.sort(np.linalg.eigvalsh(xc.T @ xc))[::-1]
    d = min(64, f.shape[1], n - c)
    z = _pca_brute(f, d)
    lam = max(math.exp(-evals[:32].sum() / (n - 1)), 1e-10)
    post, _, _, within_s, between = _fisher_brute(z, y, lam)
    gev, gvec = scipy.linalg.eigh(between, within_s)
    order = np.argsort(gev)[::-1]
    keep = [j for j in order[: c - 1] if gev[j] > 1e-10 * gev[order[0]]]
    projected = (z - z.mean(axis=0)) @ gvec[:, keep]
    vc = 0.0
    for cls in range(c):
        vc += np.linalg.norm(post[y == cls], ord="nuc")
    return {"seli": float(np.linalg.norm(projected, ord="nuc")),
            "ncc": float(np.mean([post[i, y[i]] for i in range(n)])),
            "vc": -math.log(vc)}


@pytest.mark.parametrize(("n", "d", "weights"), [
    (60, 12, [1, 1, 1]),  # C - 1 < d: a 2-dimensional Fisher space
    (90, 5, [1, 1, 1, 1, 1, 1, 2, 2]),  # C - 1 >= d: the whole (whitened) space
])
def test_ncti_components_match_loops(n: int, d: int, weights: list[float]) -> None:
    rng = np.random.default_rng(n + d)
    y = _labels(rng, n, weights)
    f = 0.2 * _informative(rng, y, d, sep=0.7)  # small variances: lam above its floor
    got = ncti_components(_t(f), _t(y))
    ref = _ncti_brute(f, y)
    for name in ("seli", "ncc", "vc"):
        assert got[name] == pytest.approx(ref[name], rel=REL), name


def test_ncti_pool_hand_worked() -> None:
    pool = {
        "a": {"seli": 10.0, "ncc": 0.2, "vc": -3.0},
        "b": {"seli": 30.0, "ncc": 0.6, "vc": -4.0},
        "c": {"seli": 20.0, "ncc": 0.4, "vc": -2.0},
    }
    # seli: a 0, b 1, c 0.5; ncc: a 0, b 1, c 0.5; vc: a 0.5, b 0, c 1
    assert ncti_pool_normalize(pool) == pytest.approx({"a": 0.5, "b": 2.0, "c": 2.0})
    assert ncti_pool_normalize({"solo": pool["a"]}) == {"solo": 0.0}


def test_ncti_degenerate_and_invariances() -> None:
    rng = np.random.default_rng(21)
    y = _labels(rng, 40, [1, 1])
    f = _informative(rng, y, 4)
    base = ncti_components(_t(f), _t(y))
    rot = _orthogonal(rng, 4)
    moved = ncti_components(_t(f @ rot + 1.0), _t(y))
    perm = rng.permutation(40)
    permuted = ncti_components(_t(f[perm]), _t(y[perm]))
    for name in base:
        assert moved[name] == pytest.approx(base[name], rel=1e-8)
        assert permuted[name] == pytest.approx(base[name], rel=1e-8)
    assert all(math.isfinite(v) for v in ncti_components(_t(f[:, :1]), _t(y)).values())
    assert all(math.isfinite(v) for v in ncti_components(
        _t(rng.normal(size=(9, 30))), _t(np.arange(9) % 3)).values())
    with pytest.raises(ScoringError, match="constant"):
        ncti_components(torch.zeros(6, 3), torch.arange(6) % 2)


# ------------------------------------------------------------------ errors, plugins


@pytest.mark.parametrize("fn", [nleep, sfda, pactran, etran_components, ncti_components])
def test_scorers_reject_bad_input(fn) -> None:
    assert_rejects_bad_labelled_input(fn, float("inf"), n=8)
    f = torch.randn(8, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    with pytest.raises(ScoringError, match="2-D"):
        fn(f[0], y[:1])


def test_registration() -> None:
    found = registered(MODULES)
    assert set(found) == set(MODULES)
    for scorer in found.values():
        assert set(scorer.needs) == {Need.FEATURES}
        assert scorer.summary and scorer.reference and scorer.cost
    assert found["etran"].pool_normalize is not None
    assert found["ncti"].pool_normalize is not None
    for name in ("nleep", "sfda", "pactran"):
        assert found[name].pool_normalize is None
    assert "negated" in found["pactran"].raw
    assert all(not found[name].raw for name in ("nleep", "sfda", "etran", "ncti"))


def test_scorer_fns_use_declared_inputs() -> None:
    rng = np.random.default_rng(13)
    y = _labels(rng, 36, [1, 1, 1])
    f = _t(_informative(rng, y, 5))
    yt = _t(y)
    found = registered(MODULES)
    inputs = ScoreInputs(labels=yt, num_classes=3, features=f)
    assert found["nleep"].fn(inputs) == nleep(f, yt)
    assert found["sfda"].fn(inputs) == sfda(f, yt)
    assert found["pactran"].fn(inputs) == pactran(f, yt)
    parts = {"m1": found["etran"].fn(inputs), "m2": etran_components(2 * f, yt)}
    assert set(parts["m1"]) == {"energy", "lda"}
    assert set(found["etran"].pool_normalize(parts).values()) <= {0.0, 1.0, 2.0}
    ncti_parts = found["ncti"].fn(inputs)
    assert set(ncti_parts) == {"seli", "ncc", "vc"}
    assert found["ncti"].pool_normalize({"m": ncti_parts}) == {"m": 0.0}
    empty = ScoreInputs(labels=yt, num_classes=3,
                        source_probs=torch.full((36, 4), 0.25, dtype=torch.float64))
    for name in MODULES:
        with pytest.raises(ScoringError, match="needs"):
            found[name].fn(empty)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_gpu_matches_cpu() -> None:
    rng = np.random.default_rng(0)
    y = _labels(rng, 64, [2, 1, 1])
    f = _t(_informative(rng, y, 12)).float()
    yt = _t(y)
    for fn in (nleep, sfda, pactran):
        assert fn(f.cuda(), yt.cuda()) == pytest.approx(fn(f, yt), rel=1e-6)
    for fn in (etran_components, ncti_components):
        got, ref = fn(f.cuda(), yt.cuda()), fn(f, yt)
        for name in ref:
            assert got[name] == pytest.approx(ref[name], rel=1e-6)
