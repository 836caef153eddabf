"""Linear probe: cross-validated accuracy of an L2-regularised linear classifier.

Reference: the linear evaluation protocol of representation learning (e.g. Kornblith,
Shlens, Le 2019, "Do Better ImageNet Models Transfer Better?", CVPR, arXiv 1805.08974,
where logistic regression on frozen features tracks fine-tuned accuracy), used as a
transferability baseline in Sorkhei et al. 2025 (TMLR, arXiv 2503.18528). The least-
squares classifier on one-hot targets ("ridge classifier", Rifkin and Klautau 2004,
JMLR 5, "In Defense of One-Vs-All Classification") is the default: its folds come in
closed form from one Gram matrix (:mod:`zoosel.scorers.ridge_cv`), at 2-4x the time of
one Gram where the logistic fit, an iterative solver, takes 40-70x.

Two solvers (``solver``), the same folds, standardisation, prediction and credit:

* ``"ridge"`` (default, l2 = 0.1): J(W, b) = (1/2n) sum_i |x~_i W + b - e_{y_i}|^2
  + l2/2 |W|_F^2 with e_c the one-hot vector of class c among the K training classes;
  W = (X~c^T X~c / n + l2 I)^-1 X~c^T Y / n (X~c: the centred standardised training
  rows), b = the training class frequencies. l2 = 0.1 (relative to unit feature
  variances) was the best or near-best of 0.01-3 on power-law features from N = 500,
  D = 2,048 to N = 5,000, D = 512, and as good as or better than the logistic solver
  there; at l2 <= 1e-3 and D near the training rows the fit interpolates (accuracy
  0.28-0.65 against 1.0 at 0.1 on 2,500 samples, D = 2,048, C = 100).
* ``"logistic"``: multinomial logistic regression by L-BFGS, as below (l2 = 1e-3).

Formula. The samples are split into F stratified folds; for each fold, the classifier
(here the logistic one) is fitted on the other folds and predicts the held-out one::

    x~ = (x - mu) / sigma          (mu, sigma: mean and population std of the training
                                    rows, per feature; features with sigma <= 1e-10 max|x|
                                    on the training rows are constant there and set to 0)
    J(W, b) = (1/n) sum_i [ logsumexp_c(x~_i W + b)_c - (x~_i W + b)_{y_i} ] + l2/2 |W|_F^2

over the K classes present in the training rows (W: (D, K), bias b unregularised).
A held-out sample gets credit 1[y in P] / |P| with P the classes whose logit is within
1e-9 (1 + max |logit|) of its largest (a tie shares the credit), and 0 when its class
is absent from the training rows. The score is the mean credit over all N samples
(each is held out exactly once), i.e. the pooled cross-validated accuracy.

Choices:

* folds: F = min(5, max(2, smallest class size)) (``folds``). Fold assignment is
  stratified and seeded (``seed``, default 0): the samples are ordered by class (classes
  in order of their first sample) and within a class by a seeded random permutation of
  all N indices, then dealt round-robin to the folds, so each class's count differs by
  at most one between folds, every class with at least F samples is in every training
  fold, and relabelling the classes changes nothing.
* regularisation: fixed l2 = 1e-3 on the mean loss (``l2``; sklearn's C = 1 /
  (l2 n)). Features are standardised, so one value serves any feature scale.
* fit: L-BFGS (memory 10, in compact form; Armijo backtracking from step 1, with Hager
  and Zhang's approximate Wolfe test once J is flat to round-off), deterministic, the
  state in float64, until max |dJ| <= 1e-6 (``gtol``; at most 500 iterations,
  ``max_iter``) for the gradient computed in float64. To save time, the two products
  with the (n, D) features run in float32 until that gradient bound is met (their
  error is ~1e-8) or the gradient stops improving for 20 iterations; the fit then goes
  on with float64 products until the float64 gradient meets the bound too. The initial
  inverse Hessian is (h rho + l2)^-1 on W and 1 / h on b, with rho the mean feature
  variance (1 after standardising) and h = 1 / C, the softmax curvature at uniform
  probabilities. At this tolerance the held-out predictions are those of the exact
  optimum except for samples within round-off of a decision boundary (on 2,500
  samples of 100 classes, 3 predictions differed from a fit to 1e-9).
* start: zero when D <= 2 r, r = min(2 C + 16, D, N). Otherwise the same problem is
  first solved (to 1e-5) in the r leading principal directions of all N rows'
  standardised features (labels unused; seeded randomised subspace iteration) with the
  exact diagonal preconditioner of that basis: cheap (r columns instead of D), it
  leaves the full fit only the small directions. The start changes the path, not the
  optimum.
* closed form where there is one: a training fold with one class predicts that class;
  when every feature is constant on the training rows, the fit is bias-only with
  softmax(b) = the class frequencies, b_c = log n_c - mean_c' log n_c'.

Invariances: relabelling the classes (folds and fit are label-symmetric); scale
invariance (global and per feature: standardisation) and translation invariance. Not
invariant to rotation (standardisation is per feature), and not to permuting the
samples: the seeded folds follow the sample order, so a permutation draws other folds.

Degenerate inputs: one class, fewer than 2 samples, NaN or inf: ScoringError. A class
with one sample: 2 folds, and that sample, held out, is never predicted (credit 0).
Constant features: the bias-only closed form, i.e. the training folds' majority class
(the score is the held-out frequency of the majority class, ties sharing credit), with
either solver (ridge: W = 0, b = the class frequencies).
N < D, D = 1, duplicated samples: ordinary fits (l2 > 0 keeps the optimum unique).

Direction: higher is better (an accuracy in [0, 1]); no sign flip.

Cost, ridge: one Gram matrix of the N rows (each fold's own, centred) and one D x D
Cholesky factorisation per fold, O(N D^2 + F D^3); or, when fewer flops, one n x n
kernel and factorisation per fold, O(F (n^2 D + n^3)).
Memory, ridge: (F + 1) D x D float64 matrices on the Gram route (0.2 GB at D = 2,048,
3.2 GB at 8,192); when the estimate exceeds half the memory available, each fold's
scatter is computed again instead of kept (the same values, one more Gram), with fewer
folds at once, then the other route; when nothing fits, a ScoringError says so (the
logistic solver needs O(N D) only). See :mod:`zoosel.scorers.ridge_cv`.
Cost, logistic: per fold and per L-BFGS iteration one (n, D) x (D, C) product for the logits and
one for the gradient, O(N D C) (float32 then float64), and as many in r columns for
the start; plus O(N D r) once for the principal directions.
"""

