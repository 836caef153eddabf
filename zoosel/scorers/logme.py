"""LogME (You et al. 2021, ICML, "LogME: Practical Assessment of Pre-trained Models for
Transfer Learning").

Formula. For each class c present in the labels, y = y_c is the one-hot column (N,) and
the model is Bayesian linear regression y = F w + noise, prior w ~ N(0, alpha^-1 I_D),
noise precision beta. Its log marginal evidence is::

    L = N/2 log beta + D/2 log alpha - N/2 log 2pi - beta/2 |y - F m|^2 - alpha/2 |m|^2
        - 1/2 log det(alpha I_D + beta F^T F)

with m = beta (alpha I + beta F^T F)^-1 F^T y, i.e. L = log N(y; 0, F F^T / alpha + I / beta).
The score is mean_c L_c / N at the alpha, beta that maximise each L_c.

Spectrum. Only the k = rank(F) nonzero eigenvalues s_i^2 of F F^T enter; with
z = U_k^T y (U_k the matching eigenvectors) and y_perp = y - U_k z (nonzero when N > k)::

    |m|^2       = sum_i (beta s_i z_i / (alpha + beta s_i^2))^2
    |y - F m|^2 = sum_i (alpha z_i / (alpha + beta s_i^2))^2 + |y_perp|^2
    log det(alpha I_D + beta F^T F) = sum_{i<=k} log(alpha + beta s_i^2) + (D - k) log alpha

The (D - k) log alpha term matters whenever k < D (N < D, or rank-deficient features):
the common public implementation drops it and returns wrong, even positive, scores.
With it L depends on F only through F F^T, as the marginal likelihood must.

Two routes to (s^2, z, |y_perp|^2), both float64:

* Gram (the default): all-zero feature columns are dropped (they add nothing to F F^T),
  then the smaller Gram matrix, F^T F (N > D) or F F^T (N <= D), is formed and
  eigendecomposed (on the CPU the Gram is numpy's symmetric rank-k update). For N > D,
  z = diag(1/s) V^T (F^T y) with F^T y the class sums of the rows, and
  |y_perp|^2 = |y|^2 - |z|^2 where that leaves at least 1% of |y|^2, else (where it would
  cancel) the residual of the least-squares fit. Forming the Gram squares the condition
  number, so it is used only when its smallest eigenvalue exceeds ``GRAM_RCOND`` = 1e-8
  times the largest (cond(F) < 1e4): the eigenvalues then carry a relative error below
  about 1e-7 and the evidence far less (tested against the SVD route to 1e-9).
* Thin SVD F = U diag(s) V^T otherwise (rank-deficient or ill-conditioned features): k
  counts the singular values above s_max max(N, D) eps.

Maximisation. Writing t = alpha / beta, the evidence is maximised over beta in closed form
(beta = N / R(t)), leaving a 1-D problem per class in u = log t::

    R(t) = sum_i z_i^2 t / (t + s_i^2) + |y_perp|^2
    2 L / N = log(N / (2 pi e)) - log R(t) - (1/N) sum_i log(1 + s_i^2 / t)

Its stationary points are exactly the fixed points of MacKay's iteration (gamma / |m|^2,
(N - gamma) / |y - F m|^2), which converges only linearly and, when N < D, can take
thousands of steps. zoosel evaluates the profile on a grid of u (step 0.5 across the
spectrum, coarser beyond it) for every class at once, keeps the best grid point, and
refines it by Newton's method on d/du, safeguarded by bisection inside the bracket that
the grid gives, until the step in u is below 1e-11 (typically 4 to 8 iterations, at most
``MAX_ITERATIONS``). The grid also makes the result the best of the profile's local maxima,
not just the one nearest alpha = beta = 1. u is confined to
[log(1e-12 s_min^2), log(1e12 s_max^2)]: beyond those ends the optimum runs to beta -> inf
(a noise-free fit, only possible when k = N) or alpha -> inf (the labels are not
explained at all), and the evidence there equals its limit to about k 1e-12.

Classes absent from the labels (possible when ``num_classes`` exceeds those sampled) are
skipped: their all-zero column carries no information.

Invariances: relabelling of the classes and permutation of the samples; scale invariant
(F -> c F is absorbed by alpha -> alpha / c^2 at the optimum) and rotation invariant
(L depends on F only through F F^T).

Direction: higher is better (an average log-evidence per sample); no sign flip.
Cost: Gram route O(N D min(N, D)) for the Gram plus min(N, D)^3 for its eigendecomposition
(the thin SVD costs several times more at the same size), then O(k C) per grid point and
Newton step, all classes at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from zoosel.errors import ScoringError
from zoosel.hookspecs import hookimpl
from zoosel.scorers.inputs import as_float64, check_labels
from zoosel.threads import serial
from zoosel.types import Need, ScoreInputs, Scorer

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

__all__ = ["LogMEFit", "logme", "logme_fit", "register_scorers"]

MAX_ITERATIONS = 100
STEP_TOL = 1e-11  # Newton stops once the step in log(alpha / beta) is below this
BOUNDARY = 1e-12  # the optimum is followed to t = BOUNDARY s_min^2 or s_max^2 / BOUNDARY
GRAM_RCOND = 1e-8  # smallest / largest Gram eigenvalue above which the Gram route is used
PERP_RTOL = 1e-2  # below this share of |y|^2, |y_perp|^2 comes from the residual
GRID_STEP = 0.5  # in log t, across the spectrum
TAIL_STEP = 3.0  # in log t, beyond it (the profile is monotone there)


@dataclass(frozen=True)
class LogMEFit:
    """Per-class outcome of the LogME maximisation (all tensors float64, shape (C,)).

    ``classes`` are the label values, in increasing order, that the rows refer to;
    ``evidence`` is L_c / N at the returned ``alpha`` and ``beta``; ``route`` is "gram"
    or "svd" (module docstring); ``iterations`` counts the Newton steps.
    """

    classes: torch.Tensor
    evidence: torch.Tensor
    alpha: torch.Tensor
    beta: torch.Tensor
    rank: int
    iterations: int
    converged: bool
    route: str = "svd"

    @property
    def score(self) -> float:
        """The LogME score: the mean of ``evidence`` over classes."""
        return float(self.evidence.mean())


@dataclass(frozen=True)
class _Spectrum:
    s2: torch.Tensor  # (k,) nonzero eigenvalues of F F^T, decreasing
    z: torch.Tensor  # (k, C) coordinates of the one-hot columns on the eigenvectors
    perp2: torch.Tensor  # (C,) |y_perp|^2
    route: str


def _gram(g: torch.Tensor, wide: bool) -> torch.Tensor:
    """G G^T (``wide``) or G^T G; on the CPU through numpy, whose product of a matrix with
    its own transpose is a symmetric rank-k update (half the work of a general product)."""
    if g.device.type == "cpu":
        import torch

        a = g.numpy()
        return torch.from_numpy(a @ a.T if wide else a.T @ a)
    return g @ g.T if wide else g.T @ g


def _spectrum(f: torch.Tensor, index: torch.Tensor, c: int) -> _Spectrum:
    """The spectrum of F F^T and the labels' coordinates on it (module docstring)."""
    import torch

    n, d = f.shape
    onehot = torch.nn.functional.one_hot(index, c).to(f.dtype)
    gram = _gram(f, wide=n <= d)
    g = f
    if n > d:  # all-zero columns (dead units) add nothing to F F^T: drop them
        live = gram.diagonal() > 0
        if not bool(live.all()):
            g, gram = f[:, live], gram[live][:, live]
            d = g.shape[1]
    if d == 0 or not float(gram.diagonal().max()) > 0:
        raise ScoringError("features are all zero: LogME is undefined.")
    with serial():
        evals, vecs = torch.linalg.eigh(gram)
    if float(evals[0]) > GRAM_RCOND * float(evals[-1]):
        s2, vecs = evals.flip(0), vecs.flip(1)
        if n <= d:  # F F^T invertible: every y lies in the column space
            return _Spectrum(s2, vecs.T @ onehot, torch.zeros(c, dtype=f.dtype,
                                                              device=f.device), "gram")
        sums = torch.zeros(c, d, dtype=f.dtype, device=f.device).index_add_(0, index, g)
        proj = vecs.T @ sums.T  # (d, C) = V^T F^T y
        z = proj / s2.sqrt()[:, None]
        counts = onehot.sum(0)  # |y|^2
        perp2 = counts - (z * z).sum(0)
        # |y|^2 - |z|^2 cancels when y lies almost inside the column space: there the
        # residual of the least-squares fit is computed instead (one N x D x C product).
        close = perp2 < PERP_RTOL * counts
        if bool(close.any()):
            coef = vecs @ (proj[:, close] / s2[:, None])  # (F^T F)^-1 F^T y
            perp2[close] = ((onehot[:, close] - g @ coef) ** 2).sum(0)
        return _Spectrum(s2, z, perp2, "gram")
    u, s, _ = torch.linalg.svd(f, full_matrices=False)
    tol = float(s.max()) * max(f.shape) * torch.finfo(torch.float64).eps
    k = int((s > tol).sum())
    if k == 0:
        raise ScoringError("features are all zero: LogME is undefined.")
    u, s = u[:, :k], s[:k]
    z = u.T @ onehot
    perp2 = ((onehot - u @ z) ** 2).sum(0)
    return _Spectrum(s * s, z, perp2, "svd")


