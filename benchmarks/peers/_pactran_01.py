"""zoosel 0.1's PACTran-Gauss, kept as it was for the benchmark's before/after.

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
b + c 1, which no gradient step ever moves) from theta = 0 with torch.optim.LBFGS in
float64 (strong-Wolfe line search, history 20), deterministic, no randomness, no seed. It
runs 10 steps at a time and stops when the largest gradient entry is below 1e-6 of its
value at 0, or when the bound (one extra forward product per 10 steps) moved by less
than 2e-8 (relative) over the last 10 steps while the gradient is below 1e-4 of its start,
or after 500 steps. The objective is very flat near its minimum (its curvature is 1/N
along most directions): on noisy labels the gradient keeps shrinking for hundreds of
steps after the bound has settled (2,500 x 128 features, 50 classes, half the labels
redrawn: 150 steps instead of 359, bounds 2.5e-8 apart; on clean labels the gradient
rule ends first, as before). The bound is tested against a far tighter independent fit
(to a few 1e-6).
When N < D the weights live in the row space of the centred features (the
penalty is rotation invariant and the gradient F^T G never leaves it), so zoosel fits the
same head on the N-dimensional coordinates of that row space (one N x N eigh) and reads
|x_i| and the bound there; d stays D K.

The literature's quantity is a bound on the generalisation error (lower is better):
zoosel reports its negation (``raw`` says so).

Degenerate inputs. Constant features (the head reduces to the bias: R = the label
entropy) give a finite value, as do a class with one sample, duplicated samples,
N < D and D = 1. Classes absent from the labels are left out (a class nobody belongs
to has no finite optimum).

Invariances: permutation of samples, relabelling of classes, translation and rotation of
the features. Not scale invariant (the prior variance is fixed).

Direction: higher is better after negation.
Cost: O(N D K) per L-BFGS iteration (one forward and one backward product), typically a
few hundred iterations; O(N^2 D + N^3) extra when N < D.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

from zoosel.errors import ScoringError
from zoosel.hookspecs import hookimpl
from zoosel.scorers.inputs import as_float64
from zoosel.scorers.sfda import class_indices
from zoosel.threads import serial
from zoosel.threads import torch_threads as threads
from zoosel.types import Need, ScoreInputs, Scorer

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

__all__ = ["PACTranFit", "pactran", "pactran_fit", "register_scorers"]

LDA_FACTOR = 1.0  # lam s0^2 = LDA_FACTOR * N
PRIOR_VARIANCE_FACTOR = 100.0  # s0^2 = PRIOR_VARIANCE_FACTOR / D
GRAD_RTOL = 1e-6
MAX_ITER = 500
HISTORY = 20
STABLE_STEPS = 10  # the bound is checked every this many L-BFGS steps ...
BOUND_RTOL = 2e-8  # ... and the fit stops once it moved less than this (relative) ...
STABLE_GRAD = 1e-4  # ... with the gradient below this, relative to its start
_RANK_RTOL = 1e-12
_SERIAL_WORK = 20_000_000  # N x D x K up to which the fit runs on one thread


@dataclass(frozen=True)
class PACTranFit:
    """The fitted head and every term of the bound (float64; ``score`` = -``bound``).

    ``risk`` is R(theta*), ``penalty`` |W*|^2 / (2 lam s0^2), ``trace_hessian`` tr(H),
    ``complexity`` d / (2 lam) log(1 + lam s0^2 tr(H) / d). ``weight`` is in the
    coordinates ``z`` the head was fitted on (the centred features, or their row-space
    coordinates when N < D); ``z`` and ``y`` (0..K-1) are returned for checking.
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


def _objective(
    z: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, reg: float
) -> torch.Tensor:
    import torch

    logits = z @ weight + bias
    return torch.nn.functional.cross_entropy(logits, y) + 0.5 * (weight * weight).sum() / reg


def _row_space(xc: torch.Tensor) -> torch.Tensor:
    """Coordinates of the rows of ``xc`` (N < D) in an orthonormal basis of their span."""
    import torch

    with serial():
        evals, vecs = torch.linalg.eigh(xc @ xc.T)
    top = float(evals[-1])
    keep = evals > _RANK_RTOL * top if top > 0 else evals > 0
    return vecs[:, keep] * evals[keep].sqrt()


