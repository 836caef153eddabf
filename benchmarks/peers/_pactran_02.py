"""zoosel's PACTran-Gauss of scorer version 2 (one secant scaling for weights and biases, a
line search of separate passes), kept as it was for the benchmark's before/after.

PACTran-Gauss, a PAC-Bayesian transferability metric (Ding et al. 2022, ECCV, "PACTran:
PAC-Bayesian metrics for estimating the transferability of pretrained models to
classification tasks", arXiv 2203.05126).

Formula. A linear softmax head theta = (W, b) (W: D x K, b: K, K the classes present) on
the centred features x_i has the empirical risk R(theta) = (1/N) sum_i CE(W^T x_i + b, y_i).
With a Gaussian prior N(0, s0^2 I) on the d = D K weights, a Gaussian posterior
N(theta*, s^2 I) and the PAC-Bayes parameter lam, the second-order bound, minimised over
s^2 in closed form (1/s^2 = 1/s0^2 + lam tr(H) / d), is::

    theta* = argmin  R(theta) + |W|^2 / (2 lam s0^2)                       (the fitted head)
    bound  = R(theta*) + |W*|^2 / (2 lam s0^2) + d / (2 lam) log(1 + lam s0^2 tr(H) / d)

with H = grad^2 R(theta*), whose trace has the closed form (weights and biases)::

    tr(H) = (1/N) sum_i (|x_i|^2 + 1) sum_k p_ik (1 - p_ik),   p_i = softmax(W*^T x_i + b*)

Hyper-parameters (the paper's Gaussian variant with its grid point lda_factor = 1, as in
the authors' code): lam s0^2 = N (so the fit is cross-entropy + |W|^2 / (2 N)), prior
variance s0^2 = 100 / D, hence lam = N D / 100 and the last term is
(50 K / N) log(1 + N tr(H) / (D K)). As in the authors' code the prior (and the penalty)
covers the weights only, d = D K, and tr(H) includes the bias entries. One difference:
the authors' code takes the Hessian of the SUMMED cross-entropy (N times larger) inside
the log while fitting the MEAN; zoosel uses the mean throughout, which is what the bound
is derived for.

Fit. theta* minimises a strictly convex function of W (convex in b, flat only along
b + c 1, which no gradient step ever moves) from theta = 0 by zoosel's own L-BFGS
(history 10), deterministic, no randomness, no seed. The logits u = z W + b are carried
along, so a step costs two products with the features (z dW for the direction, z^T R for
the gradient) and every trial of the line search (safeguarded 1-D Newton on the convex
objective along the direction) only O(N K). The two products run in float32 (their
rounding leaves the bound within ~1e-8 of a float64 fit; the reported bound is evaluated in
float64). When the coordinates are principal axes (the row space when N < D, see below;
the eigenvectors of xc^T xc when N >= D and D + 2 D^2 / N <= 10 K, where that is cheap),
H0 is scaled per coordinate by the inverse curvature at the start,
N / (lambda_j / K + 1). The fit stops when the bound, O(N K) per step from the logits,
moved by less than 3e-7 (relative) over the last 4 steps while the largest gradient entry
is below 1e-4 of its value at 0 (or it is below 1e-9 of it, or after 500 steps). A
gradient rule alone does not bound the bound's error: the complexity term moves to first
order with the head, so a gradient 1e-6 of its start still left it 3e-5 from its value at
the minimum (500 x 2,048 features, 100 classes). Measured against float64 fits to a 1e-9
gradient the rule stops within 7e-7 of it (tests: 5e-6 against an independent fit).
The literature's quantity is a bound on the generalisation error (lower is better):
zoosel reports its negation (``raw`` says so).

Degenerate inputs. Constant features (the head reduces to the bias: R = the label
entropy) give a finite value, as do a class with one sample, duplicated samples,
N < D and D = 1. Classes absent from the labels are left out (a class nobody belongs
to has no finite optimum).

Invariances: permutation of samples, relabelling of classes, translation and rotation of
the features. Not scale invariant (the prior variance is fixed).

Direction: higher is better after negation.
Cost: O(N D K) per L-BFGS iteration (one forward and one backward product, float32),
typically 50 to 200 iterations; O(N^2 D + N^3) extra when N < D, O(N D^2 + D^3) when the
principal axes are used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from zoosel.errors import ScoringError
from zoosel.hookspecs import hookimpl
from zoosel.scorers.inputs import as_float64
from zoosel.scorers.sfda import class_indices
from zoosel.threads import serial
from zoosel.types import Need, ScoreInputs, Scorer

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

__all__ = ["PACTranFit", "pactran", "pactran_fit", "register_scorers"]

LDA_FACTOR = 1.0  # lam s0^2 = LDA_FACTOR * N
PRIOR_VARIANCE_FACTOR = 100.0  # s0^2 = PRIOR_VARIANCE_FACTOR / D
MAX_ITER = 500
HISTORY = 10
STABLE_STEPS = 4  # the fit stops once the bound moved over the last this many steps ...
BOUND_RTOL = 3e-7  # ... by less than this (relative) ...
STABLE_GRAD = 1e-4  # ... with the gradient below this, relative to its start
GRAD_FLOOR = 1e-9  # or once the gradient is below this, relative to its start
_LINE_SEARCH_TRIALS = 30
_TINY = 1e-30
_LOG_TINY = 69.0
_ROTATE_FACTOR = 10.0  # N >= D: the fit runs on the principal axes when D + 2 D^2 / N <= this K
_RANK_RTOL = 1e-12


@dataclass(frozen=True)
class PACTranFit:
    """The fitted head and every term of the bound (float64; ``score`` = -``bound``).

    ``risk`` is R(theta*), ``penalty`` |W*|^2 / (2 lam s0^2), ``trace_hessian`` tr(H),
    ``complexity`` d / (2 lam) log(1 + lam s0^2 tr(H) / d). ``weight`` is in the
    coordinates ``z`` (the centred features, or their row-space coordinates when N < D);
    ``z`` and ``y`` (0..K-1) are returned for checking.
    """

    score: float
    bound: float
    risk: float
    penalty: float
    trace_hessian: float
    complexity: float
    weight: torch.Tensor
    bias: torch.Tensor
    z: torch.Tensor
    y: torch.Tensor
    reg: float
    lam: float
    prior_variance: float
    num_weights: int
    iterations: int
    grad_max: float


class _Head:
    """The regularised softmax head's objective on coordinates ``z`` (float64 values,
    float32 products): f(W, b) = mean CE(z W + b, y) + |W|^2 / (2 reg).

    The logits are carried along the fit (u = z W + b) and the products of a search
    direction, z dW, are computed once per L-BFGS step, so every trial step of the line
    search costs O(N K), not a product with the features; the features' two products per
    step (z dW and z^T R) run in float32, whose rounding (1e-7 relative) leaves the bound
    within 1e-8 of its float64 fit, and the reported bound is evaluated in float64.
    """

    def __init__(self, z: torch.Tensor, y: torch.Tensor, k: int, reg: float) -> None:
        import torch

        self.n, self.m = z.shape
        self.k, self.reg, self.y = k, reg, y
        self.z32 = z.to(torch.float32)
        self.zt32 = z.T.contiguous().to(torch.float32)  # z^T R reads it row by row
        self.rows = torch.arange(self.n, device=z.device)
        self.norms = (z * z).sum(dim=1) + 1.0

    def logits_of(self, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        import torch

        return (self.z32 @ _single(w)).to(torch.float64) + b

    def at(self, u: torch.Tensor, ww: float) -> tuple[float, torch.Tensor]:
        """The objective at logits ``u`` (with |W|^2 = ``ww``) and the softmax."""
        import torch

        top = u.max(dim=1, keepdim=True).values
        # exp(-69) = 1e-30: no probability below it, so none becomes a float32 subnormal
        # (those slow the products down several times); the loss moves by < K 1e-30
        e = torch.exp((u - top).clamp_min_(-_LOG_TINY))
        s = e.sum(dim=1, keepdim=True)
        p = e.div_(s)
        lse = top[:, 0] + torch.log(s[:, 0])
        value = float((lse - u[self.rows, self.y]).mean()) + ww / (2 * self.reg)
        return value, p

    def gradient(self, p: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The flat gradient (W, then b) at softmax ``p`` (overwritten) and weights ``w``."""
        import torch

        r = p
        r[self.rows, self.y] -= 1.0
        gw = (self.zt32 @ r.to(torch.float32)).to(torch.float64)
        gw.mul_(1.0 / self.n).add_(w, alpha=1.0 / self.reg)
        return torch.cat([gw.reshape(-1), r.sum(dim=0).mul_(1.0 / self.n)])


