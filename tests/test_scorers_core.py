"""LFC, LogME, LEEP and NCE, each against an independent computation (float64, 1e-6 rel)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from scorer_cases import assert_rejects_bad_labelled_input, registered, registered_by_default
from scorer_cases import labels as _labels

from zoosel.errors import ScoringError
from zoosel.scorers import leep as leep_mod
from zoosel.scorers import lfc as lfc_mod
from zoosel.scorers import logme as logme_mod
from zoosel.scorers import nce as nce_mod
from zoosel.scorers.leep import leep
from zoosel.scorers.lfc import kernel_label_correlation, label_feature_correlation
from zoosel.scorers.logme import logme, logme_fit
from zoosel.scorers.nce import nce, negative_conditional_entropy
from zoosel.types import Need, ScoreInputs

REL = 1e-6
MODULES = {"lfc": lfc_mod, "logme": logme_mod, "leep": leep_mod, "nce": nce_mod}
NEEDS = {
    "lfc": {Need.FEATURES},
    "logme": {Need.FEATURES},
    "leep": {Need.SOURCE_PROBS},
    "nce": {Need.SOURCE_PROBS},
}


def _informative(rng: np.random.Generator, y: np.ndarray, d: int, noise: float = 0.7):
    """Features whose class means differ, plus Gaussian noise."""
    means = rng.normal(size=(int(y.max()) + 1, d))
    return means[y] + noise * rng.normal(size=(y.size, d))


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------- LFC


def _lfc_brute(f: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of the explicit N x N matrices (one global mean each)."""
    theta = f @ f.T
    k = np.where(y[:, None] == y[None, :], 1.0, -1.0)
    return float(np.corrcoef(theta.ravel(), k.ravel())[0, 1])


@pytest.mark.parametrize(
    ("n", "d", "weights", "offset"),
    [
        (40, 6, [1, 1, 1], 0.0),  # N > D, balanced
        (60, 9, [10, 3, 1, 1], 2.0),  # N > D, unbalanced, features with a large mean
        (12, 30, [1, 1, 1, 1], 0.0),  # N < D
        (15, 40, [5, 1], 1.0),  # N < D, 2 unbalanced classes
        (70, 20, [1] * 7, 5.0),  # 7 classes, strongly offset (ReLU-like) features
        (25, 25, [3, 2, 1], 0.0),  # N == D
    ],
)
def test_lfc_matches_brute_force(n: int, d: int, weights: list[float], offset: float) -> None:
    rng = np.random.default_rng(n * 1000 + d)
    y = _labels(rng, n, weights)
    f = _informative(rng, y, d) + offset
    got = label_feature_correlation(torch.from_numpy(f), torch.from_numpy(y))
    assert got == pytest.approx(_lfc_brute(f, y), rel=REL)
    # pure noise features too (correlation near 0: compare absolutely at float64 precision)
    g = rng.normal(size=(n, d))
    got = kernel_label_correlation(torch.from_numpy(g), torch.from_numpy(y))
    assert got == pytest.approx(_lfc_brute(g, y), rel=REL, abs=1e-12)


def test_lfc_hand_worked() -> None:
    # f = (1, 1, 1, -1), y = (0, 0, 1, 1). Theta = f f^T has ten +1 and six -1 entries,
    # mean 4/16 = 1/4, variance 1 - 1/16 = 15/16. K_Y has eight +1 and eight -1: mean 0,
    # variance 1. Theta and K_Y agree on 10 entries and disagree on 6, so
    # mean(Theta K_Y) = 4/16 and the covariance is 1/4 - (1/4)(0) = 1/4.
    # Pearson = (1/4) / sqrt(15/16 * 1) = 1/sqrt(15).
    f = torch.tensor([[1.0], [1.0], [1.0], [-1.0]])
    y = torch.tensor([0, 0, 1, 1])
    assert label_feature_correlation(f, y) == pytest.approx(1 / math.sqrt(15), rel=1e-12)
    # f = (1, 1, -1, -1) makes Theta == K_Y exactly: correlation 1.
    f2 = torch.tensor([[1.0], [1.0], [-1.0], [-1.0]])
    assert label_feature_correlation(f2, y) == pytest.approx(1.0, rel=1e-12)