def _minimise(
    opt: torch.optim.LBFGS, closure: Callable[[], torch.Tensor], params: list[torch.Tensor],
    bound: Callable[[], float], scale: float, max_iter: int,
) -> int:
    """Run ``opt`` STABLE_STEPS steps at a time until it stops on its own (the gradient
    criterion), or the bound moved by less than BOUND_RTOL (relative) over the last chunk
    with the gradient below STABLE_GRAD of its start, or ``max_iter`` steps; the steps."""
    import torch

    last = None
    steps = 0
    while steps < max_iter:
        before = _steps(opt)
        opt.step(closure)
        done = _steps(opt) - before
        steps += done
        if done < STABLE_STEPS:
            break
        with torch.no_grad():
            value = bound()
        gmax = max(float(p.grad.abs().max()) for p in params if p.grad is not None)
        if (last is not None and gmax <= STABLE_GRAD * scale
                and abs(value - last) <= BOUND_RTOL * abs(value)):
            break
        last = value
    return steps


def _steps(opt: torch.optim.LBFGS) -> int:
    state = opt.state_dict()["state"]
    return int(state[0].get("n_iter", 0)) if state else 0


def pactran_fit(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int | None = None,
    *,
    lda_factor: float = LDA_FACTOR,
    prior_variance_factor: float = PRIOR_VARIANCE_FACTOR,
    max_iter: int = MAX_ITER,
    grad_rtol: float = GRAD_RTOL,
) -> PACTranFit:
    """Fit the regularised softmax head and evaluate the PACTran-Gauss bound.

    :param features: (N, D) float features, any dtype or device (computed in float64).
    :param labels: (N,) integer class labels.
    :param num_classes: optional upper bound used only to validate ``labels``.
    :param lda_factor: lam s0^2 = lda_factor N.
    :param prior_variance_factor: s0^2 = prior_variance_factor / D.
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
    z = _row_space(xc) if n < dim else xc
    reg = lda_factor * n  # lam s0^2
    prior_variance = prior_variance_factor / dim
    lam = reg / prior_variance
    num_weights = dim * k

    weight = torch.zeros(z.shape[1], k, dtype=torch.float64, device=f.device, requires_grad=True)
    bias = torch.zeros(k, dtype=torch.float64, device=f.device, requires_grad=True)
    with torch.enable_grad():
        first = _objective(z, y, weight, bias, reg)
        g0 = torch.autograd.grad(first, [weight, bias])
    scale = max(float(g.abs().max()) for g in g0)
    opt = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=STABLE_STEPS, max_eval=100 * STABLE_STEPS,
        tolerance_grad=grad_rtol * scale if scale > 0 else 1e-300,
        tolerance_change=1e-15 * max(1.0, float(first.detach())),
        history_size=HISTORY, line_search_fn="strong_wolfe",
    )

    # L-BFGS's many vector operations run on one thread (on a loaded machine their
    # parallel regions cost more than the arithmetic); the products of large heads get
    # the caller's threads back inside the closure.
    caller = torch.get_num_threads()
    big = n * z.shape[1] * k > _SERIAL_WORK

    def closure() -> torch.Tensor:
        with threads(caller) if big else nullcontext():
            opt.zero_grad()
            loss = _objective(z, y, weight, bias, reg)
            loss.backward()
        return loss

    norms = (z * z).sum(dim=1) + 1.0

    def _bound_at() -> float:
        with torch.no_grad(), threads(caller) if big else nullcontext():
            logits = z @ weight + bias
        log_p = torch.log_softmax(logits, dim=1)
        p = log_p.exp()
        value = (float(-log_p.gather(1, y[:, None]).mean())
                 + float((weight * weight).sum()) / (2 * reg))
        trace_h = float((norms * (p * (1 - p)).sum(dim=1)).sum()) / n
        return value + num_weights / (2 * lam) * math.log1p(reg * trace_h / num_weights)

    iterations = 0
    if scale > 0:
        with torch.enable_grad(), serial():
            iterations = _minimise(opt, closure, [weight, bias], _bound_at, scale, max_iter)

    w, b = weight.detach(), bias.detach()
    with torch.no_grad():
        logits = z @ w + b
        log_p = torch.log_softmax(logits, dim=1)
        p = log_p.exp()
        risk = float(-log_p.gather(1, y[:, None]).mean())
        penalty = float((w * w).sum()) / (2 * reg)
        spread = (p * (1 - p)).sum(dim=1)
        trace_h = float((((z * z).sum(dim=1) + 1.0) * spread).sum()) / n
        complexity = num_weights / (2 * lam) * math.log1p(reg * trace_h / num_weights)
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
            raw="PACTran-Gauss bound (lower is better), negated",
        )
    )
