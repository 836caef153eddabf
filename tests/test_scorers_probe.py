"""kNN accuracy and the linear probe, each against an independent computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.optimize
import torch
from scipy.spatial.distance import cosine as cosine_distance
from scorer_cases import labels as _labels
from scorer_cases import registered, registered_by_default
from scorer_cases import t as _t
from torch.utils._python_dispatch import TorchDispatchMode

from zoosel.errors import ScoringError
from zoosel.scorers import knn as knn_mod
from zoosel.scorers import linear_probe as probe_mod
from zoosel.scorers.knn import TIE_TOL, knn_accuracy, knn_credits, panel_rows
from zoosel.scorers.linear_probe import (
    fit_logistic,
    fold_count,
    linear_probe,
    linear_probe_accuracy,
    standardise,
    stratified_folds,
)
from zoosel.scorers.ridge_cv import (
    cholesky_lower,
    choose_route,
    peak_bytes,
    plan_ridge,
    ridge_folds,
)
from zoosel.types import Need, ScoreInputs

MODULES = {"knn": knn_mod, "linear_probe": probe_mod}


# tiny tensors: one thread is faster, and immune to oversubscribed machines
pytestmark = pytest.mark.usefixtures("one_torch_thread_per_test")


def _informative(rng: np.random.Generator, y: np.ndarray, d: int, noise: float = 0.7):
    means = rng.normal(size=(int(y.max()) + 1, d))
    return means[y] + noise * rng.normal(size=(y.size, d))


# =========================================================================== kNN


def _knn_reference(f: np.ndarray, y: np.ndarray, k: int) -> list[float]:
    """The module's rule, written as a double loop over samples with scipy's cosine."""
    n = len(y)
    k = min(k, n - 1)
    classes = range(int(y.max()) + 1)
    credits = []
    for i in range(n):
        sims = {}
        for j in range(n):
            if j == i:
                continue
            if not f[i].any() or not f[j].any():
                sims[j] = 0.0
            else:
                sims[j] = 1.0 - cosine_distance(f[i], f[j])
        t = sorted(sims.values(), reverse=True)[k - 1]
        closer = [j for j, s in sims.items() if s > t + TIE_TOL]
        tied = [j for j, s in sims.items() if abs(s - t) <= TIE_TOL]
        votes = dict.fromkeys(classes, 0.0)
        for j in closer:
            votes[int(y[j])] += 1.0
        for j in tied:
            votes[int(y[j])] += (k - len(closer)) / len(tied)
        top = max(votes.values())
        winners = [c for c, v in votes.items() if v >= top - 1e-9]
        credits.append((int(y[i]) in winners) / len(winners))
    return credits


def _knn_case(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if kind == "gaussian":  # N > D
        y = _labels(rng, 36, [2, 1, 1])
        return _informative(rng, y, 5, noise=1.0), y
    if kind == "n_less_than_d":
        y = _labels(rng, 12, [1, 1, 1])
        return _informative(rng, y, 30, noise=1.5), y
    if kind == "integer_grid":  # many exact ties, and all-zero rows
        y = _labels(rng, 40, [1, 1, 1, 1])
        return rng.integers(-1, 2, size=(40, 3)).astype(np.float64), y
    if kind == "duplicates":  # duplicated rows, with the same and with other labels
        y = _labels(rng, 30, [1, 1])
        f = rng.normal(size=(30, 4))
        f[15:] = f[:15]
        return f, y
    if kind == "constant":
        y = _labels(rng, 17, [3, 2, 1])
        return np.full((17, 6), 2.5), y
    if kind == "one_dim":  # similarities are +-1: ties everywhere
        y = _labels(rng, 25, [1, 1, 2])
        return rng.normal(size=(25, 1)), y
    if kind == "relu":
        y = _labels(rng, 40, [1, 1, 1, 1, 1])
        return np.maximum(_informative(rng, y, 12, noise=1.5), 0.0), y
    raise AssertionError(kind)


KNN_KINDS = ["gaussian", "n_less_than_d", "integer_grid", "duplicates", "constant",
             "one_dim", "relu"]


@pytest.mark.parametrize("triangle", [True, False])
@pytest.mark.parametrize("kind", KNN_KINDS)
def test_knn_matches_double_loop(kind: str, triangle: bool, monkeypatch) -> None:
    # both panel layouts: upper triangle (chosen for D >= 384) and rows against all rows
    monkeypatch.setattr(knn_mod, "_TRIANGLE_MIN_D", 0 if triangle else 10**9)
    rng = np.random.default_rng(abs(hash(kind)) % 2**32)
    f, y = _knn_case(kind, rng)
    for k in (1, 3, 5, 100):
        ref = _knn_reference(f, y, k)
        for block in (None, 1, 4):
            got = knn_credits(_t(f), _t(y), k=k, block_size=block)
            assert got.tolist() == pytest.approx(ref, abs=1e-12), (k, block)
        assert knn_accuracy(_t(f), _t(y), k=k) == pytest.approx(float(np.mean(ref)), abs=1e-12)


def test_knn_hand_worked() -> None:
    # Constant features, k = 1: every other sample ties. A class-0 sample sees two 0s and
    # two 1s (votes 1/2 : 1/2, a tie: credit 1/2); a class-1 sample sees three 0s and one
    # 1 (predicts 0: credit 0). Accuracy = (3 * 1/2 + 2 * 0) / 5 = 0.3.
    y = torch.tensor([0, 0, 0, 1, 1])
    assert knn_accuracy(torch.ones(5, 3), y, k=1) == pytest.approx(0.3, abs=1e-15)
    # Five directions in the plane, k = 1: 0 <-> 1 and 2 <-> 3 are mutual nearest
    # neighbours with equal labels; (-1, 0.05) is nearest to (0, 1), another class.
    f = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0], [-1.0, 0.05]])
    assert knn_accuracy(f, torch.tensor([0, 0, 1, 1, 0]), k=1) == pytest.approx(0.8)
    # With k = 3 the nearest three are: of 0: 1, 3, 2 (votes 0:1, 1:2); of 1: 0, 3, 2
    # (1:2); of 2: 3, 1, 4 (0:2); of 3: 2, 1, 0 (0:2); of 4: 2, 3, 1 (1:2). All wrong.
    credits = knn_credits(f, torch.tensor([0, 0, 1, 1, 0]), k=3)
    assert credits.tolist() == [0.0] * 5


def test_knn_duplicate_is_a_neighbour_not_self() -> None:
    # Rows 0 and 1 are identical with different labels: for k = 1 each is the other's
    # nearest neighbour (similarity 1), so both are wrong; only index i itself is skipped.
    f = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.1, 1.0]])
    y = torch.tensor([0, 1, 1, 1])
    assert knn_credits(f, y, k=1).tolist() == [0.0, 0.0, 1.0, 1.0]
    # Same labels: both right.
    assert knn_credits(f, torch.tensor([0, 0, 1, 1]), k=1).tolist() == [1.0] * 4


@pytest.mark.parametrize("triangle", [True, False])
def test_knn_blocks_agree_and_k_is_capped(triangle: bool, monkeypatch) -> None:
    monkeypatch.setattr(knn_mod, "_TRIANGLE_MIN_D", 0 if triangle else 10**9)
    rng = np.random.default_rng(3)
    y = _labels(rng, 300, [1] * 6)
    f = rng.integers(0, 3, size=(300, 4)).astype(np.float64)  # heavy ties
    base = knn_credits(_t(f), _t(y), k=7)
    for block in (1, 7, 64, 299, 300, 10_000):
        assert torch.equal(knn_credits(_t(f), _t(y), k=7, block_size=block), base)
    small = _t(f[:9]), _t(y[:9])
    assert knn_accuracy(*small, k=50) == knn_accuracy(*small, k=8)


class _LargestOutput(TorchDispatchMode):
    """Records the largest tensor any aten op produces."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("triangle", [True, False])