from __future__ import annotations

import contextlib
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from zoosel.errors import ScoringError
from zoosel.hookspecs import hookimpl
from zoosel.scorers.inputs import as_float64, check_labels
from zoosel.scorers.ridge_cv import RidgeFit, ridge_folds
from zoosel.threads import torch_threads
from zoosel.types import Need, ScoreInputs, Scorer

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

__all__ = [
    "DEFAULT_FOLDS",
    "DEFAULT_L2",
    "DEFAULT_RIDGE_L2",
    "DEFAULT_SOLVER",
    "LogisticFit",
    "ProbeResult",
    "Preconditioner",
    "RidgeFit",
    "SOLVERS",
    "fit_logistic",
    "fold_count",
    "linear_probe",
    "linear_probe_accuracy",
    "principal_directions",
    "register_scorers",
    "standardise",
    "stratified_folds",
]

DEFAULT_FOLDS = 5
SOLVERS = ("ridge", "logistic")
DEFAULT_SOLVER = "ridge"
DEFAULT_L2 = 1e-3  # the logistic solver's
DEFAULT_RIDGE_L2 = 0.1
GTOL = 1e-6
MAX_ITER = 500
MEMORY = 10
CONSTANT_RTOL = 1e-10  # sigma <= this * max|x|: the feature is constant
_LOGIT_TIE = 1e-9
_ARMIJO = 1e-4
_FLAT = 1e-6  # approximate Wolfe: loss changes below this (relative) are round-off
_FAST_GTOL = 1e-6  # float32 products: their gradient is accurate to ~1e-8
_FAST_PATIENCE = 20  # float32 products: iterations without a new smallest gradient
_MIN_STEP = 1e-12
_EXACT_EIGH_DIM = 256  # up to this many features the preconditioner's eigh is exact
_SUBSPACE_RATIO = 2  # warm-start in the top-r subspace when D > 2 r
_SUBSPACE_GTOL = 1e-5
_PARALLEL_FOLDS = True  # fit the folds on the caller's threads at once, one thread each
_PARALLEL_FOLD_WORK = 8_000_000  # N x D above which folds run one after the other instead
_RIDGE_ROUTE: str | None = None  # "gram" or "kernel" to override the flop count (tests)
_RIDGE_BUDGET: float | None = None  # bytes for the ridge folds; None: half the memory free


