"""LogME (You et al. 2021, ICML, "LogME: Practical Assessment of Pre-trained Models for
Transfer Learning").

Formula. For each class c present in the labels, y = y_c is the one-hot column (N,) and
the model is Bayesian linear regression y = F w + noise, prior w ~ N(0, alpha^-1 I_D),
noise precision beta. Its log marginal evidence is::

    L = N/2 log beta + D/2 log alpha - N/2 log 2pi - beta/2 |y - F m|^2 - alpha/2 |m|^2
        - 1/2 log det(alpha I_D + beta F^T F)

with m = beta (alpha I + beta F^T F)^-1 F^T y, i.e. L = log N(y; 0, F F^T / alpha + I / beta).
alpha and beta maximise L through MacKay's fixed point, started at alpha = beta = 1::

    gamma = sum_i beta s_i^2 / (alpha + beta s_i^2);  alpha = gamma / |m|^2;
    beta = (N - gamma) / |y - F m|^2

until the relative change of both is below 1e-8 (at most 1000 iterations: the fixed point
is linear and can need hundreds on uninformative features; each costs only O(k C)). When a
class's optimum lies on the boundary the iteration stops once it is reached to 1e-12:
alpha -> inf (beta s_max^2 / alpha < 1e-12, the labels are not explained at all) or
beta -> inf (alpha / (beta s_min^2) < 1e-12, a noise-free fit, only possible when
F F^T is invertible, k = N <= D). The score is mean_c L_c / N.

Everything comes from ONE thin SVD F = U diag(s) V^T in float64 (F^T F is never formed:
that would square the condition number). Only the k = rank(F) nonzero singular values
enter; with z = U_k^T y and y_perp = y - U_k z (the part of y outside the column space of
F, nonzero when N > k)::

    |m|^2       = sum_i (beta s_i z_i / (alpha + beta s_i^2))^2
    |y - F m|^2 = sum_i (alpha z_i / (alpha + beta s_i^2))^2 + |y_perp|^2
    log det(alpha I_D + beta F^T F) = sum_{i<=k} log(alpha + beta s_i^2) + (D - k) log alpha

The (D - k) log alpha term matters whenever k < D (N < D, or rank-deficient features):
the common public implementation drops it and returns wrong, even positive, scores.
With it, D/2 log alpha - (D - k)/2 log alpha = k/2 log alpha and L depends on F only
through F F^T, as the marginal likelihood must.

Classes absent from the labels (possible when ``num_classes`` exceeds those sampled) are
skipped: their all-zero column carries no information.

Invariances: relabelling of the classes and permutation of the samples; scale invariant
(F -> c F is absorbed by alpha -> alpha / c^2 at the optimum) and rotation invariant
(L depends on F only through F F^T).

Direction: higher is better (an average log-evidence per sample); no sign flip.
Cost: O(N D min(N, D)) for the SVD, then O(k C) per fixed-point iteration, all classes
at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from zoosel.errors import ScoringError
from zoosel.hookspecs import hookimpl
from zoosel.scorers.inputs import as_float64, check_labels
from zoosel.types import Need, ScoreInputs, Scorer

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

__all__ = ["LogMEFit", "logme", "logme_fit", "register_scorers"]

MAX_ITERATIONS = 1000
REL_TOL = 1e-8
BOUNDARY = 1e-12  # a class whose optimum runs to alpha or beta -> inf stops here
_TINY = 1e-300  # floor of |m|^2 and |y - F m|^2, keeps the fixed point finite


@dataclass(frozen=True)
class LogMEFit:
    """Per-class outcome of the LogME fixed point (all tensors float64, shape (C,)).

    ``classes`` are the label values, in increasing order, that the rows refer to;
    ``evidence`` is L_c / N at the returned ``alpha`` and ``beta``.
    """

    classes: torch.Tensor
    evidence: torch.Tensor
    alpha: torch.Tensor
    beta: torch.Tensor
    rank: int
    iterations: int
    converged: bool

    @property
    def score(self) -> float:
        """The LogME score: the mean of ``evidence`` over classes."""
        return float(self.evidence.mean())


def _terms(
    s2: torch.Tensor, sz: torch.Tensor, z2: torch.Tensor, perp2: torch.Tensor,
    alpha: torch.Tensor, beta: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """gamma, |m|^2, |y - F m|^2 and sum log(alpha + beta s^2), per class (shape (C,))."""
    import torch

    denom = alpha + beta * s2[:, None]  # (k, C)
    gamma = (beta * s2[:, None] / denom).sum(0)
    m2 = ((beta / denom) ** 2 * sz).sum(0)  # sz = s^2 z^2
    r2 = ((alpha / denom) ** 2 * z2).sum(0) + perp2
    return gamma, m2, r2, torch.log(denom).sum(0)


def logme_fit(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None
) -> LogMEFit:
    """Fit LogME's alpha, beta per class and return the per-class evidences divided by N.

    :param features: (N, D) float features, any dtype or device (computed in float64).
    :param labels: (N,) integer class labels.
    :param num_classes: optional upper bound used only to validate ``labels``.
    :raises ScoringError: on unusable input (see module docstring).
    """
    import torch

    f = as_float64(features, "features")
    n, d = f.shape
    y = check_labels(labels, n, num_classes).to(f.device)

    u, s, _ = torch.linalg.svd(f, full_matrices=False)
    tol = float(s.max()) * max(n, d) * torch.finfo(torch.float64).eps if s.numel() else 0.0
    k = int((s > tol).sum())
    if k == 0:
        raise ScoringError("features are all zero: LogME is undefined.")
    u, s = u[:, :k], s[:k]

    classes = torch.unique(y)
    onehot = (y[:, None] == classes[None, :]).to(torch.float64)  # (N, C)
    z = u.T @ onehot  # (k, C)
    perp2 = ((onehot - u @ z) ** 2).sum(0)  # |y_perp|^2, part outside the column space
    s2 = s * s
    z2 = z * z
    sz = s2[:, None] * z2

    c = classes.numel()
    alpha = torch.ones(c, dtype=torch.float64, device=f.device)
    beta = torch.ones(c, dtype=torch.float64, device=f.device)
    active = torch.ones(c, dtype=torch.bool, device=f.device)
    s2_max, s2_min = s2.max(), s2.min()
    iterations = 0
    while iterations < MAX_ITERATIONS and bool(active.any()):
        iterations += 1
        idx = active.nonzero().squeeze(1)  # iterate only the classes still moving
        a, b = alpha[idx], beta[idx]
        gamma, m2, r2, _ = _terms(s2, sz[:, idx], z2[:, idx], perp2[idx], a, b)
        new_a = gamma / m2.clamp_min(_TINY)
        new_b = (n - gamma).clamp_min(_TINY) / r2.clamp_min(_TINY)
        change = torch.maximum((new_a - a).abs() / a, (new_b - b).abs() / b)
        alpha[idx], beta[idx] = new_a, new_b
        done = (
            (change < REL_TOL)
            | (new_b * s2_max < BOUNDARY * new_a)  # alpha -> inf: the prior pins m to 0
            | (new_a < BOUNDARY * new_b * s2_min)  # beta -> inf: noise-free fit (k = N)
        )
        active[idx[done]] = False
    converged = not bool(active.any())

    _, m2, r2, logdet_k = _terms(s2, sz, z2, perp2, alpha, beta)
    # D/2 log alpha - (D - k)/2 log alpha (the log det's null-space part) = k/2 log alpha.
    evidence = (
        n / 2 * torch.log(beta) + k / 2 * torch.log(alpha) - n / 2 * math.log(2 * math.pi)
        - beta / 2 * r2 - alpha / 2 * m2 - logdet_k / 2
    ) / n
    if not bool(torch.isfinite(evidence).all()):
        raise ScoringError("LogME evidence is not finite for these features.")
    return LogMEFit(classes, evidence, alpha, beta, k, iterations, converged)


def logme(features: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> float:
    """LogME: mean over classes of the maximised log evidence per sample (higher is better)."""
    return logme_fit(features, labels, num_classes).score


def _score(inputs: ScoreInputs) -> float:
    if inputs.features is None:
        raise ScoringError("LogME needs features.")
    return logme(inputs.features, inputs.labels, inputs.num_classes)


@hookimpl
def register_scorers(register: Callable[[Scorer], None]) -> None:
    """Register LogME."""
    register(
        Scorer(
            name="logme",
            fn=_score,
            needs=frozenset({Need.FEATURES}),
            summary="Log marginal evidence of Bayesian linear regression on one-hot labels.",
            reference="You et al. 2021, ICML, LogME (arXiv 2102.11005)",
            cost="O(N D min(N, D)) SVD + O(k C) per fixed-point iteration",
        )
    )