def test_knn_memory_is_block_times_n(triangle: bool, monkeypatch) -> None:
    monkeypatch.setattr(knn_mod, "_TRIANGLE_MIN_D", 0 if triangle else 10**9)
    rng = np.random.default_rng(5)
    n, block = 400, 16
    y = _labels(rng, n, [1, 1, 1])
    f = _t(rng.normal(size=(n, 6)))
    f[200:220] = f[0]  # tied rows take the recomputation path as well
    with _LargestOutput() as mode:
        got = knn_credits(f, _t(y), k=5, block_size=block)
    assert mode.largest <= block * n < n * n
    assert torch.equal(got, knn_credits(f, _t(y), k=5))
    assert panel_rows(100_000) * 100_000 * 8 <= 64 * 2**20 < 100_000**2 * 8


def test_knn_invariances() -> None:
    rng = np.random.default_rng(11)
    y = _labels(rng, 60, [3, 2, 1, 1])
    f = _informative(rng, y, 9, noise=1.2)
    base = knn_accuracy(_t(f), _t(y))
    assert 0 < base < 1
    perm = rng.permutation(60)
    assert knn_accuracy(_t(f[perm]), _t(y[perm])) == base
    relabel = np.array([2, 0, 3, 1])
    assert knn_accuracy(_t(f), _t(relabel[y])) == base
    for scale in (1e-6, 1e6, -3.0):
        assert knn_accuracy(_t(scale * f), _t(y)) == base
    assert knn_accuracy(_t(f * rng.uniform(0.1, 10, size=(60, 1))), _t(y)) == base
    q, _ = np.linalg.qr(rng.normal(size=(9, 9)))
    assert knn_accuracy(_t(f @ q), _t(y)) == base
    f32 = torch.from_numpy(f).to(torch.float32)
    assert knn_accuracy(f32, _t(y)) == knn_accuracy(f32.double(), _t(y))
    assert knn_accuracy(f32.half(), _t(y)) == knn_accuracy(f32.half().double(), _t(y))