def test_lfc_invariances() -> None:
    rng = np.random.default_rng(7)
    y = _labels(rng, 50, [4, 2, 1, 1])
    f = torch.from_numpy(_informative(rng, y, 10) + 1.0)
    yt = torch.from_numpy(y)
    base = label_feature_correlation(f, yt)
    perm = torch.from_numpy(rng.permutation(50))
    assert label_feature_correlation(f[perm], yt[perm]) == pytest.approx(base, rel=1e-10)
    relabel = torch.tensor([2, 0, 3, 1])  # a bijection of the class ids
    assert label_feature_correlation(f, relabel[yt]) == pytest.approx(base, rel=1e-10)
    assert label_feature_correlation(3.5 * f, yt) == pytest.approx(base, rel=1e-10)


def test_lfc_dtypes_and_alias() -> None:
    rng = np.random.default_rng(3)
    y = _labels(rng, 30, [1, 2])
    f64 = _informative(rng, y, 8)
    f32 = torch.from_numpy(f64).to(torch.float32)
    # float32 input is upcast: equal to the float64 brute force on the same float32 values
    ref = _lfc_brute(f32.double().numpy(), y)
    assert label_feature_correlation(f32, torch.from_numpy(y).int()) == pytest.approx(ref, rel=REL)
    t = torch.from_numpy(f64)
    assert kernel_label_correlation(t, torch.from_numpy(y)) == label_feature_correlation(
        t, torch.from_numpy(y)
    )
    assert isinstance(label_feature_correlation(t, torch.from_numpy(y)), float)


# ------------------------------------------------------------------------- LogME


