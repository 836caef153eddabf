"""zoosel's linft of scorer version 1 (thin SVD of the scaled features when D < N, numpy's
eigh of the N x N kernel otherwise, both on numpy's BLAS), kept as it was for the
benchmark's before/after (benchmarks/bench_linft.py). The model and the formulas are
documented in zoosel/scorers/linft.py; only the decomposition's route changed since.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from zoosel.errors import ScoringError
from zoosel.scorers.inputs import as_float64, check_labels
from zoosel.scorers.linft import DEFAULT_LAMBDAS, LinftResult

_ROW_SPREAD_TOL = 1e-24


def linft_fit(
    matrix: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int | None = None,
    lambdas: np.ndarray | None = None,
) -> LinftResult:
    """Fit the ridge regression of one-hot labels on ``matrix`` and score it by LOO.

    :param matrix: (N, D) rows: features, or gradient sketches.
    :param labels: (N,) integer labels (at least two classes).
    :param num_classes: optional upper bound used only to validate ``labels``.
    :param lambdas: positive ridge grid (default :data:`DEFAULT_LAMBDAS`).
    :raises ScoringError: on unusable input (e.g. all rows equal).
    """
    x = as_float64(matrix, "matrix").cpu().numpy()
    n, d = x.shape
    y = check_labels(labels, n, num_classes).cpu().numpy()
    grid = np.asarray(DEFAULT_LAMBDAS if lambdas is None else lambdas, dtype=np.float64).ravel()
    if grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(grid <= 0):
        raise ScoringError("lambdas must be a non-empty grid of positive numbers.")

    classes, target = np.unique(y, return_inverse=True)
    onehot = np.zeros((n, classes.size))
    onehot[np.arange(n), target] = 1.0
    y_mean = onehot.mean(axis=0)
    dy = onehot - y_mean  # centred labels: the bias absorbs the mean

    xc = x - x.mean(axis=0)
    spread = float(np.sum(xc * xc))
    if not spread > _ROW_SPREAD_TOL * float(np.sum(x * x)):
        raise ScoringError("all rows are equal: the kernel is constant, nothing to regress on.")
    xs = xc * math.sqrt(n / spread)  # trace(K) = N

    if d >= n:
        evals, vecs = np.linalg.eigh(xs @ xs.T)
    else:
        vecs, sing, _ = np.linalg.svd(xs, full_matrices=False)
        evals = sing * sing
    keep = evals > np.finfo(np.float64).eps * max(n, d) * float(evals.max())
    u, e = vecs[:, keep], evals[keep]

    c = u.T @ dy  # (r, C)
    c2 = np.sum(c * c, axis=1)  # label energy per eigen-direction
    dy2 = float(np.sum(dy * dy))
    outside = max(dy2 - float(c2.sum()), 0.0)  # label energy in the kernel's null space

    shrink = e[None, :] / (e[None, :] + grid[:, None])  # (L, r)
    resid = outside + np.sum((1.0 - shrink) ** 2 * c2[None, :], axis=1)
    trace_h = 1.0 + shrink.sum(axis=1)
    denom = np.maximum(1.0 - trace_h / n, np.finfo(np.float64).tiny)
    gcv_curve = (resid / n) / denom**2
    best = int(np.argmin(gcv_curve))
    lam = float(grid[best])

    s = shrink[best]
    fitted = y_mean + u @ (s[:, None] * c)
    leverage = 1.0 / n + (u * u) @ s
    loo_resid = (onehot - fitted) / np.maximum(1.0 - leverage, 1e-12)[:, None]
    loo_pred = onehot - loo_resid
    accuracy = float(np.mean(np.argmax(loo_pred, axis=1) == target))

    speed = float(np.sum(e * c2)) / dy2
    generalization = (float(np.sum(c2 / (e + lam))) + outside / lam) / n
    return LinftResult(
        accuracy=accuracy,
        lam=lam,
        gcv=float(gcv_curve[best]),
        training_speed=speed,
        generalization=generalization,
        dof=float(trace_h[best]),
        lambdas=grid,
        gcv_curve=gcv_curve,
        loo_predictions=loo_pred,
        classes=classes,
    )