def test_knn_rejects_bad_input() -> None:
    f = torch.randn(6, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    for k in (0, -1, 1.5, True):
        with pytest.raises(ScoringError, match="k must"):
            knn_accuracy(f, y, k=k)
    with pytest.raises(ScoringError, match="block_size"):
        knn_accuracy(f, y, block_size=0)
    with pytest.raises(ScoringError, match="2 distinct classes"):
        knn_accuracy(f, torch.zeros(6, dtype=torch.int64))
    bad = f.clone()
    bad[1, 2] = float("inf")
    with pytest.raises(ScoringError, match="non-finite"):
        knn_accuracy(bad, y)
    # a class with one sample is legal: it has no same-class neighbour
    assert knn_credits(f, torch.tensor([0, 0, 0, 0, 0, 1]))[5] == 0.0


# ================================================================== linear probe


def test_fold_count() -> None:
    assert fold_count(torch.tensor([0] * 10 + [1] * 10)) == 5
    assert fold_count(torch.tensor([0] * 10 + [1] * 3)) == 3
    assert fold_count(torch.tensor([0] * 10 + [1])) == 2
    assert fold_count(torch.tensor([0] * 10 + [1] * 10), folds=3) == 3
    with pytest.raises(ScoringError, match="folds"):
        fold_count(torch.tensor([0, 1]), folds=1)


def test_folds_are_stratified_and_seeded() -> None:
    rng = np.random.default_rng(2)
    y = _t(_labels(rng, 97, [8, 4, 2, 1, 1]))
    n_folds = fold_count(y)
    fold = stratified_folds(y, n_folds, seed=0)
    assert sorted(set(fold.tolist())) == list(range(n_folds))
    for cls in torch.unique(y).tolist():
        counts = torch.bincount(fold[y == cls], minlength=n_folds)
        assert int(counts.max() - counts.min()) <= 1
    sizes = torch.bincount(fold)
    assert int(sizes.max() - sizes.min()) <= 1
    assert torch.equal(stratified_folds(y, n_folds, seed=0), fold)  # reproducible
    other = stratified_folds(y, n_folds, seed=1)
    assert not torch.equal(other, fold)
    # relabelling the classes leaves the folds unchanged
    relabel = torch.tensor([4, 2, 0, 3, 1])
    assert torch.equal(stratified_folds(relabel[y], n_folds, seed=0), fold)


def _loss_autograd(x, y, weight, bias, l2):
    """Written independently of the module: F.cross_entropy + l2/2 |W|^2."""
    logits = x @ weight + bias
    return torch.nn.functional.cross_entropy(logits, y) + 0.5 * l2 * weight.pow(2).sum()


def _scipy_fit(x: np.ndarray, y: np.ndarray, k: int, l2: float) -> tuple[np.ndarray, np.ndarray]:
    """The same objective in numpy, minimised by scipy's L-BFGS-B to tight tolerance."""
    n, d = x.shape
    onehot = np.eye(k)[y]

    def fun(theta):
        w, b = theta[: d * k].reshape(d, k), theta[d * k:]
        z = x @ w + b
        zmax = z.max(axis=1, keepdims=True)
        lse = zmax[:, 0] + np.log(np.exp(z - zmax).sum(axis=1))
        loss = float(np.mean(lse - (z * onehot).sum(axis=1))) + 0.5 * l2 * float((w * w).sum())
        p = (np.exp(z - lse[:, None]) - onehot) / n
        return loss, np.concatenate([(x.T @ p + l2 * w).ravel(), p.sum(axis=0)])

    res = scipy.optimize.minimize(
        fun, np.zeros(d * k + k), jac=True, method="L-BFGS-B",
        options={"maxiter": 20000, "gtol": 1e-12, "ftol": 1e-15},
    )
    w, b = res.x[: d * k].reshape(d, k), res.x[d * k:]
    return w, b - b.mean()


@pytest.mark.parametrize(
    ("n", "d", "weights", "l2"),
    [
        (60, 8, [1, 1, 1], 1e-3),
        (24, 40, [1, 1, 1, 1], 1e-3),  # N < D, separable
        (80, 1, [2, 1], 1e-2),  # D = 1
        (90, 12, [5, 3, 1, 1, 1], 1e-1),
    ],
)
def test_fit_is_a_stationary_point(n: int, d: int, weights: list[float], l2: float) -> None:
    rng = np.random.default_rng(n + d)
    y = _labels(rng, n, weights)
    x = _informative(rng, y, d, noise=1.0)
    x[n // 2:] = x[: n - n // 2] if d == 1 else x[n // 2:]  # duplicates in the D = 1 case
    x = (x - x.mean(0)) / x.std(0)
    k = len(weights)
    for fast in (True, False):
        fit = fit_logistic(_t(x), _t(y), k, l2, gtol=1e-9, fast=fast)
        assert fit.converged and fit.grad_max <= 1e-9
        w = fit.weight.clone().requires_grad_(True)
        b = fit.bias.clone().requires_grad_(True)
        loss = _loss_autograd(_t(x), _t(y), w, b, l2)
        loss.backward()
        assert float(w.grad.abs().max()) <= 1e-8
        assert float(b.grad.abs().max()) <= 1e-8
        assert fit.loss == pytest.approx(loss.item(), rel=1e-12)
        # the same optimum as an independent optimiser (bias up to its free shift)
        w_ref, b_ref = _scipy_fit(x, y, k, l2)
        scale = max(1.0, float(np.abs(w_ref).max()))
        assert float(np.abs(fit.weight.numpy() - w_ref).max()) <= 1e-5 * scale
        bias = fit.bias.numpy() - fit.bias.numpy().mean()
        assert float(np.abs(bias - b_ref).max()) <= 1e-5 * scale
    # the default tolerance, checked in float64 by autograd
    fit = fit_logistic(_t(x), _t(y), k, l2)
    w = fit.weight.clone().requires_grad_(True)
    b = fit.bias.clone().requires_grad_(True)
    _loss_autograd(_t(x), _t(y), w, b, l2).backward()
    assert max(float(w.grad.abs().max()), float(b.grad.abs().max())) <= 1e-6


def _per_fold_accuracy(f: np.ndarray, y: np.ndarray, fold: np.ndarray, l2: float) -> float:
    """An explicit loop over folds: numpy standardisation, scipy fit, argmax."""
    correct = 0
    for k in sorted(set(fold.tolist())):
        train, test = fold != k, fold == k
        classes = np.unique(y[train])
        mu = f[train].mean(axis=0)
        sd = f[train].std(axis=0)
        keep = sd > 1e-10 * np.abs(f[train]).max(axis=0)
        sd_safe = np.where(keep, sd, 1.0)

        def std(a, mu=mu, sd_safe=sd_safe, keep=keep):
            return np.where(keep, (a - mu) / sd_safe, 0.0)

        index = {int(c): i for i, c in enumerate(classes)}
        y_train = np.array([index[int(c)] for c in y[train]])
        w, b = _scipy_fit(std(f[train]), y_train, len(classes), l2)
        pred = classes[np.argmax(std(f[test]) @ w + b, axis=1)]
        correct += int((pred == y[test]).sum())
    return correct / len(y)


@pytest.mark.parametrize(
    ("n", "d", "weights", "noise"),
    [
        (75, 6, [1, 1, 1], 1.5),
        (64, 10, [4, 2, 1, 1], 1.8),  # unbalanced
        (30, 45, [1, 1, 1], 3.0),  # N < D
        (41, 5, [10, 10, 1], 1.5),  # a class with one sample: 2 folds
    ],
)
def test_accuracy_equals_per_fold_loop(n: int, d: int, weights: list[float], noise: float):
    rng = np.random.default_rng(7 * n + d)
    y = _labels(rng, n, weights)
    if weights[-1] == 1 and n == 41:
        y = np.where(y == 2, 0, y)
        y[17] = 2  # exactly one sample of class 2
    f = 5.0 + 3.0 * _informative(rng, y, d, noise=noise)
    result = linear_probe(_t(f), _t(y), solver="logistic")
    fold = stratified_folds(_t(y), fold_count(_t(y)), seed=0).numpy()
    assert np.array_equal(result.folds.numpy(), fold)
    expected = _per_fold_accuracy(f, y, fold, probe_mod.DEFAULT_L2)
    assert 0 < expected < 1
    assert result.accuracy == pytest.approx(expected, abs=1e-12)
    assert linear_probe_accuracy(_t(f), _t(y), solver="logistic") == result.accuracy
    assert result.accuracy == pytest.approx(float(result.credit.mean()), abs=1e-15)
    if n == 41:
        assert fold_count(_t(y)) == 2 and float(result.credit[17]) == 0.0


def _ridge_lstsq(f: np.ndarray, y: np.ndarray, train: np.ndarray, l2: float):
    """One ridge fold from scratch: numpy standardisation and an augmented lstsq problem.

    Minimises |[z 1] [W; b] - Y|^2 + n l2 |W|^2 (J of the module times 2n) by appending
    the rows sqrt(n l2) [I 0] with zero targets; the bias column is not penalised.
    """
    x = f[train]
    n, d = x.shape
    mu, sd = x.mean(axis=0), x.std(axis=0)
    keep = sd > 1e-10 * np.abs(x).max(axis=0)

    def std(rows):
        return np.where(keep, (rows - mu) / np.where(keep, sd, 1.0), 0.0)

    classes = np.unique(y[train])
    targets = (y[train][:, None] == classes[None, :]).astype(np.float64)
    design = np.block([[std(x), np.ones((n, 1))],
                       [np.sqrt(n * l2) * np.eye(d), np.zeros((d, 1))]])
    rhs = np.vstack([targets, np.zeros((d, classes.size))])
    sol = np.linalg.lstsq(design, rhs, rcond=None)[0]
    return classes, sol[:-1], sol[-1], lambda rows: std(rows) @ sol[:-1] + sol[-1]


def _ridge_case(kind: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(len(kind))
    if kind == "n_greater_than_d":
        y = _labels(rng, 75, [1, 1, 1])
        return _informative(rng, y, 6, noise=1.5), y
    if kind == "n_less_than_d":
        y = _labels(rng, 30, [1, 1, 1])
        return _informative(rng, y, 45, noise=3.0), y
    if kind == "one_sample_class":  # 2 folds; class 2 is absent from one training fold
        y = np.where(_labels(rng, 41, [1, 1]) == 1, 1, 0)
        y[17] = 2
        return _informative(rng, y, 5, noise=1.5), y
    if kind == "sparse_columns":  # a column nonzero in one row: constant on some folds
        y = _labels(rng, 50, [2, 1, 1])
        f = np.maximum(_informative(rng, y, 8, noise=1.5), 0.0)
        f[:, 0] = 0.0
        f[3, 0] = 2.5
        f[:, 1] = -4.0
        return f, y
    if kind == "large_mean":  # mean 1e4 times the spread
        y = _labels(rng, 60, [1, 1, 1, 1])
        return 1e4 + _informative(rng, y, 7, noise=1.2), y
    raise AssertionError(kind)


@pytest.mark.parametrize("route", ["gram", "kernel"])
@pytest.mark.parametrize(
    "kind", ["n_greater_than_d", "n_less_than_d", "one_sample_class", "sparse_columns",
             "large_mean"])
@pytest.mark.parametrize("l2", [probe_mod.DEFAULT_RIDGE_L2, 1e-3])
def test_ridge_matches_per_fold_lstsq(kind: str, route: str, l2: float, monkeypatch) -> None:
    monkeypatch.setattr(probe_mod, "_RIDGE_ROUTE", route)
    f, y = _ridge_case(kind)
    result = linear_probe(_t(f), _t(y), l2=l2)
    fold = result.folds.numpy()
    credit = np.zeros(len(y))
    for k, fit in enumerate(result.fits):
        train, test = fold != k, fold == k
        classes, w, b, logits = _ridge_lstsq(f, y, train, l2)
        assert fit.route == route
        assert result.classes[k].tolist() == classes.tolist()
        assert float(np.abs(fit.weight.numpy() - w).max()) <= 1e-6
        assert float(np.abs(fit.bias.numpy() - b).max()) <= 1e-6
        credit[test] = classes[np.argmax(logits(f[test]), axis=1)] == y[test]
    assert 0 < credit.mean() < 1
    assert result.credit.tolist() == credit.tolist()
    assert result.accuracy == pytest.approx(float(credit.mean()), abs=1e-15)


def test_ridge_routes_agree() -> None:
    rng = np.random.default_rng(9)
    y = _labels(rng, 90, [3, 2, 1, 1])
    f = _t(np.maximum(_informative(rng, y, 20, noise=2.0), 0.0))
    folds = stratified_folds(_t(y), 5)
    gram = ridge_folds(f, _t(y), folds, 5, 0.1, rtol=1e-10, route="gram")
    kernel = ridge_folds(f, _t(y), folds, 5, 0.1, rtol=1e-10, route="kernel")
    for (a, test_a, logits_a), (b, test_b, logits_b) in zip(gram, kernel, strict=True):
        assert torch.equal(test_a, test_b) and torch.equal(a.classes, b.classes)
        assert float((a.weight - b.weight).abs().max()) <= 1e-10
        assert float((logits_a - logits_b).abs().max()) <= 1e-10


@pytest.mark.parametrize("d", [1, 7, 128, 129, 300])
def test_blocked_cholesky_matches_lapack(d: int) -> None:
    rng = np.random.default_rng(d)
    x = rng.normal(size=(d + 20, d))
    a = x.T @ x / (d + 20) + 0.1 * np.eye(d)
    garbage = np.triu(rng.normal(size=(d, d)) * 100, 1)  # the upper triangle is not read
    got = cholesky_lower(_t(np.tril(a) + garbage), block=32)
    assert np.abs(np.tril(got.numpy()) - np.linalg.cholesky(a)).max() <= 1e-12
    rhs = rng.normal(size=(d, 3))
    solved = torch.cholesky_solve(_t(rhs), got).numpy()
    assert np.abs(solved - np.linalg.solve(a, rhs)).max() <= 1e-10
    with pytest.raises(ScoringError, match="positive definite"):
        cholesky_lower(_t(a - 2 * np.eye(d) * np.linalg.eigvalsh(a).max()), block=32)


def test_ridge_route_follows_the_flop_count() -> None:
    # N = 2,500, D = 2,048: one Gram and 5 D x D factorisations beat 5 kernels of 2,000
    assert choose_route(2500, 2048, 5) == "gram"
    assert choose_route(20000, 2048, 5) == "gram"
    # few rows, many features: the n x n kernels are far cheaper
    assert choose_route(500, 2048, 5) == "kernel"
    assert choose_route(30, 45, 3) == "kernel"


def test_ridge_memory_plan_degrades_in_order() -> None:
    # Arithmetic only: nothing of these sizes is allocated.
    mb = 10**6
    # N = 20,000, D = 2,048, 2 folds at once: 6 D x D matrices kept (419 MB), or the
    # scatters streamed with 2 then 1 folds at once; the kernel route needs 2 GB
    big = {"n": 20000, "d": 2048, "folds": 5, "num_codes": 100, "workers": 2}
    kept = plan_ridge(**big, budget=math.inf)
    assert (kept.route, kept.workers, kept.stream) == ("gram", 2, False)
    assert 400 * mb < kept.peak < 450 * mb
    one = plan_ridge(**big, budget=kept.peak - 1)
    assert (one.route, one.workers, one.stream) == ("gram", 1, True)
    assert one.peak == peak_bytes("gram", True, 20000, 2048, 5, 100, 1) < 260 * mb
    with pytest.raises(ScoringError, match=r"239 MiB .*budget is 239 MiB.*solver='logistic'"):
        plan_ridge(**big, budget=one.peak - 1)
    # N = 1,600, D = 2,000: the kernel route by flops; fewer folds at once, then the
    # streamed Gram route when even one kernel does not fit
    small = {"n": 1600, "d": 2000, "folds": 5, "num_codes": 10, "workers": 2}
    assert choose_route(1600, 2000, 5) == "kernel"
    plans = [plan_ridge(**small, budget=b * mb) for b in (200, 150, 90)]
    assert [(p.route, p.workers, p.stream) for p in plans] == [
        ("kernel", 2, False), ("kernel", 1, False), ("gram", 1, True)]
    # a route the caller chose is kept
    with pytest.raises(ScoringError, match="needs at least 88 MiB .* budget is 86 MiB"):
        plan_ridge(**small, route="kernel", budget=90 * mb)


@pytest.mark.parametrize("threads", [1, 3])
def test_ridge_under_a_small_budget_gives_the_same_values(threads: int, monkeypatch) -> None:
    # A budget that only the streamed Gram route with one fold at once fits: the fold
    # scatters are computed again, so the fits equal the unconstrained ones bit for bit,
    # and numpy's lstsq to 1e-6.
    f, y = _ridge_case("n_greater_than_d")
    torch.set_num_threads(threads)
    free = linear_probe(_t(f), _t(y))
    tight = peak_bytes("gram", True, len(y), f.shape[1], 5, 3, 1)
    monkeypatch.setattr(probe_mod, "_RIDGE_BUDGET", tight)
    small = linear_probe(_t(f), _t(y))
    assert free.fits[0].plan.workers == threads and not free.fits[0].plan.stream
    assert (small.fits[0].plan.route, small.fits[0].plan.workers) == ("gram", 1)
    assert small.fits[0].plan.stream and small.fits[0].plan.peak <= tight
    assert torch.get_num_threads() == threads
    assert torch.equal(free.credit, small.credit)
    fold = small.folds.numpy()
    for k, (a, b) in enumerate(zip(free.fits, small.fits, strict=True)):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
        _, w, bias, _ = _ridge_lstsq(f, y, fold != k, probe_mod.DEFAULT_RIDGE_L2)
        assert float(np.abs(b.weight.numpy() - w).max()) <= 1e-6
        assert float(np.abs(b.bias.numpy() - bias).max()) <= 1e-6
    monkeypatch.setattr(probe_mod, "_RIDGE_BUDGET", tight - 1)
    with pytest.raises(ScoringError, match="solver='logistic'"):
        linear_probe(_t(f), _t(y))
    assert linear_probe(_t(f), _t(y), solver="logistic").accuracy > 0.5


def test_ridge_kernel_route_under_a_small_budget() -> None:
    f, y = _ridge_case("n_less_than_d")
    folds = stratified_folds(_t(y), 3)
    tight = peak_bytes("kernel", False, len(y), f.shape[1], 3, 3, 1)
    got = ridge_folds(_t(f), _t(y), folds, 3, 0.1, rtol=1e-10, workers=3, route="kernel",
                      budget=tight)
    for k, (fit, _, logits) in enumerate(got):
        assert (fit.plan.route, fit.plan.workers) == ("kernel", 1)
        train, test = folds.numpy() != k, folds.numpy() == k
        _, w, _, reference = _ridge_lstsq(f, y, train, 0.1)
        assert float(np.abs(fit.weight.numpy() - w).max()) <= 1e-6
        assert float(np.abs(logits.numpy() - reference(f[test])).max()) <= 1e-6


def test_solvers_rank_a_hand_made_case_identically() -> None:
    # Three candidate feature sets for the same 90 labels: class means 3, 1 and 0 (no
    # signal) times the same random means, plus the same unit noise. Both solvers must
    # order them alike, with clear gaps.
    rng = np.random.default_rng(30)
    y = np.repeat([0, 1, 2], 30)
    means, noise = rng.normal(size=(3, 5)), rng.normal(size=(90, 5))
    candidates = {sep: sep * means[y] + noise for sep in (3.0, 1.0, 0.0)}
    for solver in probe_mod.SOLVERS:
        acc = [linear_probe_accuracy(_t(f), _t(y), solver=solver)
               for f in candidates.values()]
        assert acc[0] > acc[1] + 0.1 and acc[1] > acc[2] + 0.1, (solver, acc)
        assert acc[0] >= 0.9 and acc[2] <= 0.5, (solver, acc)


def test_probe_subspace_start_does_not_change_the_result(monkeypatch) -> None:
    # D > 2 r triggers the principal-subspace start; disabling it must give the same fit.
    rng = np.random.default_rng(4)
    y = _labels(rng, 40, [1, 1])
    f = _t(np.maximum(_informative(rng, y, 120, noise=2.0), 0))
    with_start = linear_probe(f, _t(y), gtol=1e-10, solver="logistic")
    monkeypatch.setattr(probe_mod, "_SUBSPACE_RATIO", 10**9)
    without = linear_probe(f, _t(y), gtol=1e-10, solver="logistic")
    assert with_start.accuracy == without.accuracy
    for a, b in zip(with_start.fits, without.fits, strict=True):
        assert float((a.weight - b.weight).abs().max()) <= 1e-6


@pytest.mark.parametrize("solver", probe_mod.SOLVERS)
def test_probe_hand_worked_constant_features(solver: str) -> None:
    # Six of class 0 and three of class 1: 3 folds (two 0s and one 1 held out each time).
    # Every training fold has four 0s and two 1s: the bias-only fit predicts 0.
    y = torch.tensor([0, 1, 0, 0, 1, 0, 0, 1, 0])
    acc = linear_probe_accuracy(torch.ones(9, 4), y, solver=solver)
    assert acc == pytest.approx(6 / 9, abs=1e-15)
    # Two and two: 2 folds with one of each held out; the training folds tie: credit 1/2.
    result = linear_probe(torch.full((4, 3), -7.0), torch.tensor([0, 0, 1, 1]), solver=solver)
    assert result.accuracy == 0.5 and result.credit.tolist() == [0.5] * 4
    fit = result.fits[0]
    # logistic: softmax(b) = the frequencies, b summing to 0; ridge: b = the frequencies
    bias = [0.0, 0.0] if solver == "logistic" else [0.5, 0.5]
    assert fit.weight.abs().max() == 0 and fit.bias.tolist() == bias


@pytest.mark.parametrize("solver", probe_mod.SOLVERS)
def test_probe_degenerate_inputs_are_finite(solver: str) -> None:
    rng = np.random.default_rng(8)
    y = _labels(rng, 20, [1, 1])
    cases = {
        "n_less_than_d": rng.normal(size=(20, 50)),
        "one_dim": rng.normal(size=(20, 1)),
        "duplicates": np.repeat(rng.normal(size=(10, 3)), 2, axis=0),
        "some_constant_columns": np.concatenate([rng.normal(size=(20, 2)), np.ones((20, 3))], 1),
    }
    for name, f in cases.items():
        acc = linear_probe_accuracy(_t(f), _t(y), solver=solver)
        assert 0.0 <= acc <= 1.0 and math.isfinite(acc), name
    # two samples, two classes: each training fold holds one class, the other is missed
    two = linear_probe_accuracy(torch.randn(2, 3), torch.tensor([0, 1]), solver=solver)
    assert two == 0.0


@pytest.mark.parametrize("solver", probe_mod.SOLVERS)
def test_probe_invariances(solver: str) -> None:
    rng = np.random.default_rng(21)
    y = _labels(rng, 60, [2, 1, 1])
    f = _informative(rng, y, 7, noise=1.6)

    def acc(features, labels, **kw):
        return linear_probe_accuracy(_t(features), _t(labels), solver=solver, **kw)

    base = acc(f, y)
    assert 0 < base < 1
    relabel = np.array([1, 2, 0])
    assert acc(f, relabel[y]) == base
    for scale in (1e-6, 1e6):
        assert acc(scale * f, y) == base
    per_feature = rng.uniform(0.01, 100, size=7)
    assert acc(f * per_feature + 50.0, y) == base
    assert acc(f + 1e6, y) == base  # a mean far above the spread loses no digits
    f32 = torch.from_numpy(f).float()
    assert acc(f32.numpy(), y) == acc(f32.double().numpy(), y)
    # another seed draws other folds: still a valid accuracy
    assert 0 <= acc(f, y, seed=3) <= 1


def test_probe_rejects_bad_input() -> None:
    f = torch.randn(10, 3, dtype=torch.float64)
    y = torch.tensor([0, 1] * 5)
    for l2 in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ScoringError, match="l2"):
            linear_probe_accuracy(f, y, l2=l2)
    with pytest.raises(ScoringError, match="folds"):
        linear_probe_accuracy(f, y, folds=1)
    with pytest.raises(ScoringError, match="solver must be one of ridge, logistic"):
        linear_probe_accuracy(f, y, solver="svm")
    with pytest.raises(ScoringError, match="2 distinct classes"):
        linear_probe_accuracy(f, torch.zeros(10, dtype=torch.int64))
    bad = f.clone()
    bad[3, 0] = float("nan")
    with pytest.raises(ScoringError, match="non-finite"):
        linear_probe_accuracy(bad, y)


def test_standardise_drops_constant_columns() -> None:
    x = torch.tensor([[1.0, 5.0, 0.0], [3.0, 5.0, 0.0], [5.0, 5.0, 0.0]], dtype=torch.float64)
    mean, inv = standardise(x)
    assert mean.tolist() == [3.0, 5.0, 0.0]
    assert inv.tolist() == pytest.approx([1 / math.sqrt(8 / 3), 0.0, 0.0])


# ================================================================== registration


def test_registration_own_manager() -> None:
    found = registered(MODULES)
    assert set(found) == {"knn", "linear_probe"}
    assert found["linear_probe"].version == "2"  # 1: logistic regression by L-BFGS
    for scorer in found.values():
        assert set(scorer.needs) == {Need.FEATURES}
        assert scorer.summary and scorer.reference and scorer.cost
        assert scorer.pool_normalize is None and not scorer.raw


def test_scorer_fn_uses_declared_inputs() -> None:
    rng = np.random.default_rng(1)
    y = _labels(rng, 30, [1, 1, 1])
    f = _t(_informative(rng, y, 5))
    found = registered(MODULES)
    feats = ScoreInputs(labels=_t(y), num_classes=3, features=f)
    assert found["knn"].fn(feats) == knn_accuracy(f, _t(y))
    assert found["linear_probe"].fn(feats) == linear_probe_accuracy(f, _t(y))
    probs = ScoreInputs(labels=_t(y), num_classes=3, source_probs=torch.full((30, 2), 0.5))
    for name in ("knn", "linear_probe"):
        with pytest.raises(ScoringError, match="needs"):
            found[name].fn(probs)


def test_registration_default_plugins() -> None:
    found = registered_by_default()
    missing = {"knn", "linear_probe"} - set(found)
    if missing:
        pytest.skip(f"not registered in zoosel.plugins yet: {sorted(missing)}")
    for name in ("knn", "linear_probe"):
        assert set(found[name].needs) == {Need.FEATURES}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_gpu_matches_cpu() -> None:
    rng = np.random.default_rng(0)
    y = _labels(rng, 64, [2, 1, 1])
    f = torch.from_numpy(_informative(rng, y, 12, noise=1.5)).float()
    yt = _t(y)
    assert knn_accuracy(f.cuda(), yt.cuda(), block_size=5) == knn_accuracy(f, yt)
    for solver in probe_mod.SOLVERS:
        gpu = linear_probe_accuracy(f.cuda(), yt.cuda(), solver=solver)
        assert gpu == linear_probe_accuracy(f, yt, solver=solver)


@pytest.mark.parametrize("solver", probe_mod.SOLVERS)
def test_probe_folds_in_parallel_give_the_one_thread_result(solver: str) -> None:
    # T threads fit T folds at once, one thread each: bit-identical to a one-thread run,
    # and the caller's thread count is restored.
    # Large enough (N D > 32768) that torch would split reductions over threads.
    rng = np.random.default_rng(8)
    y = _labels(rng, 600, [2, 1, 1])
    f = _t(np.maximum(_informative(rng, y, 150, noise=3.0), 0))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = linear_probe(f, _t(y), solver=solver)
        torch.set_num_threads(3)
        three = linear_probe(f, _t(y), solver=solver)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    assert one.accuracy == three.accuracy
    assert torch.equal(one.credit, three.credit)
    for a, b in zip(one.fits, three.fits, strict=True):
        assert torch.equal(a.weight, b.weight)
        assert getattr(a, "iterations", 0) == getattr(b, "iterations", 0)


def test_knn_float32_screen_gives_the_float64_result(monkeypatch) -> None:
    # Near-ties finer than float32 (pairs 1e-9 apart, groups of rows at almost equal
    # angles): the screened credits equal those of float64 similarities throughout.
    rng = np.random.default_rng(12)
    n, d = 160, 24
    y = rng.integers(0, 4, n)
    base = rng.normal(size=(n // 2, d))
    f = np.concatenate([base, base + 1e-9 * rng.normal(size=base.shape)])
    f[:40] = f[0] + 1e-7 * rng.normal(size=(40, d))  # 40 rows within float32 noise
    ft, yt = _t(f), _t(y)
    f32 = ft.float()  # float32 input: candidate similarities from raw float64 dots
    screened = knn_credits(ft, yt, k=5, block_size=37)
    screened32 = knn_credits(f32, yt, k=5, block_size=37)
    monkeypatch.setattr(knn_mod, "_TRIANGLE_MIN_D", 0)
    assert torch.equal(knn_credits(ft, yt, k=5, block_size=37), screened)
    monkeypatch.setattr(knn_mod, "_screen_margin", lambda d, device: 0.0)
    exact = knn_credits(ft, yt, k=5, block_size=37)
    assert torch.equal(screened, exact)
    assert torch.equal(screened32, knn_credits(f32, yt, k=5, block_size=37))
    assert torch.equal(ft, _t(f))  # the input is left as it was
    # and the double loop with scipy's cosine agrees
    assert screened.tolist() == pytest.approx(_knn_reference(f, y, 5), abs=1e-12)


def test_knn_all_candidates_kept_with_ties() -> None:
    # N = 11, D = 1: similarities +-1 and every row keeps all N slots, one of them at -inf
    # (i itself or an empty slot): neither may vote.
    f = np.array([2.55, 0.89, 1.79, 1.50, 0.49, -0.02, 1.66, 0.89, 1.67, 1.69, 2.09])[:, None]
    y = np.array([0, 1, 0, 0, 0, 1, 0, 0, 1, 1, 1])
    for perm in (np.arange(11), np.array([9, 3, 6, 2, 4, 10, 0, 5, 8, 1, 7])):
        got = knn_credits(_t(f[perm]), _t(y[perm]), k=5)
        assert got.tolist() == pytest.approx(_knn_reference(f[perm], y[perm], 5), abs=1e-12)