def _scipy_evidence(f: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """log N(y; 0, F F^T / alpha + I / beta) / N, the marginal likelihood by definition."""
    n = y.size
    cov = f @ f.T / alpha + np.eye(n) / beta
    return float(multivariate_normal.logpdf(y, mean=np.zeros(n), cov=cov)) / n


def _check_against_scipy(f: np.ndarray, y: np.ndarray, stationary: bool = True) -> float:
    fit = logme_fit(torch.from_numpy(f), torch.from_numpy(y))
    assert fit.converged
    assert fit.classes.tolist() == sorted(set(y.tolist()))
    evidences = []
    for j, cls in enumerate(fit.classes.tolist()):
        onehot = (y == cls).astype(np.float64)
        alpha, beta = float(fit.alpha[j]), float(fit.beta[j])
        ref = _scipy_evidence(f, onehot, alpha, beta)
        assert float(fit.evidence[j]) == pytest.approx(ref, rel=REL)
        evidences.append(ref)
        if stationary:  # no better evidence next to the fixed point
            for da in (1 - 1e-3, 1.0, 1 + 1e-3):
                for db in (1 - 1e-3, 1.0, 1 + 1e-3):
                    other = _scipy_evidence(f, onehot, alpha * da, beta * db)
                    assert other <= ref + 1e-10 * max(1.0, abs(ref))
    score = logme(torch.from_numpy(f), torch.from_numpy(y))
    assert score == pytest.approx(float(np.mean(evidences)), rel=REL)
    return score


@pytest.mark.parametrize(
    ("n", "d", "weights"),
    [(60, 10, [1, 1, 1]), (80, 16, [6, 3, 1, 1, 1]), (40, 5, [1, 1])],
)
def test_logme_n_greater_than_d(n: int, d: int, weights: list[float]) -> None:
    rng = np.random.default_rng(n + d)
    y = _labels(rng, n, weights)
    _check_against_scipy(_informative(rng, y, d), y)


@pytest.mark.parametrize(("n", "d", "weights"), [(20, 50, [1, 1, 1, 1]), (24, 60, [3, 1, 1])])
def test_logme_n_less_than_d(n: int, d: int, weights: list[float]) -> None:
    rng = np.random.default_rng(n + d)
    y = _labels(rng, n, weights)
    f = _informative(rng, y, d)
    fit = logme_fit(torch.from_numpy(f), torch.from_numpy(y))
    assert fit.rank == n  # F F^T invertible: the optimum is the noise-free limit beta -> inf
    _check_against_scipy(f, y)


def test_logme_rank_deficient() -> None:
    rng = np.random.default_rng(11)
    y = _labels(rng, 50, [2, 1, 1])
    base = _informative(rng, y, 8)
    f = np.concatenate([base, base[:, :3], 2.0 * base[:, 3:5]], axis=1)  # duplicate columns
    assert logme_fit(torch.from_numpy(f), torch.from_numpy(y)).rank == 8
    _check_against_scipy(f, y)
    # N < D and rank-deficient at once: rank 10 < N = 16 < D = 30
    y2 = _labels(rng, 16, [1, 1])
    low = _informative(rng, y2, 10)
    f2 = np.concatenate([low, low, low], axis=1)
    assert logme_fit(torch.from_numpy(f2), torch.from_numpy(y2)).rank == 10
    _check_against_scipy(f2, y2)


def test_logme_random_features_n_less_than_d_not_positive() -> None:
    rng = np.random.default_rng(5)
    n, d = 20, 50
    y = _labels(rng, n, [1, 1, 1, 1])
    f = rng.normal(size=(n, d))
    score = _check_against_scipy(f, y, stationary=False)
    assert score < 0
    # The public implementation's mistake: dropping -(D - k)/2 log alpha from the log det.
    fit = logme_fit(torch.from_numpy(f), torch.from_numpy(y))
    wrong = fit.evidence + (d - fit.rank) / 2 * torch.log(fit.alpha) / n
    assert float(wrong.mean()) > 0 > score


def test_logme_scale_invariant() -> None:
    rng = np.random.default_rng(2)
    y = _labels(rng, 40, [1, 1, 2])
    f = torch.from_numpy(_informative(rng, y, 6))
    yt = torch.from_numpy(y)
    assert logme(100.0 * f, yt) == pytest.approx(logme(f, yt), rel=REL)
    assert logme(f.float(), yt) == pytest.approx(logme(f.float().double(), yt), rel=1e-12)


def test_logme_skips_absent_classes() -> None:
    rng = np.random.default_rng(4)
    y = _labels(rng, 30, [1, 1])
    f = torch.from_numpy(_informative(rng, y, 5))
    shifted = torch.from_numpy(np.where(y == 1, 3, 0))  # classes 1 and 2 absent
    assert logme(f, shifted, num_classes=4) == pytest.approx(
        logme(f, torch.from_numpy(y)), rel=1e-12
    )


# -------------------------------------------------------------------------- LEEP


def _leep_loops(theta: np.ndarray, y: np.ndarray) -> float:
    """LEEP with explicit Python loops over samples, target and source classes."""
    n, cs = theta.shape
    c = int(y.max()) + 1
    joint = [[0.0] * cs for _ in range(c)]
    for i in range(n):
        for z in range(cs):
            joint[int(y[i])][z] += float(theta[i, z]) / n
    marg = [sum(joint[t][z] for t in range(c)) for z in range(cs)]
    total = 0.0
    for i in range(n):
        eep = 0.0
        for z in range(cs):
            if marg[z] > 0:
                eep += joint[int(y[i])][z] / marg[z] * float(theta[i, z])
        total += math.log(eep)
    return total / n


@pytest.mark.parametrize(("n", "cs", "weights"), [(30, 5, [1, 1, 1]), (45, 12, [5, 2, 1, 1])])
def test_leep_matches_loops(n: int, cs: int, weights: list[float]) -> None:
    rng = np.random.default_rng(n * cs)
    y = _labels(rng, n, weights)
    theta = _softmax(2.0 * rng.normal(size=(n, cs)) + np.eye(cs)[y % cs])
    got = leep(torch.from_numpy(theta), torch.from_numpy(y))
    assert got == pytest.approx(_leep_loops(theta, y), rel=REL)
    assert got <= 0


def test_leep_zero_source_column_and_permutation() -> None:
    rng = np.random.default_rng(9)
    y = _labels(rng, 20, [1, 1, 1])
    theta = _softmax(rng.normal(size=(20, 6)))
    theta[:, 2] = 0.0  # a source class nobody predicts: P(z) = 0
    theta /= theta.sum(axis=1, keepdims=True)
    got = leep(torch.from_numpy(theta), torch.from_numpy(y))
    assert got == pytest.approx(_leep_loops(theta, y), rel=REL)
    perm = rng.permutation(6)
    permuted = leep(torch.from_numpy(theta[:, perm]), torch.from_numpy(y))
    assert permuted == pytest.approx(got, rel=1e-12)


def test_leep_refuses_logits() -> None:
    y = torch.tensor([0, 1, 0, 1])
    with pytest.raises(ScoringError, match="logits"):
        leep(torch.randn(4, 3, dtype=torch.float64), y)



def test_leep_row_blocks_dtypes_and_threads(monkeypatch) -> None:
    # Blocks of 7 rows (the last one short), float32 and float64 rows that sum to 1 only
    # within the tolerance: the same value as the loops on the renormalised rows.
    from zoosel.scorers import inputs

    rng = np.random.default_rng(3)
    n, cs = 47, 6
    y = _labels(rng, n, [3, 2, 1, 1])
    theta = _softmax(rng.normal(size=(n, cs)) + np.eye(cs)[y % cs])
    theta *= 1 + 5e-4 * rng.uniform(-1, 1, size=(n, 1))  # sums off 1 by up to 5e-4
    exact = _leep_loops(theta / theta.sum(axis=1, keepdims=True), y)
    whole = leep(torch.from_numpy(theta), torch.from_numpy(y))
    monkeypatch.setattr(inputs, "_BLOCK_BYTES", 8 * cs * 7)
    torch.set_num_threads(2)
    try:
        blocked = leep(torch.from_numpy(theta), torch.from_numpy(y))
        assert torch.get_num_threads() == 2  # restored after the one-thread loop
    finally:
        torch.set_num_threads(1)
    assert blocked == pytest.approx(exact, rel=1e-12)
    assert whole == pytest.approx(exact, rel=1e-12)
    f32 = torch.from_numpy(theta.astype(np.float32))
    exact32 = _leep_loops(f32.double().numpy() / f32.double().numpy().sum(1, keepdims=True), y)
    assert leep(f32, torch.from_numpy(y)) == pytest.approx(exact32, rel=1e-12)


# --------------------------------------------------------------------------- NCE


def _nce_counter(z: np.ndarray, y: np.ndarray) -> float:
    n = len(y)
    pairs = Counter(zip(y.tolist(), z.tolist(), strict=True))
    zs = Counter(z.tolist())
    return sum(cnt / n * math.log(cnt / zs[zz]) for (_, zz), cnt in pairs.items())


def test_nce_hand_worked() -> None:
    # y = (0, 0, 1, 1), z = (0, 0, 0, 1): pairs (0,0) x2, (1,0) x1, (1,1) x1; P(z=0) = 3/4.
    # NCE = 1/2 log(2/3) + 1/4 log(1/3) + 1/4 log(1) = -0.47738562623...
    expected = 0.5 * math.log(2 / 3) + 0.25 * math.log(1 / 3)
    y = torch.tensor([0, 0, 1, 1])
    z = torch.tensor([0, 0, 0, 1])
    assert negative_conditional_entropy(z, y) == pytest.approx(expected, rel=1e-12)
    probs = torch.tensor([[0.7, 0.3], [0.6, 0.4], [0.9, 0.1], [0.2, 0.8]])
    assert nce(probs, y) == pytest.approx(expected, rel=1e-12)
    # z determines y: conditional entropy 0
    assert nce(probs, torch.tensor([0, 0, 0, 1])) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize(("n", "cs", "weights"), [(50, 7, [1, 1, 1]), (200, 30, [4, 3, 2, 1, 1])])
def test_nce_matches_counter(n: int, cs: int, weights: list[float]) -> None:
    rng = np.random.default_rng(n + cs)
    y = _labels(rng, n, weights)
    theta = _softmax(rng.normal(size=(n, cs)) + 1.5 * np.eye(cs)[y % cs])
    got = nce(torch.from_numpy(theta), torch.from_numpy(y))
    assert got == pytest.approx(_nce_counter(theta.argmax(axis=1), y), rel=REL)
    perm = rng.permutation(cs)
    assert nce(torch.from_numpy(theta[:, perm]), torch.from_numpy(y)) == pytest.approx(
        got, rel=1e-12
    )



def test_nce_dense_and_sorted_counts_and_dtypes(monkeypatch) -> None:
    rng = np.random.default_rng(5)
    n, cs = 300, 40
    y = _labels(rng, n, [4, 3, 2, 1, 1])
    theta = _softmax(rng.normal(size=(n, cs)) + 2 * np.eye(cs)[y % cs])
    expected = _nce_counter(theta.argmax(axis=1), y)
    yt = torch.from_numpy(y)
    dense = nce(torch.from_numpy(theta), yt)
    monkeypatch.setattr(nce_mod, "_DENSE_CELLS", -(4 * n))  # force the sorted pair codes
    assert nce(torch.from_numpy(theta), yt) == pytest.approx(dense, rel=1e-14)
    assert dense == pytest.approx(expected, rel=1e-12)
    for dtype in (torch.float32, torch.float16):  # float16 rows sum to 1 within 1e-3
        rows = torch.from_numpy(theta).to(dtype)
        z = rows.double().numpy().argmax(axis=1)
        assert nce(rows, yt) == pytest.approx(_nce_counter(z, y), rel=1e-12)


def test_probability_checks_find_every_bad_entry() -> None:
    # One bad entry, in the middle of the last of several row blocks, is found.
    p = torch.full((50, 4), 0.25, dtype=torch.float64)
    y = torch.arange(50) % 2
    for value, match in ((float("nan"), "non-finite"), (-0.25, "probabilities"),
                         (0.9, "probabilities"), (float("-inf"), "non-finite")):
        bad = p.clone()
        bad[47, 2] = value
        for fn in (leep, nce):
            with pytest.raises(ScoringError, match=match):
                fn(bad, y)
    huge = p.clone()
    huge[3] = torch.tensor([1e308, 1e308, 0.0, 0.0], dtype=torch.float64)  # sum overflows
    for fn in (leep, nce):
        with pytest.raises(ScoringError, match="must be probabilities"):
            fn(huge, y)
        with pytest.raises(ScoringError, match="floating dtype"):
            fn(torch.ones(50, 4, dtype=torch.int64), y)


# ------------------------------------------------------------------------ errors


@pytest.mark.parametrize("fn", [label_feature_correlation, logme])
def test_feature_scorers_reject_bad_input(fn) -> None:
    assert_rejects_bad_labelled_input(fn, float("nan"))
    f = torch.randn(6, 3, dtype=torch.float64)
    with pytest.raises(ScoringError, match="at least 2 samples"):
        fn(f[:1], torch.tensor([0]))
    with pytest.raises(ScoringError):
        fn(torch.zeros(6, 3), torch.tensor([0, 1, 0, 1, 0, 1]))


@pytest.mark.parametrize("fn", [leep, nce])
def test_prob_scorers_reject_bad_input(fn) -> None:
    p = torch.full((4, 3), 1 / 3, dtype=torch.float64)
    with pytest.raises(ScoringError, match="2 distinct classes"):
        fn(p, torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ScoringError, match="rows"):
        fn(p, torch.tensor([0, 1]))
    bad = p.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(ScoringError, match="non-finite"):
        fn(bad, torch.tensor([0, 1, 0, 1]))


# ------------------------------------------------------------------ registration


def test_registration_own_manager() -> None:
    found = registered(MODULES)
    assert set(found) == set(NEEDS)
    for name, scorer in found.items():
        assert set(scorer.needs) == NEEDS[name]
        assert scorer.summary and scorer.reference and scorer.cost


def test_registration_default_plugins() -> None:
    found = registered_by_default()
    for name, needs in NEEDS.items():
        assert name in found
        assert set(found[name].needs) == needs


def test_scorer_fn_uses_declared_inputs() -> None:
    rng = np.random.default_rng(1)
    y = _labels(rng, 30, [1, 1, 1])
    f = torch.from_numpy(_informative(rng, y, 5))
    p = torch.from_numpy(_softmax(rng.normal(size=(30, 4))))
    yt = torch.from_numpy(y)
    found = registered(MODULES)
    feats = ScoreInputs(labels=yt, num_classes=3, features=f)
    probs = ScoreInputs(labels=yt, num_classes=3, source_probs=p)
    assert found["lfc"].fn(feats) == label_feature_correlation(f, yt)
    assert found["logme"].fn(feats) == logme(f, yt)
    assert found["leep"].fn(probs) == leep(p, yt)
    assert found["nce"].fn(probs) == nce(p, yt)
    for name in ("lfc", "logme"):
        with pytest.raises(ScoringError, match="needs"):
            found[name].fn(probs)
    for name in ("leep", "nce"):
        with pytest.raises(ScoringError, match="needs"):
            found[name].fn(feats)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_gpu_matches_cpu() -> None:
    rng = np.random.default_rng(0)
    y = _labels(rng, 64, [2, 1, 1])
    f = torch.from_numpy(_informative(rng, y, 12)).float()
    p = torch.from_numpy(_softmax(rng.normal(size=(64, 9)))).float()
    yt = torch.from_numpy(y)
    for fn, x in ((label_feature_correlation, f), (logme, f), (leep, p), (nce, p)):
        assert fn(x.cuda(), yt.cuda()) == pytest.approx(fn(x, yt), rel=1e-9)
