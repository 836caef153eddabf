"""Predicted fine-tuning accuracy of the linearized model (after Deshpande et al. 2021).

Idea. Fine-tuning linearized around the pre-trained weights, with squared loss, is
kernel regression with the per-sample gradient kernel Theta (arXiv 2102.00084,
section 2); ridge regression stands for early stopping / finite training time. The
leave-one-out accuracy of that regression predicts how well fine-tuning generalises.
``linft`` uses the feature kernel F F^T (the paper's stand-in for Theta, a new linear head
on frozen features), ``linft_grad`` the gradient-sketch kernel S S^T.

Model. Rows x_i of ``matrix`` (N x D), one-hot labels Y (N x C, the classes present).

* Scaling: columns are centred and the matrix is scaled so that the kernel
  K = X X^T has trace N (mean eigenvalue 1 over the N samples); the lambda grid is
  therefore scale-free. No per-column standardisation (it would change the kernel).
* Bias: the head has an unpenalised bias, i.e. the regression is
  min |Y - 1 b^T - X W|^2 + lambda |W|^2; equivalently X and Y are centred.
  The hat matrix is H = 1 1^T / N + K (K + lambda I)^-1.
* Ridge: lambda minimises generalised cross-validation,
  GCV(lambda) = (1/N) |(I - H) Y|_F^2 / (1 - tr(H) / N)^2,
  over ``lambdas`` (default 10^-6 .. 10^6, 4 per decade), all from one
  eigendecomposition of K = U diag(e) U^T, taken from the cheaper side
  (:func:`kernel_eigen`: the N x N kernel when N <= D, else the D x D Gram X^T X and
  U = X V diag(e)^-1/2): cost O(N D min(N, D)), then O(min(N, D) C) per grid point.
  The residual and 1 - tr(H) / N are summed from lambda / (e + lambda) and the null
  space's label energy, never as differences of nearly equal numbers: when N <= D both
  go to 0 with lambda, and the GCV at the grid's small end stays accurate.
* Leave-one-out: residual_i / (1 - H_ii) is the exact residual of the fit without sample
  i (same lambda, same scaling); the LOO prediction is Y_i minus it, and the score is
  the fraction of samples whose LOO prediction's argmax is their own label.

Diagnostics (the paper's, on the same scaled kernel K): the new head starts at
f_w0 = 0 for its weights and its unpenalised bias absorbs the label mean, so the
initial residual is dY = Y - 1 mean(Y)^T (centred one-hot labels):

* training speed  dY^T K dY / |dY|^2 (trace over classes): the initial rate of decrease
  of the squared loss, higher is faster;
* generalisation  (1/N) dY^T (K + lambda I)^-1 dY at the chosen lambda (the ridge makes
  K invertible): lower is better.

Direction: higher is better for the accuracy, a value in [0, 1]; no sign flip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from zoosel.errors import ScoringError
from zoosel.hookspecs import hookimpl
from zoosel.scorers.inputs import as_float64, check_labels
from zoosel.types import Need, ScoreInputs, Scorer

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

__all__ = [
    "DEFAULT_LAMBDAS",
    "LinftResult",
    "kernel_eigen",
    "linft_fit",
    "predicted_accuracy",
    "register_scorers",
]

DEFAULT_LAMBDAS = np.logspace(-6.0, 6.0, 49)
"""Ridge grid, relative to a kernel of mean eigenvalue 1."""

_ROW_SPREAD_TOL = 1e-24


@dataclass(frozen=True)
class LinftResult:
    """Kernel ridge regression of one-hot labels and its leave-one-out accuracy."""

    accuracy: float
    """Fraction of samples whose LOO prediction's argmax is their label, in [0, 1]."""
    lam: float
    """The ridge chosen by GCV (for the trace-normalised kernel)."""
    gcv: float
    """GCV at ``lam``."""
    training_speed: float
    """dY^T K dY / |dY|^2, dY the centred one-hot labels."""
    generalization: float
    """(1/N) dY^T (K + lam I)^-1 dY; lower is better."""
    dof: float
    """tr(H), the effective number of parameters (bias included)."""
    lambdas: np.ndarray
    """The grid searched."""
    gcv_curve: np.ndarray
    """GCV at every grid point."""
    loo_predictions: np.ndarray
    """(N, C) leave-one-out predictions, columns in the order of ``classes``."""
    classes: np.ndarray
    """The class ids present, the columns of the one-hot targets."""


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
    import torch

    x = as_float64(matrix, "matrix").cpu()
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

    mean = x.mean(dim=0)
    xc = x - mean
    spread = float(torch.dot(xc.view(-1), xc.view(-1)))
    total = spread + n * float(torch.dot(mean, mean))  # sum of x^2, without another pass
    if not spread > _ROW_SPREAD_TOL * total:
        raise ScoringError("all rows are equal: the kernel is constant, nothing to regress on.")
    xs = xc.mul_(math.sqrt(n / spread))  # trace(K) = N
    del x

    u_t, e_t = kernel_eigen(xs)
    e = e_t.numpy()
    dy_t = torch.from_numpy(dy)
    c_t = u_t.T @ dy_t  # (r, C)
    c = c_t.numpy()
    c2 = np.sum(c * c, axis=1)  # label energy per eigen-direction
    dy2 = float(np.sum(dy * dy))
    # Label energy in the kernel's null space. When N <= D it is ~0 (only the constant
    # direction, which the centred labels miss) and dy2 - sum(c2) would be rounding noise
    # of size eps * dy2, the whole residual at the grid's small end: take the projection
    # residual itself (U is orthonormal to rounding there). When N > D the null space
    # has N - D dimensions or more and the difference is accurate.
    if n <= d:
        outside = float(torch.sum((dy_t - u_t @ c_t) ** 2))
    else:
        outside = max(dy2 - float(c2.sum()), 0.0)

    shrink = e[None, :] / (e[None, :] + grid[:, None])  # (L, r)
    rest = grid[:, None] / (e[None, :] + grid[:, None])  # 1 - shrink, without cancelling
    resid = outside + np.sum(rest**2 * c2[None, :], axis=1)
    trace_h = 1.0 + shrink.sum(axis=1)
    # N - tr(H) = (N - 1 - r) + sum(rest): no cancellation when tr(H) approaches N
    denom = np.maximum((n - 1 - e.size + rest.sum(axis=1)) / n, np.finfo(np.float64).tiny)
    gcv_curve = (resid / n) / denom**2
    best = int(np.argmin(gcv_curve))
    lam = float(grid[best])

    s_t = torch.from_numpy(shrink[best])
    fitted = y_mean + (u_t @ (s_t[:, None] * torch.from_numpy(c))).numpy()
    leverage = 1.0 / n + (u_t.square_() @ s_t).numpy()  # u_t is not used after this
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


