"""PACTran-Gauss, a PAC-Bayesian transferability metric (Ding et al. 2022, ECCV, "PACTran:
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
objective along the direction, one fused softmax per trial) only O(N K). The two products
run in float32 (their rounding leaves the bound within ~1e-8 of a float64 fit; the reported
bound is evaluated in float64). H0 = diag(gamma_w on the weights, gamma_b on the biases),
each block's own secant factor s^T y / y^T y from the last pair: the biases carry no
penalty and their curvature differs from the weights' by orders of magnitude near the
minimum, and one factor for both (scorer version 2) took 1.2-2.3x more steps (2,500 x
2,048 features, 100 classes: 83 and 147 instead of 45 and 63, clean and half the labels
redrawn).
When the coordinates are principal axes (the row space when N < D, see below; the
eigenvectors of xc^T xc when N >= D and D + 2 D^2 / N <= 10 K, where that is cheap),
H0 is also scaled per coordinate by the inverse curvature at the start,
N / (lambda_j / K + 1). The fit stops when the bound, O(N K) per step from the logits,
moved by less than 3e-7 (relative) over the last 4 steps while the largest gradient entry
is below 1e-4 of its value at 0 (or it is below 1e-10 of it, or after 500 steps). A
gradient rule alone does not bound the bound's error: the complexity term moves to first
order with the head, so a gradient 1e-6 of its start still left it 3e-5 from its value at
the minimum (500 x 2,048 features, 100 classes). Measured against float64 fits to a 1e-13
gradient the rule stops within 8e-7 of it (benchmarks/results/peers.md; tests: 5e-6
against an independent fit).
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
typically 30 to 150 iterations; O(N^2 D + N^3) extra when N < D, O(N D^2 + D^3) when the
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
GRAD_FLOOR = 1e-10  # or once the gradient is below this, relative to its start
_LINE_SEARCH_TRIALS = 30
_TINY = 1e-30
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
    within 1e-8 of its float64 fit, and the reported bound is evaluated in float64. Each
    trial is one fused softmax and two reductions over the N x K logits.
    """

    def __init__(self, z: torch.Tensor, y: torch.Tensor, k: int, reg: float) -> None:
        import torch

        self.n, self.m = z.shape
        self.k, self.reg, self.y = k, reg, y
        self.z32 = _single(z)
        self.zt32 = self.z32.T.contiguous()  # z^T R reads it row by row
        # each sample's own logit in the flattened (N, K) arrays
        self.own = torch.arange(self.n, device=z.device) * k + y
        self.norms = (z * z).sum(dim=1) + 1.0
        self.norm_sum = float(self.norms.sum())
        self.gw32 = torch.empty(self.m, k, dtype=torch.float32, device=z.device)
        self.ud32 = torch.empty(self.n, k, dtype=torch.float32, device=z.device)

    def logits_of(self, dw32: torch.Tensor, db: torch.Tensor) -> torch.Tensor:
        """z dW + db (float64) for a float32 dW."""
        import torch

        torch.mm(self.z32, _single(dw32), out=self.ud32)
        return self.ud32 + db

    def at(self, u: torch.Tensor, ww: float) -> tuple[float, torch.Tensor]:
        """The objective at logits ``u`` (with |W|^2 = ``ww``) and the softmax."""
        import torch

        p = torch.softmax(u, dim=1)
        own = p.view(-1)[self.own]
        if bool((own > 0).all()):
            risk = -float(torch.log(own).mean())
        else:  # an own-class probability below 1e-308: the log-sum-exp form
            risk = float((torch.logsumexp(u, dim=1) - u.view(-1)[self.own]).mean())
        return risk + ww / (2 * self.reg), p

    def trace_hessian(self, p: torch.Tensor) -> float:
        """tr(H) at softmax ``p``: sum_k p (1 - p) = 1 - sum_k p^2."""
        import torch

        return (self.norm_sum - float(self.norms @ torch.linalg.vecdot(p, p))) / self.n

    def gradient(self, p: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The flat gradient (W, then b) at softmax ``p`` (overwritten) and weights ``w``."""
        import torch

        r = p
        r.view(-1)[self.own] -= 1.0
        torch.mm(self.zt32, _single(r), out=self.gw32)
        size = self.m * self.k
        g = torch.empty(size + self.k, dtype=torch.float64, device=w.device)
        g[:size].copy_(self.gw32.view(-1)).mul_(1.0 / self.n).add_(w.reshape(-1),
                                                                    alpha=1.0 / self.reg)
        torch.sum(r, dim=0, out=g[size:])
        g[size:].mul_(1.0 / self.n)
        return g


def _single(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 with the entries below 1e-30 in size set to 0: float32 subnormals
    (the probabilities of unlikely classes) slow the products down several times."""
    import torch

    return torch.nn.functional.hardshrink(x.to(torch.float32), _TINY)


class _History:
    """L-BFGS's last HISTORY pairs (s, y) in float32, in preallocated rows; the last ``k``
    entries of each vector are the biases."""

    def __init__(self, size: int, k: int, device: torch.device) -> None:
        import torch

        self.k = k
        self.s = torch.empty(HISTORY, size, dtype=torch.float32, device=device)
        self.y = torch.empty(HISTORY, size, dtype=torch.float32, device=device)
        self.rho = [0.0] * HISTORY
        self.slots: list[int] = []  # oldest first

    def push(self, s: torch.Tensor, y: torch.Tensor, sy: float) -> None:
        slot = self.slots.pop(0) if len(self.slots) == HISTORY else len(self.slots)
        self.s[slot].copy_(s)
        self.y[slot].copy_(y)
        self.rho[slot] = 1.0 / sy
        self.slots.append(slot)

    def _gammas(self, scaling: torch.Tensor | None) -> tuple[float, float]:
        """H0's factors for the weights and for the biases: each block's own secant
        scaling s^T y / y^T diag(scaling) y from the last pair, the whole pair's where a
        block's is not positive. The biases carry no penalty and have a curvature of
        their own: one factor for both took up to 2.3x more steps."""
        import torch

        if not self.slots:
            return 1.0, 1.0
        last, k = self.slots[-1], self.k
        s, y = self.s[last], self.y[last]
        yd = y * scaling if scaling is not None else y
        sy_w, sy_b = float(torch.dot(s[:-k], y[:-k])), float(torch.dot(s[-k:], y[-k:]))
        yy_w, yy_b = float(torch.dot(y[:-k], yd[:-k])), float(torch.dot(y[-k:], yd[-k:]))
        if min(sy_w, sy_b, yy_w, yy_b) > 0:
            return sy_w / yy_w, sy_b / yy_b
        gamma = (sy_w + sy_b) / (yy_w + yy_b)
        return gamma, gamma

    def direction(self, g: torch.Tensor, scaling: torch.Tensor | None) -> torch.Tensor:
        """L-BFGS's direction -H g (two-loop recursion) with H0 = diag(scaling) times
        gamma_w on the weights and gamma_b on the biases, in float32: the recursion is
        bound by memory traffic, and the direction needs no more (the line search and the
        gradient are float64)."""
        import torch

        q = g.to(torch.float32)  # a copy: g is float64
        alphas = []
        for i in reversed(self.slots):
            a = self.rho[i] * float(torch.dot(self.s[i], q))
            alphas.append(a)
            q.add_(self.y[i], alpha=-a)
        gamma_w, gamma_b = self._gammas(scaling)
        if scaling is not None:
            q.mul_(scaling)
        q[:-self.k].mul_(gamma_w)
        q[-self.k:].mul_(gamma_b)
        for i, a in zip(self.slots, reversed(alphas), strict=True):
            q.add_(self.s[i], alpha=a - self.rho[i] * float(torch.dot(self.y[i], q)))
        return q.neg_()


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
    w = theta[:size]
    u = torch.zeros(n, k, dtype=torch.float64, device=z.device)
    value, p = head.at(u, 0.0)
    g = head.gradient(p.clone(), w)
    scale = float(g.abs().max())
    if scale == 0:
        return w.view(m, k), theta[size:], 0
    history = _History(size + k, k, z.device)
    bounds: list[float] = []
    steps = 0
    ww = 0.0
    while steps < max_iter:
        d32 = history.direction(g, scaling)
        d = d32.to(torch.float64)
        ud = head.logits_of(d32[:size].view(m, k), d[size:])
        wd, dd = float(torch.dot(w, d[:size])), float(torch.dot(d[:size], d[:size]))
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
        ww = float(torch.dot(w, w))
        # (this only steers the stop: the reported bound is evaluated afresh)
        trace_h = head.trace_hessian(p)
        g_new = head.gradient(p, w)
        y_new = g_new - g
        sy = float(torch.dot(step, y_new))
        if sy > 1e-300:
            history.push(step, y_new, sy)
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
    return w.view(m, k), theta[size:], steps


def _line_search(
    head: _Head, u: torch.Tensor, ud: torch.Tensor, value: float, slope0: float,
    ww: float, wd: float, dd: float, *, first: bool, p0: torch.Tensor,
) -> tuple[float, torch.Tensor, float, torch.Tensor]:
    """A step t along the direction meeting the strong Wolfe conditions (c1 1e-4, c2 0.9),
    by safeguarded Newton steps on the convex phi(t) inside a bracket; every trial is
    O(N K) on the logits u + t ud. Returns t (0 when none was found), the logits, the
    objective and the softmax there."""
    import torch

    n, reg = head.n, head.reg
    flat_ud = ud.view(-1)

    def curvature(p: torch.Tensor) -> float:
        pu = p * ud
        pud = pu.sum(dim=1)
        return float(torch.dot(pu.view(-1), flat_ud) - torch.dot(pud, pud)) / n + dd / reg

    ud_y = float(flat_ud[head.own].sum()) / n
    t = -slope0 / curvature(p0) if first else 1.0
    lo, hi = 0.0, math.inf
    for _ in range(_LINE_SEARCH_TRIALS):
        ut = torch.add(u, ud, alpha=t)
        value_t, p = head.at(ut, ww + 2 * t * wd + t * t * dd)
        slope = float(torch.dot(p.view(-1), flat_ud)) / n - ud_y + (wd + t * dd) / reg
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
            version="3",
            raw="PACTran-Gauss bound (lower is better), negated",
        )
    )