def _profile(
    sp: _Spectrum, z2: torch.Tensor, n: int, u: torch.Tensor, order: int
) -> tuple[torch.Tensor, ...]:
    """The profile 2 L / N up to a constant, and its first ``order`` derivatives in u."""
    import torch

    t = torch.exp(u)[None, :]  # (1, C)
    s2 = sp.s2[:, None]
    a = s2 / (s2 + t)  # (k, C), beta s^2 / (alpha + beta s^2)
    b = t / (s2 + t)  # 1 - a, computed directly
    r = (z2 * b).sum(0) + sp.perp2
    value = -torch.log(r) - torch.log1p(s2 / t).sum(0) / n
    if order == 0:
        return (value,)
    ab = a * b
    p = (z2 * ab).sum(0)  # dR/du
    d1 = a.sum(0) - n * p / r  # N d(2L/N)/du: gamma - N t R' / R
    q = (z2 * ab * (a - b)).sum(0)
    d2 = -ab.sum(0) - n * (q * r - p * p) / (r * r)
    return value, d1, d2


def _grid(lo: float, hi: float, inner_lo: float, inner_hi: float) -> list[float]:
    """Points from lo to hi: GRID_STEP apart inside [inner_lo, inner_hi], TAIL_STEP outside."""
    inner_lo, inner_hi = max(lo, inner_lo), min(hi, inner_hi)
    pts = [lo + TAIL_STEP * i for i in range(int((inner_lo - lo) / TAIL_STEP) + 1)]
    steps = int((inner_hi - inner_lo) / GRID_STEP) + 1
    pts += [inner_lo + GRID_STEP * i for i in range(steps + 1)]
    pts += [inner_hi + TAIL_STEP * (i + 1) for i in range(int((hi - inner_hi) / TAIL_STEP))]
    pts.append(hi)
    return sorted(p for p in set(pts) if lo <= p <= hi)