# ---------------------------------------------------------------------------- folds


def fold_count(labels: torch.Tensor, folds: int = DEFAULT_FOLDS) -> int:
    """min(folds, max(2, smallest class size)): the number of folds actually used."""
    import torch

    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ScoringError(f"folds must be an integer >= 2, got {folds!r}.")
    counts = torch.unique(labels, return_counts=True)[1]
    return min(folds, max(2, int(counts.min())))


def stratified_folds(labels: torch.Tensor, folds: int, seed: int = 0) -> torch.Tensor:
    """Fold id in 0..folds-1 of each sample (int64, (N,)), stratified and seeded.

    Samples are ordered by class (classes by first occurrence), within a class by a
    seeded random permutation of all indices, and dealt round-robin to the folds.
    """
    import torch

    y = labels.detach().to(device="cpu", dtype=torch.int64)
    n = y.numel()
    gen = torch.Generator().manual_seed(int(seed))
    key = torch.empty(n, dtype=torch.int64)
    key[torch.randperm(n, generator=gen)] = torch.arange(n)
    _, inverse = torch.unique(y, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), n, dtype=torch.int64)
    first.scatter_reduce_(0, inverse, torch.arange(n), reduce="amin")
    class_rank = torch.empty_like(first)
    class_rank[torch.argsort(first)] = torch.arange(first.numel())
    order = torch.argsort(class_rank[inverse] * n + key)
    fold = torch.empty(n, dtype=torch.int64)
    fold[order] = torch.arange(n) % folds
    return fold.to(labels.device)


# -------------------------------------------------------------------- standardising


