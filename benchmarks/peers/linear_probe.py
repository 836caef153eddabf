"""Linear probe: zoosel vs a plain L-BFGS logistic regression, one Gram, and zoosel 0.1."""

from __future__ import annotations

import contextlib

import numpy as np
import scipy.optimize
import torch
from _common import best_of, rel_diff
from bench_scorers_probe import make_data as power_law_data

from zoosel.scorers import linear_probe as probe_mod

SCORE = "linear_probe"
TITLE = "Linear probe (5-fold logistic regression, l2 = 1e-3): zoosel vs plain L-BFGS"
NOTES = (
    "Data: the power-law features of `bench_scorers_probe.py` (ReLU of class means and "
    "noise with a 1/i spectrum; the classes overlap, so each fold takes 60-80 L-BFGS "
    "iterations: on `_common.make_data`, separable, the probe needs 9 per fold). "
    "Gram: ONE float64 F^T F of the same features (the yardstick: the issue asks for the "
    "probe within 10x of it), timed like the others. plain L-BFGS: what the usual "
    "sklearn-style probe does (sklearn is not installed here), written here: the same "
    "folds, per-fold standardisation and objective (mean cross-entropy + l2/2 |W|^2, bias "
    "free), scipy's L-BFGS-B from zero with float64 numpy products, stopped at the same "
    "max |gradient| <= 1e-6; at N = 20000 timed on the first fold and scaled by the "
    "number of folds. zoosel 0.1: zoosel's former schedule, the same code with every "
    "operation on the caller's T threads and the folds one after another. zoosel now "
    "runs every operation on one thread and fits T folds at once (the result does not "
    "depend on T; zoosel 0.1's did, through the order of multi-threaded sums). Values "
    "are cross-validated accuracies; fits stopped at the same gradient tolerance can "
    "differ in the held-out predictions of samples within round-off of a decision "
    "boundary."
)


def cases(quick: bool) -> list[dict]:
    """N = 2500 and N = 20000 at D = 2048, C = 100."""
    if quick:
        return [{"n": 120, "d": 16, "c": 3, "label": "quick"}]
    return [
        {"n": 2500, "d": 2048, "c": 100, "label": "N = 2500"},
        {"n": 20000, "d": 2048, "c": 100, "label": "N = 20000"},
    ]


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
        x = f[train]
        mean = x.mean(axis=0)
        std = x.std(axis=0)
        inv = np.where(std > 1e-10 * np.abs(x).max(axis=0), 1 / np.where(std > 0, std, 1), 0)
        xs = (x - mean) * inv
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


def zoosel_01(f: torch.Tensor, y: torch.Tensor) -> probe_mod.ProbeResult:
    """zoosel 0.1's schedule: folds in turn, every operation on the caller's threads."""
    saved = probe_mod._PARALLEL_FOLDS, probe_mod.torch_threads
    probe_mod._PARALLEL_FOLDS = False
    probe_mod.torch_threads = lambda count: contextlib.nullcontext()
    try:
        return probe_mod.linear_probe(f, y)
    finally:
        probe_mod._PARALLEL_FOLDS, probe_mod.torch_threads = saved


def run_case(case: dict, repeats: int) -> list[dict]:
    """zoosel, one Gram, plain L-BFGS and zoosel 0.1 on the same seeded features."""
    f, y = power_law_data(case["n"], case["d"], case["c"])
    f64 = f.to(torch.float64)
    big = case["n"] > 5000
    reps = 1 if big else repeats
    t_z, result = best_of(lambda: probe_mod.linear_probe(f, y), reps)
    its = "/".join(str(fit.iterations) for fit in result.fits if fit is not None)
    rows = [{"impl": "zoosel", "seconds": t_z, "value": result.accuracy,
             "note": f"L-BFGS iterations per fold {its}"}]
    t_g, _ = best_of(lambda: f64.T @ f64, 3)
    rows.append({"impl": "one Gram", "seconds": t_g, "value": float("nan"),
                 "note": f"zoosel / Gram = {t_z / t_g:.1f}x"})
    folds = result.folds.numpy()
    n_folds = int(folds.max()) + 1
    use = [0] if big else list(range(n_folds))
    t, (correct, total) = best_of(
        lambda: plain_lbfgs(f64.numpy(), y.numpy(), folds, use), 1)
    mine = float(result.credit[torch.from_numpy(np.isin(folds, use))].sum())
    rows.append({"impl": "plain L-BFGS", "seconds": t * n_folds / len(use),
                 "value": correct / total,
                 "note": ("all folds" if len(use) == n_folds else f"fold 1, x{n_folds}")
                 + f"; zoosel on the same folds {mine / total:.4f}"})
    t, old = best_of(lambda: zoosel_01(f, y), reps)
    rows.append({"impl": "zoosel 0.1", "seconds": t, "value": old.accuracy,
                 "note": "former schedule"})
    for row in rows[1:]:
        row["rel_diff"] = rel_diff(row["value"], result.accuracy)
    return rows