def kernel_eigen(xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvectors U (N x r, orthonormal columns) and eigenvalues e (r) of the kernel
    K = xs xs^T, its numerically nonzero part, from the cheaper side.

    N <= D: ``eigh`` of the N x N kernel. N > D: ``eigh`` of the D x D Gram
    xs^T xs = V diag(e) V^T, whose nonzero eigenvalues are K's, and U = xs V diag(e)^-1/2;
    one D x D eigendecomposition and two N x D x D products instead of a thin SVD of
    xs (linft 2.9-6x faster at N = 2,500 and 20,000: benchmarks/results/linft.md).
    Float64, in torch, so the engine's thread setting applies.
    """
    import torch

    n, d = xs.shape
    if n <= d:
        evals, vecs = torch.linalg.eigh(xs @ xs.T)
    else:
        evals, vecs = torch.linalg.eigh(xs.T @ xs)
    # eigh sorts ascending: the numerically zero eigenvalues are a prefix (a view, no copy)
    first = int(torch.count_nonzero(
        evals <= torch.finfo(torch.float64).eps * max(n, d) * float(evals[-1])))
    e, vecs = evals[first:], vecs[:, first:]
    if n > d:
        vecs = (xs @ vecs).div_(torch.sqrt(e))
    return vecs, e


def predicted_accuracy(
    matrix: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int | None = None,
    lambdas: np.ndarray | None = None,
) -> float:
    """Leave-one-out accuracy of GCV-tuned kernel ridge regression on ``matrix``'s kernel."""
    return linft_fit(matrix, labels, num_classes, lambdas).accuracy


def _score_features(inputs: ScoreInputs) -> float:
    if inputs.features is None:
        raise ScoringError("linft needs features.")
    return predicted_accuracy(inputs.features, inputs.labels, inputs.num_classes)


def _score_sketch(inputs: ScoreInputs) -> float:
    if inputs.gradient_sketch is None:
        raise ScoringError("linft_grad needs gradient sketches.")
    return predicted_accuracy(inputs.gradient_sketch, inputs.labels, inputs.num_classes)


@hookimpl
def register_scorers(register: Callable[[Scorer], None]) -> None:
    """Register linft (feature kernel) and linft_grad (gradient-sketch kernel)."""
    common = dict(
        reference="Deshpande et al. 2021, arXiv 2102.00084 (linearized fine-tuning)",
        cost="O(N D min(N, D)) once, then O(min(N, D) C) per ridge value",
        # 1: SVD of X when D < N; when N <= D the GCV at the smallest ridges was rounding
        # noise (up to 1e-4 relative at 1e-6), so the ridge chosen there could differ
        version="2",
        # version 1's values, recomputed by version 2 on every (task, regime) pair of the
        # diverse benchmark build, came out identical (benchmarks/check_same_values.py)
        same_values_as=("1",),
    )
    register(
        Scorer(
            name="linft",
            fn=_score_features,
            needs=frozenset({Need.FEATURES}),
            summary="Leave-one-out accuracy of GCV-tuned kernel ridge regression on features.",
            **common,
        )
    )
    register(
        Scorer(
            name="linft_grad",
            fn=_score_sketch,
            needs=frozenset({Need.GRADIENT_SKETCH}),
            summary="Leave-one-out accuracy of GCV-tuned kernel ridge regression on the "
            "gradient-sketch kernel (the linearized fine-tuned model).",
            **common,
        )
    )