def standardise(train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature ``(mean, inverse std)`` of ``train`` rows; 0 for constant features.

    ``(x - mean) * inv_std`` standardises any rows with the training statistics.
    """
    import torch

    mean = train.mean(dim=0)
    centred = train - mean
    std = torch.sqrt((centred * centred).mean(dim=0))
    peak = train.abs().amax(dim=0)
    varying = std > CONSTANT_RTOL * peak
    inv_std = torch.where(varying, 1.0 / torch.where(varying, std, 1.0), 0.0)
    return mean, inv_std


# -------------------------------------------------------------------- preconditioner


def principal_directions(
    x: torch.Tensor, rank: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``rank`` leading eigenpairs ``(lam, vec)`` of x^T x / n, largest first.

    Exact (``eigh``) for at most 256 columns, else randomised subspace iteration with a
    seeded Gaussian start and two power passes (Halko, Martinsson, Tropp 2011).
    """
    import torch

    n, d = x.shape
    rank = max(0, min(rank, d, n))
    if rank == 0:
        return x.new_zeros(0), x.new_zeros(d, 0)
    if d <= max(_EXACT_EIGH_DIM, rank):
        lam, vec = torch.linalg.eigh(x.T @ x / n)
        return lam.flip(0)[:rank].clamp_min(0), vec.flip(1)[:, :rank].contiguous()
    gen = torch.Generator().manual_seed(int(seed))
    width = min(rank + 10, d, n)
    omega = torch.randn(d, width, generator=gen, dtype=x.dtype).to(x.device)
    q = torch.linalg.qr(x @ omega).Q
    for _ in range(2):
        q = torch.linalg.qr(x @ (x.T @ q)).Q
    _, s, vt = torch.linalg.svd(q.T @ x, full_matrices=False)
    return s[:rank] ** 2 / n, vt[:rank].T.contiguous()


class Preconditioner:
    """Approximate inverse Hessian (h Cov + l2 I)^-1 on W and 1 / h on b, for L-BFGS.

    From eigenpairs ``(lam, vec)`` of the feature covariance and the mean eigenvalue
    ``rest`` of the others: sum_i e_i e_i^T / (h lam_i + l2) + (I - E E^T) / (h rest + l2)
    for each class's weights, 1 / h for the bias (h: the softmax curvature scale). With
    no eigenpairs it is a scalar per block. ``apply`` maps a flat parameter vector,
    W^T (K, D) row by row then b (K,), to the preconditioned one.
    """

    def __init__(
        self, lam: torch.Tensor, vec: torch.Tensor, rest: float, h: float, l2: float
    ) -> None:
        self.vec = vec
        self.rest_scale = 1.0 / (h * rest + l2)
        self.top_extra = 1.0 / (h * lam + l2) - self.rest_scale
        self.bias_scale = 1.0 / h

    @classmethod
    def from_features(
        cls, x: torch.Tensor, h: float, l2: float, rank: int = 0, seed: int = 0
    ) -> Preconditioner:
        """From the covariance of centred ``x`` (n, D): ``rank`` eigenpairs, mean of the rest."""
        n, d = x.shape
        trace = float((x * x).sum()) / n
        lam, vec = principal_directions(x, rank, seed)
        k = vec.shape[1]
        rest = max(trace - float(lam.sum()), 0.0) / (d - k) if d > k else 0.0
        return cls(lam, vec, rest, h, l2)

    def apply(self, g: torch.Tensor, num_classes: int) -> torch.Tensor:
        out = g * self.rest_scale
        d = self.vec.shape[0]
        if self.vec.shape[1]:
            coef = (g[: num_classes * d].view(num_classes, d) @ self.vec).mul_(self.top_extra)
            out[: num_classes * d].view(num_classes, d).addmm_(coef, self.vec.T)
        out[num_classes * d:] = g[num_classes * d:] * self.bias_scale
        return out


# --------------------------------------------------------------------------- fitting


@dataclass(frozen=True)
class LogisticFit:
    """A fitted multinomial logistic regression: logits = x @ weight + bias."""

    weight: torch.Tensor
    """(D, K) float64."""
    bias: torch.Tensor
    """(K,) float64."""
    loss: float
    """J(W, b) at the fit, with float64 products."""
    grad_max: float
    """max |dJ|, with float64 products."""
    iterations: int
    evaluations: int
    converged: bool


def _loss_grad(
    x: torch.Tensor, y: torch.Tensor, theta: torch.Tensor, num_classes: int, l2: float,
    rows: torch.Tensor,
) -> tuple[float, torch.Tensor]:
    """J and its gradient at the flat theta = [W^T (K, D) row by row, b (K,)].

    ``x`` may be float32: then only the two products with it run in float32, the rest
    in float64 (theta's dtype).
    """
    import torch

    n, d = x.shape
    split = num_classes * d
    wt, b = theta[:split].view(num_classes, d), theta[split:]
    logits = torch.addmm(b.to(x.dtype), x, wt.to(x.dtype).T)
    logp = torch.log_softmax(logits.to(theta.dtype), dim=1)
    loss = -float(logp[rows, y].sum()) / n + 0.5 * l2 * float(wt.reshape(-1).dot(wt.reshape(-1)))
    p = logp.exp_()  # softmax, in place
    p[rows, y] -= 1.0
    grad = torch.empty_like(theta)
    gw = grad[:split].view(num_classes, d)
    if x.dtype == theta.dtype:
        torch.mm(p.T, x, out=gw)
    else:
        gw.copy_(p.to(x.dtype).T @ x)
    gw.mul_(1.0 / n).add_(wt, alpha=l2)
    torch.sum(p, dim=0, out=grad[split:]).mul_(1.0 / n)
    return loss, grad


class _Memory:
    """L-BFGS memory in compact form (Byrd, Nocedal, Schnabel 1994, Theorem 2.2).

    With H0 = gamma M (M the preconditioner), S and Y the last m steps and gradient
    changes, R the upper triangle of S^T Y and D its diagonal::

        H g = H0 g + S p1 + H0 Y p2,   p2 = -R^-1 S^T g,
        p1 = R^-T ((D + Y^T H0 Y) R^-1 S^T g - Y^T H0 g)

    so a direction costs two (m, P) products instead of 4 m vector operations; the
    m x m algebra runs in numpy.
    """

    def __init__(self, size: int, like: torch.Tensor, m: int, precond: Preconditioner,
                 num_classes: int) -> None:
        import numpy as np
        import torch

        self.precond = precond
        self.k = num_classes
        self.m = m
        self.s = torch.zeros(m, size, dtype=like.dtype, device=like.device)
        self.y = torch.zeros_like(self.s)
        self.my = torch.zeros_like(self.s)  # M y, unscaled
        self.sty = np.zeros((m, m))  # s_i . y_j, by slot
        self.ymy = np.zeros((m, m))  # y_i . M y_j, by slot
        self.order: list[int] = []  # slots, oldest first
        self.gamma = 1.0

    def clear(self) -> None:
        self.order = []

    def direction(self, g: torch.Tensor) -> torch.Tensor:
        """-H g."""
        import numpy as np
        import scipy.linalg
        import torch

        mg = self.precond.apply(g, self.k)
        if not self.order:
            return mg.mul_(-self.gamma)
        idx = np.asarray(self.order)
        a = (self.s @ g).cpu().numpy()[idx]
        b = self.gamma * (self.my @ g).cpu().numpy()[idx]
        r = np.triu(self.sty[np.ix_(idx, idx)])
        inner = np.diag(np.diag(r)) + self.gamma * self.ymy[np.ix_(idx, idx)]
        r_inv_a = scipy.linalg.solve_triangular(r, a, lower=False)
        p1 = scipy.linalg.solve_triangular(r, inner @ r_inv_a - b, trans="T", lower=False)
        coef = np.zeros((2, self.m))
        coef[0, idx] = p1
        coef[1, idx] = -self.gamma * r_inv_a
        c = torch.from_numpy(coef).to(dtype=mg.dtype, device=mg.device)
        out = mg.mul_(self.gamma).addmv_(self.s.T, c[0])
        return out.addmv_(self.my.T, c[1]).neg_()

    def push(self, step: torch.Tensor, change: torch.Tensor, sy: float) -> None:
        """Remember one (s, y) pair with s . y = sy > 0."""
        slot = len(self.order) if len(self.order) < self.m else self.order.pop(0)
        self.order.append(slot)
        self.s[slot] = step
        self.y[slot] = change
        my = self.precond.apply(change, self.k)
        self.my[slot] = my
        self.sty[slot, :] = (self.y @ step).cpu().numpy()
        self.sty[:, slot] = (self.s @ change).cpu().numpy()
        ymy = (self.y @ my).cpu().numpy()
        self.ymy[slot, :] = ymy
        self.ymy[:, slot] = ymy
        self.gamma = sy / float(ymy[slot])


def fit_logistic(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float = DEFAULT_L2, *,
    gtol: float = GTOL, max_iter: int = MAX_ITER, preconditioner: Preconditioner | None = None,
    init: torch.Tensor | None = None, fast: bool = True,
) -> LogisticFit:
    """Minimise J(W, b) (module docstring) by L-BFGS; the state is float64.

    :param x: (n, D) float64 features, used as given (standardise them first).
    :param y: (n,) labels in 0..num_classes-1.
    :param preconditioner: the initial inverse Hessian; by default the scalar one for
        h = 1 / num_classes and the mean feature variance.
    :param init: (D + 1, K) starting [W; b]; zero by default.
    :param fast: run the products with ``x`` in float32 until the gradient meets
        ``gtol``, then in float64 until the float64 gradient meets it.
    """
    import torch

    n, d = x.shape
    k = num_classes
    x = x.contiguous()
    x_fast = x.to(torch.float32) if fast and x.dtype != torch.float32 else None
    if preconditioner is None:
        preconditioner = Preconditioner.from_features(x - x.mean(dim=0), 1 / k, l2)
    rows = torch.arange(n, device=x.device)
    theta = torch.zeros(k * d + k, dtype=x.dtype, device=x.device)
    if init is not None:
        init = init.to(theta)
        theta[: k * d] = init[:-1].T.reshape(-1)
        theta[k * d:] = init[-1]
    current = x if x_fast is None else x_fast
    loss, grad = _loss_grad(current, y, theta, k, l2, rows)
    evaluations = 1
    memory = _Memory(theta.numel(), theta, MEMORY, preconditioner, k)
    grad_max = float(torch.linalg.vector_norm(grad, math.inf))
    iterations = 0
    best, since_best = grad_max, 0  # float32 products stall when their round-off dominates
    while iterations < max_iter:
        if current is x and grad_max <= gtol:
            break
        if current is not x and (
            grad_max <= max(gtol, _FAST_GTOL) or not math.isfinite(loss)
            or since_best >= _FAST_PATIENCE
        ):
            current = x  # confirm, and finish if needed, with float64 products
            loss, grad = _loss_grad(current, y, theta, k, l2, rows)
            evaluations += 1
            grad_max = float(torch.linalg.vector_norm(grad, math.inf))
            continue
        iterations += 1
        direction = memory.direction(grad)
        slope = float(grad.dot(direction))
        if not slope < 0:  # not a descent direction (round-off): restart the memory
            memory.clear()
            direction = memory.direction(grad)
            slope = float(grad.dot(direction))
        step = 1.0
        while True:
            trial = torch.add(theta, direction, alpha=step)
            new_loss, new_grad = _loss_grad(current, y, trial, k, l2, rows)
            evaluations += 1
            if _acceptable(loss, slope, step, new_loss, new_grad, direction):
                break
            step *= 0.5
            if step < _MIN_STEP:
                break
        if step < _MIN_STEP:  # no progress possible at this precision
            if current is x:
                break
            grad_max = 0.0  # switch to float64 products
            continue
        s_new = trial.sub_(theta)
        y_new = grad.neg_().add_(new_grad)
        sy = float(s_new.dot(y_new))
        if sy > 0:
            memory.push(s_new, y_new, sy)
        theta, loss, grad = s_new.add_(theta), new_loss, new_grad
        grad_max = float(torch.linalg.vector_norm(grad, math.inf))
        best, since_best = (grad_max, 0) if grad_max < best else (best, since_best + 1)
    if current is not x:  # max_iter reached with float32 products: report float64 values
        loss, grad = _loss_grad(x, y, theta, k, l2, rows)
        evaluations += 1
        grad_max = float(torch.linalg.vector_norm(grad, math.inf))
    if not math.isfinite(loss):
        raise ScoringError("linear probe: the logistic regression loss is not finite.")
    return LogisticFit(
        theta[: k * d].view(k, d).T.contiguous(), theta[k * d:].clone(), loss, grad_max,
        iterations, evaluations, grad_max <= gtol,
    )


def _acceptable(
    loss: float, slope: float, step: float, new_loss: float, new_grad: torch.Tensor,
    direction: torch.Tensor,
) -> bool:
    """Armijo, or Hager and Zhang's approximate Wolfe test when J is flat to round-off."""
    if not math.isfinite(new_loss):
        return False
    if new_loss <= loss + _ARMIJO * step * slope:
        return True
    if new_loss > loss + _FLAT * abs(loss):
        return False
    new_slope = float(new_grad.dot(direction))
    return new_slope <= (2 * _ARMIJO - 1) * slope


def _bias_only(
    y: torch.Tensor, num_classes: int, num_features: int, dtype, device
) -> LogisticFit:
    """Closed form with no usable feature: softmax(b) = class frequencies."""
    import torch

    counts = torch.bincount(y, minlength=num_classes).to(dtype)
    log_counts = torch.log(counts)
    bias = log_counts - log_counts.mean()
    loss = float(-(counts / counts.sum() * torch.log(counts / counts.sum())).sum())
    weight = torch.zeros(num_features, num_classes, dtype=dtype, device=device)
    return LogisticFit(weight, bias.to(device), loss, 0.0, 0, 0, True)


# ------------------------------------------------------------------------ the probe


@dataclass(frozen=True)
class ProbeResult:
    """Outcome of the cross-validated probe."""

    accuracy: float
    folds: torch.Tensor
    """(N,) fold id of each sample."""
    credit: torch.Tensor
    """(N,) float64 credit of each sample when held out."""
    fits: tuple[RidgeFit | LogisticFit | None, ...]
    """Per fold (the solver's fit); logistic: None when the training rows hold a single
    class."""
    classes: tuple[torch.Tensor, ...]
    """Per fold, the label values (increasing) that the fit's columns refer to."""


def _credit(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1[target among the top logits] / (number of top logits); target -1: credit 0."""
    top = logits.amax(dim=1, keepdim=True)
    winners = logits >= top - _LOGIT_TIE * (1.0 + top.abs())
    hit = winners.gather(1, target.clamp_min(0)[:, None]).squeeze(1) & (target >= 0)
    return hit.to(logits.dtype) / winners.sum(dim=1).to(logits.dtype)


def linear_probe(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None, *,
    folds: int = DEFAULT_FOLDS, l2: float | None = None, seed: int = 0,
    solver: str = DEFAULT_SOLVER, gtol: float = GTOL, max_iter: int = MAX_ITER,
) -> ProbeResult:
    """The cross-validated linear probe with per-fold details; see the module docstring.

    ``l2`` defaults to the solver's (:data:`DEFAULT_RIDGE_L2`, :data:`DEFAULT_L2`);
    ``gtol`` and ``max_iter`` apply to the logistic solver only.
    """
    import torch

    if solver not in SOLVERS:
        raise ScoringError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}.")
    x = as_float64(features, "features")
    n, d = x.shape
    y = check_labels(labels, n, num_classes).to(x.device)
    if l2 is None:
        l2 = DEFAULT_RIDGE_L2 if solver == "ridge" else DEFAULT_L2
    if isinstance(l2, bool) or not (
        isinstance(l2, (int, float)) and math.isfinite(l2) and l2 > 0
    ):
        raise ScoringError(f"l2 must be a positive finite number, got {l2!r}.")
    n_folds = fold_count(y, folds)
    fold = stratified_folds(y, n_folds, seed)
    if solver == "ridge":
        outcomes = _ridge_outcomes(x, y, fold, n_folds, float(l2))
    else:
        outcomes = _logistic_outcomes(x, y, fold, n_folds, float(l2), seed, gtol, max_iter)
    with torch_threads(1):  # one order of addition for any thread count
        credit = torch.zeros(n, dtype=x.dtype, device=x.device)
        for test, _, _, fold_credit in outcomes:
            credit[test] = fold_credit
        accuracy = float(credit.mean())
    fits = [fit for _, _, fit, _ in outcomes]
    classes_per_fold = [classes for _, classes, _, _ in outcomes]
    if not math.isfinite(accuracy):
        raise ScoringError("linear probe accuracy is not finite.")
    return ProbeResult(accuracy, fold, credit, tuple(fits), tuple(classes_per_fold))


def _workers(x: torch.Tensor, n_folds: int, limit: float = _PARALLEL_FOLD_WORK) -> int:
    """Folds fitted at once, one thread each (CPU, up to ``limit`` values N x D)."""
    import torch

    n, d = x.shape
    on_cpu = x.device.type == "cpu" and _PARALLEL_FOLDS and n * d <= limit
    return min(n_folds, torch.get_num_threads()) if on_cpu else 1


def _ridge_outcomes(
    x: torch.Tensor, y: torch.Tensor, fold: torch.Tensor, n_folds: int, l2: float
) -> list[tuple[torch.Tensor, torch.Tensor, RidgeFit, torch.Tensor]]:
    """Per fold: held-out rows, training classes, ridge fit, credits."""
    import torch

    values, codes = torch.unique(y, return_inverse=True)
    # Folds one thread each at every size: the D x D Cholesky factorisations gain little
    # from a second thread on busy cores (0.14 s at one thread, 0.18 s at two, D = 2,048),
    # and the result does not depend on the thread count.
    workers = _workers(x, n_folds, math.inf)
    outcomes = []
    for fit, test, logits in ridge_folds(x, codes, fold, n_folds, l2, rtol=CONSTANT_RTOL,
                                         workers=workers, route=_RIDGE_ROUTE,
                                         budget=_RIDGE_BUDGET):
        lookup = torch.full((values.numel(),), -1, dtype=torch.int64, device=x.device)
        lookup[fit.classes] = torch.arange(fit.classes.numel(), device=x.device)
        target = lookup[codes[test]]
        outcomes.append((test, values[fit.classes], fit, _credit(logits, target)))
    return outcomes


def _logistic_outcomes(
    x: torch.Tensor, y: torch.Tensor, fold: torch.Tensor, n_folds: int, l2: float, seed: int,
    gtol: float, max_iter: int,
) -> list[tuple[torch.Tensor, torch.Tensor, LogisticFit | None, torch.Tensor]]:
    """Per fold: held-out rows, training classes, logistic fit (None: one class), credits."""
    import torch

    n, d = x.shape
    num_present = torch.unique(y).numel()
    # Every operation runs on one thread (CPU), and with T torch threads T folds are
    # fitted at once: the many small L-BFGS operations gain nothing from more threads, an
    # operation split over busy cores waits for the slowest, and a one-thread reduction
    # adds in one order, so the result does not depend on T.
    # Above _PARALLEL_FOLD_WORK values the products dominate and keep several threads busy
    # on their own; fitting folds one thread each would leave cores idle on the last round.
    workers = _workers(x, n_folds)
    on_cpu = workers > 1

    def single() -> contextlib.AbstractContextManager:
        return torch_threads(1) if on_cpu else contextlib.nullcontext()

    with single():
        # Labels unused here: all rows' standardised features give the scalar preconditioner
        # of every fold and, when D is large, the top-r principal directions in which the
        # same problem is solved first, cheaply, as the starting point of the full fit.
        mean_all, inv_all = standardise(x)
        x_all = (x - mean_all) * inv_all
        h = 1.0 / num_present
        rank = min(2 * num_present + 16, d, n)
        precond = Preconditioner.from_features(x_all, h, l2)
        sub = None
        if d > _SUBSPACE_RATIO * rank:
            _, vec = principal_directions(x_all, rank, seed)
            z_all = x_all @ vec
            sub = (vec, z_all, Preconditioner.from_features(z_all, h, l2, rank))
        del x_all

    def one_fold(k: int) -> tuple[torch.Tensor, torch.Tensor, LogisticFit | None, torch.Tensor]:
        test = (fold == k).nonzero().squeeze(1)
        train = (fold != k).nonzero().squeeze(1)
        classes, y_train = torch.unique(y[train], return_inverse=True)
        # position of each test label among the training classes, -1 when absent
        lookup = torch.full((int(y.max()) + 1,), -1, dtype=torch.int64, device=x.device)
        lookup[classes] = torch.arange(classes.numel(), device=x.device)
        target = lookup[y[test]]
        if classes.numel() == 1:
            return test, classes, None, (target == 0).to(x.dtype)
        mu, inv = standardise(x[train])
        if not bool((inv > 0).any()):
            fit = _bias_only(y_train, classes.numel(), d, x.dtype, x.device)
            logits = fit.bias.expand(test.numel(), -1)
        else:
            init = None
            if sub is not None:
                vec, z_all, sub_precond = sub
                start = fit_logistic(
                    z_all[train], y_train, classes.numel(), l2, gtol=_SUBSPACE_GTOL,
                    max_iter=max_iter, preconditioner=sub_precond,
                )
                # from all rows' standardisation to this fold's: x_all = (x_fold / inv
                # + mu - mean_all) * inv_all, so W_fold = (inv_all / inv) W_all
                w_all = vec @ start.weight
                ratio = torch.where(inv > 0, inv_all / torch.where(inv > 0, inv, 1.0), 0.0)
                bias = start.bias + ((mu - mean_all) * inv_all) @ w_all
                init = torch.cat([ratio[:, None] * w_all, bias[None]], dim=0)
            fit = fit_logistic(
                (x[train] - mu) * inv, y_train, classes.numel(), l2, gtol=gtol,
                max_iter=max_iter, preconditioner=precond, init=init,
            )
            logits = ((x[test] - mu) * inv) @ fit.weight + fit.bias
        return test, classes, fit, _credit(logits, target)

    with single():
        if workers > 1:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                outcomes = list(pool.map(one_fold, range(n_folds)))
        else:
            outcomes = [one_fold(k) for k in range(n_folds)]
    return outcomes


def linear_probe_accuracy(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None, *,
    folds: int = DEFAULT_FOLDS, l2: float | None = None, seed: int = 0,
    solver: str = DEFAULT_SOLVER,
) -> float:
    """Cross-validated accuracy of a regularised linear classifier (higher is better).

    :param features: (N, D) float features, any dtype or device (computed in float64).
    :param labels: (N,) integer class labels.
    :param num_classes: optional upper bound used only to validate ``labels``.
    :param folds: at most this many stratified folds (fewer for small classes).
    :param l2: L2 strength on the mean loss of standardised features; by default
        the solver's (:data:`DEFAULT_RIDGE_L2`, :data:`DEFAULT_L2`).
    :param seed: seeds the fold assignment.
    :param solver: "ridge" (least squares on one-hot targets, closed form, default) or
        "logistic" (multinomial cross-entropy, L-BFGS).
    :raises ScoringError: on unusable input.
    """
    return linear_probe(
        features, labels, num_classes, folds=folds, l2=l2, seed=seed, solver=solver
    ).accuracy


def _score(inputs: ScoreInputs, solver: str = DEFAULT_SOLVER) -> float:
    if inputs.features is None:
        raise ScoringError("the linear probe needs features.")
    return linear_probe_accuracy(inputs.features, inputs.labels, inputs.num_classes,
                                 solver=solver)


@hookimpl
def register_scorers(register: Callable[[Scorer], None]) -> None:
    """Register the linear probe."""
    register(
        Scorer(
            name="linear_probe",
            fn=_score,
            needs=frozenset({Need.FEATURES}),
            summary="Stratified 5-fold cross-validated accuracy of an L2-regularised linear "
            "classifier (ridge on one-hot targets) on standardised features.",
            reference="Kornblith et al. 2019, CVPR (arXiv 1805.08974); as a transferability "
            "baseline: Sorkhei et al. 2025, TMLR (arXiv 2503.18528); ridge classifier: "
            "Rifkin and Klautau 2004, JMLR 5",
            cost="one Gram O(N D^2) + a D x D Cholesky per fold (or an n x n kernel per fold)",
            version="2",  # 1: logistic regression by L-BFGS (now solver="logistic")
            options={"solver": SOLVERS},
        )
    )
