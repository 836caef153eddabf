"""Linear probe: zoosel's ridge probe vs per-fold ridge, plain L-BFGS, one Gram, zoosel 0.1."""

from __future__ import annotations

import numpy as np
import scipy.optimize
import torch
from _common import best_of, rel_diff
from bench_scorers_probe import make_data as power_law_data

from zoosel.scorers import linear_probe as probe_mod

SCORE = "linear_probe"
TITLE = ("Linear probe (5-fold cross-validated accuracy): zoosel's ridge classifier vs "
         "per-fold ridge and plain L-BFGS logistic regression")
NOTES = (
    "Data: the power-law features of `bench_scorers_probe.py` (ReLU of class means and "
    "noise with a 1/i spectrum; the classes overlap). one Gram: ONE float64 F^T F of the "
    "same features, best of 3 (the yardstick: the probe is to cost at most 10x of it); "
    "`zoosel / one Gram` is the ratio. zoosel: `linear_probe` with its default solver, "
    "the ridge (least-squares, one-hot targets) classifier with l2 = 0.1 on standardised "
    "features: each fold's own centred Gram once, the training scatter of fold k pooled "
    "from the others, one D x D Cholesky per fold, folds one thread each. per-fold ridge: "
    "what the usual sklearn-style probe (`RidgeClassifier(solver='cholesky')` on "
    "standardised features; sklearn is not installed here) does, written here in numpy and "
    "scipy: per fold standardise, X^T X (or X X^T when D > n) and "
    "`scipy.linalg.solve(assume_a='pos')`, the same objective, so the values agree to "
    "round-off. plain L-BFGS: the usual logistic-regression probe (mean cross-entropy + "
    "l2/2 |W|^2 with l2 = 1e-3, bias free, scipy's L-BFGS-B from zero, float64 numpy, "
    "stopped at max |gradient| <= 1e-6), timed on the first fold and scaled by the number "
    "of folds; its value is its first fold's accuracy (another classifier: rel. diff is "
    "not round-off). zoosel 0.1: zoosel's former default, the same score with "
    "`solver=\"logistic\"` (L-BFGS, version 1 of the scorer)."
)


def cases(quick: bool) -> list[dict]:
    """N = 2500 and N = 20000 at D = 2048, C = 100."""
    if quick:
        return [{"n": 120, "d": 16, "c": 3, "label": "quick"}]
    return [
        {"n": 2500, "d": 2048, "c": 100, "label": "N = 2500"},
        {"n": 20000, "d": 2048, "c": 100, "label": "N = 20000"},
    ]


def _standardised(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``x`` centred and scaled to unit variance per column (constant columns zeroed), with
    the mean and inverse scale to apply to held-out rows."""
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    inv = np.where(std > 1e-10 * np.abs(x).max(axis=0), 1 / np.where(std > 0, std, 1), 0)
    return (x - mean) * inv, mean, inv


def plain_lbfgs(f: np.ndarray, y: np.ndarray, fold: np.ndarray, use: list[int],
                l2: float = probe_mod.DEFAULT_L2) -> tuple[float, int]:
    """Per fold: standardise, scipy L-BFGS-B from zero (float64 numpy), predict.

    Returns the number of correct held-out predictions on the folds ``use`` and the
    number of held-out samples there.
    """
    correct = total = 0
    for k in use:
        train, test = fold != k, fold == k
        classes, y_train = np.unique(y[train], return_inverse=True)
        xs, mean, inv = _standardised(f[train])
        n, d = xs.shape
        c = classes.size
        onehot = np.eye(c)[y_train]

        def loss_grad(theta, xs=xs, onehot=onehot, n=n, d=d, c=c):
            w, b = theta[: d * c].reshape(d, c), theta[d * c:]
            z = xs @ w + b
            z -= z.max(axis=1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            loss = -(logp * onehot).sum() / n + 0.5 * l2 * (w * w).sum()
            r = (np.exp(logp) - onehot) / n
            return loss, np.concatenate([(xs.T @ r + l2 * w).ravel(), r.sum(axis=0)])

        res = scipy.optimize.minimize(
            loss_grad, np.zeros(d * c + c), jac=True, method="L-BFGS-B",
            options={"maxiter": 5000, "gtol": probe_mod.GTOL, "ftol": 0.0, "maxcor": 10},
        )
        w, b = res.x[: d * c].reshape(d, c), res.x[d * c:]
        pred = classes[(((f[test] - mean) * inv) @ w + b).argmax(axis=1)]
        correct += int((pred == y[test]).sum())
        total += int(test.sum())
    return correct, total


def per_fold_ridge(f: np.ndarray, y: np.ndarray, fold: np.ndarray,
                   l2: float = probe_mod.DEFAULT_RIDGE_L2) -> float:
    """Per fold: standardise, solve the ridge normal equations (primal or kernel form by
    the shape, as sklearn does), predict; the pooled held-out accuracy."""
    correct = 0
    for k in range(int(fold.max()) + 1):
        train, test = fold != k, fold == k
        classes, y_train = np.unique(y[train], return_inverse=True)
        xs, mean, inv = _standardised(f[train])
        n, d = xs.shape
        onehot = np.eye(classes.size)[y_train]
        if d <= n:
            a = xs.T @ xs / n
            a[np.diag_indices(d)] += l2
            w = scipy.linalg.solve(a, xs.T @ onehot / n, assume_a="pos")
        else:
            kern = xs @ xs.T / n
            kern[np.diag_indices(n)] += l2
            w = xs.T @ scipy.linalg.solve(kern, onehot / n, assume_a="pos")
        logits = ((f[test] - mean) * inv) @ w + onehot.mean(axis=0)
        correct += int((classes[logits.argmax(axis=1)] == y[test]).sum())
    return correct / len(y)


def run_case(case: dict, repeats: int) -> list[dict]:
    """zoosel, one Gram, per-fold ridge, plain L-BFGS and zoosel 0.1 on the same features."""
    f, y = power_law_data(case["n"], case["d"], case["c"])
    f64 = f.to(torch.float64)
    big = case["n"] > 5000
    reps = 1 if big else repeats
    t_z, result = best_of(lambda: probe_mod.linear_probe(f, y), reps)
    rows = [{"impl": "zoosel", "seconds": t_z, "value": result.accuracy,
             "note": f"{result.fits[0].route} route"}]
    t_g, _ = best_of(lambda: f64.T @ f64 if case["n"] >= case["d"] else f64 @ f64.T, 3)
    rows.append({"impl": "one Gram", "seconds": t_g, "value": float("nan"), "note": ""})
    folds = result.folds.numpy()
    n_folds = int(folds.max()) + 1
    t, value = best_of(lambda: per_fold_ridge(f64.numpy(), y.numpy(), folds), reps)
    rows.append({"impl": "per-fold ridge", "seconds": t, "value": value, "note": ""})
    t, (correct, total) = best_of(
        lambda: plain_lbfgs(f64.numpy(), y.numpy(), folds, [0]), 1)
    rows.append({"impl": "plain L-BFGS", "seconds": t * n_folds, "value": correct / total,
                 "note": f"fold 1, x{n_folds}"})
    t, old = best_of(lambda: probe_mod.linear_probe(f, y, solver="logistic"), 1)
    its = "/".join(str(fit.iterations) for fit in old.fits if fit is not None)
    rows.append({"impl": "zoosel 0.1", "seconds": t, "value": old.accuracy,
                 "note": f"logistic, L-BFGS iterations per fold {its}"})
    for row in rows[1:]:
        row["rel_diff"] = rel_diff(row["value"], result.accuracy)
    return rows