def _maximise(sp: _Spectrum, n: int) -> tuple[torch.Tensor, int, bool]:
    """log(alpha / beta) per class at the profile's best maximum; Newton steps; converged."""
    import torch

    z2 = sp.z * sp.z
    c = z2.shape[1]
    log_min, log_max = math.log(float(sp.s2[-1])), math.log(float(sp.s2[0]))
    lo_end, hi_end = log_min + math.log(BOUNDARY), log_max - math.log(BOUNDARY)
    grid = torch.tensor(_grid(lo_end, hi_end, log_min - 6.0, log_max + 6.0),
                        dtype=sp.s2.dtype, device=sp.s2.device)
    values = torch.stack([_profile(sp, z2, n, g.expand(c), 0)[0] for g in grid])  # (G, C)
    best = values.argmax(dim=0)
    last = grid.numel() - 1
    u = grid[best]
    lo = grid[(best - 1).clamp_min(0)]
    hi = grid[(best + 1).clamp_max(last)]
    _, d1, _ = _profile(sp, z2, n, u, 1)
    # an end of the range is the answer when the profile still rises towards it
    active = ~(((best == 0) & (d1 <= 0)) | ((best == last) & (d1 >= 0)))
    lo = torch.where(d1 > 0, u, lo)
    hi = torch.where(d1 > 0, hi, u)
    start_value = values.gather(0, best[None, :])[0]
    start = u.clone()
    iterations = 0
    while bool(active.any()) and iterations < MAX_ITERATIONS:
        iterations += 1
        _, d1, d2 = _profile(sp, z2, n, u, 2)
        rising = d1 > 0
        lo = torch.where(active & rising, u, lo)
        hi = torch.where(active & ~rising, u, hi)
        newton = u - d1 / d2
        ok = (d2 < 0) & (newton >= lo) & (newton <= hi)  # lo or hi is u itself
        new = torch.where(ok, newton, 0.5 * (lo + hi))
        new = torch.where(active & (d1 != 0), new, u)
        done = (new - u).abs() <= STEP_TOL * u.abs().clamp_min(1.0)
        u = new
        active &= ~done
    converged = not bool(active.any())
    # never worse than the grid's best point (a bracket the grid could not make clean)
    value = _profile(sp, z2, n, u, 0)[0]
    u = torch.where(value >= start_value, u, start)
    return u, iterations, converged


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
    n = f.shape[0]
    y = check_labels(labels, n, num_classes).to(f.device)
    classes, index = torch.unique(y, return_inverse=True)
    sp = _spectrum(f, index, classes.numel())
    k = sp.s2.numel()

    u, iterations, converged = _maximise(sp, n)
    t = torch.exp(u)
    z2 = sp.z * sp.z
    denom_t = t + sp.s2[:, None]  # (k, C): (alpha + beta s^2) / beta
    r2 = ((t / denom_t) ** 2 * z2).sum(0) + sp.perp2  # |y - F m|^2
    m2 = ((sp.s2[:, None] / denom_t**2) * z2).sum(0)  # |m|^2
    beta = n / ((z2 * (t / denom_t)).sum(0) + sp.perp2)
    alpha = t * beta
    logdet_k = torch.log(denom_t).sum(0) + k * torch.log(beta)
    # D/2 log alpha - (D - k)/2 log alpha (the log det's null-space part) = k/2 log alpha.
    evidence = (
        n / 2 * torch.log(beta) + k / 2 * torch.log(alpha) - n / 2 * math.log(2 * math.pi)
        - beta / 2 * r2 - alpha / 2 * m2 - logdet_k / 2
    ) / n
    if not bool(torch.isfinite(evidence).all()):
        raise ScoringError("LogME evidence is not finite for these features.")
    return LogMEFit(classes, evidence, alpha, beta, k, iterations, converged, sp.route)


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
            cost="O(N D min(N, D)) Gram + min(N, D)^3 eigh + O(k C) per Newton step",
        )
    )