def _single(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 with the entries below 1e-30 in size set to 0: float32 subnormals
    (the probabilities of unlikely classes) slow the products down several times."""
    import torch

    return x.masked_fill(x.abs() < _TINY, 0.0).to(torch.float32)


def _two_loop(g: torch.Tensor, s_hist: list, y_hist: list, rho: list,
              scaling: torch.Tensor | None) -> torch.Tensor:
    """L-BFGS's direction -H g (two-loop recursion) with H0 = gamma diag(scaling). The
    pairs are kept in float32: the recursion is bound by memory traffic, and the direction
    needs no more (the line search and the gradient are float64)."""
    import torch

    q = g.to(torch.float32)
    alphas = []
    for s, yv, r in zip(reversed(s_hist), reversed(y_hist), reversed(rho), strict=True):
        a = r * float(torch.dot(s, q))
        alphas.append(a)
        q.add_(yv, alpha=-a)
    gamma = 1.0
    if s_hist:
        s, yv = s_hist[-1], y_hist[-1]
        yhy = float(torch.dot(yv, yv * scaling if scaling is not None else yv))
        gamma = 1.0 / (rho[-1] * yhy)
    if scaling is not None:
        q.mul_(scaling)
    q.mul_(gamma)
    for s, yv, r, a in zip(s_hist, y_hist, rho, reversed(alphas), strict=True):
        q.add_(s, alpha=a - r * float(torch.dot(yv, q)))
    return q.to(torch.float64).neg_()


def _fit_head(
    z: torch.Tensor, y: torch.Tensor, k: int, reg: float, num_weights: int, coef: float,
    scaling: torch.Tensor | None, max_iter: int,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Minimise the regularised cross-entropy over (W, b) from 0 by L-BFGS (history
    HISTORY, H0 = gamma diag(``scaling``) or gamma I) with a line search on the logits;
    stop when the PACTran bound (O(N K) per step from the carried logits) moved by less
    than BOUND_RTOL (relative) over the last STABLE_STEPS steps with the gradient below
    STABLE_GRAD of its start, or the gradient is below GRAD_FLOOR of its start, or after
    ``max_iter`` steps. ``coef`` is d / (2 lam). Returns W (m, K), b (K) and the steps."""
    import torch

    n, m = z.shape
    head = _Head(z, y, k, reg)
    size = m * k
    theta = torch.zeros(size + k, dtype=torch.float64, device=z.device)
    u = torch.zeros(n, k, dtype=torch.float64, device=z.device)
    value, p = head.at(u, 0.0)
    g = head.gradient(p.clone(), theta[:size].view(m, k))
    scale = float(g.abs().max())
    if scale == 0:
        return theta[:size].view(m, k), theta[size:], 0
    s_hist: list = []
    y_hist: list = []
    rho: list = []
    bounds: list[float] = []
    steps = 0
    while steps < max_iter:
        d = _two_loop(g, s_hist, y_hist, rho, scaling)
        dw, db = d[:size].view(m, k), d[size:]
        ud = head.logits_of(dw, db)
        w = theta[:size]
        ww, wd, dd = float(torch.dot(w, w)), float(torch.dot(w, d[:size])), float(
            torch.dot(d[:size], d[:size]))
        slope0 = float(torch.dot(g, d))
        if not slope0 < 0:
            break
        t, ut, value_t, p = _line_search(head, u, ud, value, slope0, ww, wd, dd,
                                         first=steps == 0, p0=p)
        if t == 0.0:
            break
        step = d.mul_(t)
        theta += step
        u, value = ut, value_t
        # sum_k p (1 - p) = 1 - sum_k p^2 (this only steers the stop: the reported
        # bound is evaluated afresh)
        trace_h = float((head.norms * (1.0 - (p * p).sum(dim=1))).sum()) / n
        g_new = head.gradient(p, theta[:size].view(m, k))
        y_new = g_new - g
        sy = float(torch.dot(step, y_new))
        if sy > 1e-300:
            if len(s_hist) == HISTORY:
                s_hist.pop(0)
                y_hist.pop(0)
                rho.pop(0)
            s_hist.append(step.to(torch.float32))
            y_hist.append(y_new.to(torch.float32))
            rho.append(1.0 / sy)
        g = g_new
        steps += 1
        bounds.append(value + coef * math.log1p(reg * trace_h / num_weights))
        gmax = float(g.abs().max())
        if gmax <= GRAD_FLOOR * scale:
            break
        if len(bounds) > STABLE_STEPS and gmax <= STABLE_GRAD * scale:
            window = bounds[-STABLE_STEPS - 1:]
            if max(window) - min(window) <= BOUND_RTOL * abs(bounds[-1]):
                break
    return theta[:size].view(m, k), theta[size:], steps


def _line_search(
    head: _Head, u: torch.Tensor, ud: torch.Tensor, value: float, slope0: float,
    ww: float, wd: float, dd: float, *, first: bool, p0: torch.Tensor,
) -> tuple[float, torch.Tensor, float, torch.Tensor]:
    """A step t along the direction meeting the strong Wolfe conditions (c1 1e-4, c2 0.9),
    by safeguarded Newton steps on the convex phi(t) inside a bracket; every trial is
    O(N K) on the logits u + t ud. Returns t (0 when none was found), the logits, the
    objective and the softmax there."""
    n, reg = head.n, head.reg

    def curvature(p: torch.Tensor) -> float:
        pud = (p * ud).sum(dim=1)
        return float(((p * ud * ud).sum(dim=1) - pud * pud).sum()) / n + dd / reg

    ud_y = float(ud[head.rows, head.y].sum()) / n
    t = -slope0 / curvature(p0) if first else 1.0
    lo, hi = 0.0, math.inf
    for _ in range(_LINE_SEARCH_TRIALS):
        ut = u + t * ud
        value_t, p = head.at(ut, ww + 2 * t * wd + t * t * dd)
        slope = float((p * ud).sum()) / n - ud_y + (wd + t * dd) / reg
        if value_t <= value + 1e-4 * t * slope0 + 1e-15 * abs(value) and (
                abs(slope) <= 0.9 * abs(slope0)):
            return t, ut, value_t, p
        if slope > 0:
            hi = t
        else:
            lo = t
        nxt = t - slope / curvature(p)
        if not lo < nxt < hi:
            nxt = 0.5 * (lo + hi) if math.isfinite(hi) else 4.0 * t
        t = nxt
    return 0.0, u, value, p0


def _row_space(xc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Coordinates of the rows of ``xc`` (N < D) in an orthonormal basis of their span
    (the eigenvectors of the Gram matrix), and the squared norms of those columns."""
    import torch

    with serial():
        evals, vecs = torch.linalg.eigh(xc @ xc.T)
    top = float(evals[-1])
    keep = evals > _RANK_RTOL * top if top > 0 else evals > 0
    return vecs[:, keep] * evals[keep].sqrt(), evals[keep]


def _principal_axes(xc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The eigenvectors of xc^T xc (N >= D) and its eigenvalues (clamped at 0)."""
    import torch

    gram = xc.T @ xc
    with serial():
        evals, vecs = torch.linalg.eigh(gram)
    return vecs, evals.clamp_min(0.0)


def _scaling(col_sq: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """H0's diagonal on coordinates with orthogonal columns of squared norms ``col_sq``:
    the inverse curvature of the mean objective at the start (softmax curvature 1 / K),
    (c lambda_j + 1) / N for the weights of coordinate j and c for the biases."""
    import torch

    c = 1.0 / k
    w = (n / (c * col_sq + 1.0))[:, None].expand(-1, k).reshape(-1)
    return torch.cat([w, torch.full((k,), 1.0 / c, dtype=w.dtype, device=w.device)])


def pactran_fit(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int | None = None,
    *,
    lda_factor: float = LDA_FACTOR,
    prior_variance_factor: float = PRIOR_VARIANCE_FACTOR,
    max_iter: int = MAX_ITER,
) -> PACTranFit:
    """Fit the regularised softmax head and evaluate the PACTran-Gauss bound.

    :param features: (N, D) float features, any dtype or device (computed in float64).
    :param labels: (N,) integer class labels.
    :param num_classes: optional upper bound used only to validate ``labels``.
    :param lda_factor: lam s0^2 = lda_factor N.
    :param prior_variance_factor: s0^2 = prior_variance_factor / D.
    :param max_iter: the most L-BFGS steps.
    :raises ScoringError: on unusable input or a non-finite bound.
    """
    import torch

    if not (lda_factor > 0 and prior_variance_factor > 0):
        raise ScoringError("lda_factor and prior_variance_factor must be positive.")
    f = as_float64(features, "features")
    n, dim = f.shape
    y, counts = class_indices(labels, n, num_classes)
    y = y.to(f.device)
    k = counts.numel()
    xc = f - f.mean(dim=0)
    reg = lda_factor * n  # lam s0^2
    prior_variance = prior_variance_factor / dim
    lam = reg / prior_variance
    num_weights = dim * k
    coef = num_weights / (2 * lam)

    axes = None
    if n < dim:
        z, col_sq = _row_space(xc)
        scaling = _scaling(col_sq, n, k)
    elif dim + 2 * dim * dim / n <= _ROTATE_FACTOR * k:
        axes, col_sq = _principal_axes(xc)
        z = xc @ axes
        scaling = _scaling(col_sq, n, k)
    else:
        z, scaling = xc, None
    if scaling is not None:
        scaling = scaling.to(torch.float32)
    # The fit runs on one thread: its two float32 products per step (2,500 x 2,048 x 100)
    # took longer on two threads than on one on two cores shared with other work, and the
    # rest is O(N K) vector work whose parallel regions cost more than they save.
    with serial():
        w, b, iterations = _fit_head(z, y, k, reg, num_weights, coef, scaling, max_iter)
    if axes is not None:  # back to the centred features' coordinates
        z = xc
        w = axes @ w

    with torch.no_grad():
        logits = z @ w + b
        log_p = torch.log_softmax(logits, dim=1)
        p = log_p.exp()
        risk = float(-log_p.gather(1, y[:, None]).mean())
        penalty = float((w * w).sum()) / (2 * reg)
        spread = (p * (1 - p)).sum(dim=1)
        trace_h = float((((z * z).sum(dim=1) + 1.0) * spread).sum()) / n
        complexity = coef * math.log1p(reg * trace_h / num_weights)
        grad_w = z.T @ (p - torch.nn.functional.one_hot(y, k).to(p.dtype)) / n + w / reg
    bound = risk + penalty + complexity
    if not math.isfinite(bound):
        raise ScoringError("the PACTran bound is not finite for these features.")
    return PACTranFit(
        -bound, bound, risk, penalty, trace_h, complexity, w, b, z, y, reg, lam,
        prior_variance, num_weights, iterations, float(grad_w.abs().max()),
    )


def pactran(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None
) -> float:
    """PACTran-Gauss, negated so that higher is better."""
    return pactran_fit(features, labels, num_classes).score


def _score(inputs: ScoreInputs) -> float:
    if inputs.features is None:
        raise ScoringError("PACTran needs features.")
    return pactran(inputs.features, inputs.labels, inputs.num_classes)


@hookimpl
def register_scorers(register: Callable[[Scorer], None]) -> None:
    """Register PACTran-Gauss."""
    register(
        Scorer(
            name="pactran",
            fn=_score,
            needs=frozenset({Need.FEATURES}),
            summary="PAC-Bayes bound (Gaussian prior) of an L2-regularised softmax head "
            "fitted by L-BFGS, negated.",
            reference="Ding et al. 2022, ECCV, PACTran (arXiv 2203.05126)",
            cost="O(N D K) per L-BFGS iteration",
            version="2",
            raw="PACTran-Gauss bound (lower is better), negated",
        )
    )
