"""Cross-validated ridge (least-squares) classifiers, all folds from one Gram matrix.

For fold k with training rows T (n of them), standardised by their own mean mu and
population std sigma (x~ = (x - mu) * s, s = 1 / sigma, 0 for a feature constant on T),
the classifier with one-hot targets Y over the classes present in T minimises::

    J(W, b) = (1 / 2n) |X~ W + 1 b^T - Y|_F^2 + l2 / 2 |W|_F^2,

    (S C S / n + l2 I) W = S (X_T - 1 mu^T)^T Y / n,    b = the class frequencies on T,

with C the centred scatter of T and S = diag(s). Two equivalent ways to get W:

* Gram route: each fold's rows are centred on their own mean and give the fold's Gram
  (scatter) matrix, per-class sums and per-feature range once (together one Gram of the
  N rows); fold k's C pools the other folds' scatters with the between-fold term
  sum_j n_j d_j d_j^T, d_j = (fold j's mean - mu) (Chan, Golub, LeVeque 1979), so no
  digit is lost to a large mean. One Cholesky factorisation of the D x D system per fold.
* Kernel route: W = X~^T (X~ X~^T / n + l2 I)^-1 Y / n (the same W by the push-through
  identity), one n x n kernel and Cholesky factorisation per fold; cheaper when D is
  large against the training rows.

The route is chosen by a flop count (:func:`choose_route`); the folds run on the caller's
threads one thread each (``workers`` at once), so the result does not depend on the
thread count.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from zoosel.errors import ScoringError
from zoosel.threads import one_torch_thread, torch_threads

if TYPE_CHECKING:
    import torch

__all__ = ["RidgeFit", "cholesky_lower", "choose_route", "ridge_folds"]

# Cost in Gram flops: the blocked float64 Cholesky below takes about 3 Gram flops per
# flop (D = 2,048, one thread: 0.066 s for D^3/3 flops, Gram 0.22 s for 2 N D^2 at
# N = 2,500).
_CHOLESKY_COST = 1.0  # per d^3 of one factorisation (blocked, below: about half LAPACK's)
_BLOCK = 128  # Cholesky block size: 128-256 were fastest at D = 512-2,048, one thread


@dataclass(frozen=True)
class RidgeFit:
    """One fold's ridge classifier: logits = ((x - mean) * inv_std) @ weight + bias."""

    weight: torch.Tensor
    """(D, K) float64, K the classes present in the training rows."""
    bias: torch.Tensor
    """(K,) float64: the training class frequencies."""
    mean: torch.Tensor
    """(D,) training mean."""
    inv_std: torch.Tensor
    """(D,) 1 / training std, 0 for features constant on the training rows."""
    classes: torch.Tensor
    """(K,) the class codes present in the training rows, increasing."""
    route: str
    """"gram" or "kernel"."""


def choose_route(n: int, d: int, folds: int) -> str:
    """"gram" when one N-row Gram and a D x D factorisation per fold cost less than a
    kernel and an n x n factorisation per fold (n = the training rows), else "kernel"."""
    n_train = n - n // folds
    gram = 2.0 * n * d * d + folds * _CHOLESKY_COST * d**3
    kernel = folds * (2.0 * n_train * n_train * d + _CHOLESKY_COST * n_train**3)
    return "gram" if gram <= kernel else "kernel"


def cholesky_lower(a: torch.Tensor, block: int = _BLOCK) -> torch.Tensor:
    """The lower Cholesky factor of symmetric positive definite ``a``, computed in place.

    Right-looking and blocked: factor a diagonal block, solve the panel below it, update
    the lower trailing blocks by products. Only the lower triangle of ``a`` is read,
    and only it holds the factor: the strict upper triangle is zero in the diagonal
    blocks and left as it was elsewhere (``torch.cholesky_solve`` reads the lower one).
    On one thread it took 0.066 s where LAPACK's ``potrf`` took 0.13 s (D = 2,048,
    float64, torch's MKL), 0.010 s against 0.024 s at D = 1,024.
    """
    import torch

    n = a.shape[0]
    for j in range(0, n, block):
        e = min(j + block, n)
        factor, info = torch.linalg.cholesky_ex(a[j:e, j:e])
        if int(info) != 0:
            raise ScoringError(
                "linear probe: the ridge system is not positive definite to working "
                "precision; use a larger l2.")
        a[j:e, j:e] = factor
        if e == n:
            break
        panel = torch.linalg.solve_triangular(factor.T, a[e:, j:e], upper=True, left=False)
        a[e:, j:e] = panel
        for i in range(e, n, block):
            stop = min(i + block, n)
            a[i:, i:stop].addmm_(panel[i - e:], panel[i - e:stop - e].T, alpha=-1.0)
    return a


def _cholesky_solve(a: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """a^-1 rhs for symmetric positive definite ``a`` (overwritten).

    Two triangular solves, which read the lower triangle only (twice as fast as
    ``torch.cholesky_solve`` at D = 2,048 with 100 right-hand sides, one thread).
    """
    import torch

    factor = cholesky_lower(a)
    half = torch.linalg.solve_triangular(factor, rhs, upper=False)
    return torch.linalg.solve_triangular(factor.T, half, upper=True)


def _class_sums(rows: torch.Tensor, codes: torch.Tensor, num_codes: int) -> torch.Tensor:
    import torch

    out = torch.zeros(num_codes, rows.shape[1], dtype=rows.dtype, device=rows.device)
    return out.index_add_(0, codes, rows)


@dataclass
class _Moments:
    """One fold's sums, centred on the fold's own mean."""

    count: int
    mean: torch.Tensor  # (D,)
    scatter: torch.Tensor  # (D, D) sum of (x - mean)(x - mean)^T
    by_class: torch.Tensor  # (C, D) sums of x - mean per class
    class_count: torch.Tensor  # (C,)
    peak: torch.Tensor  # (D,) max |x|


def _moments(x: torch.Tensor, codes: torch.Tensor, idx: torch.Tensor, num_codes: int
             ) -> _Moments:
    import torch

    rows = x[idx]
    lo, hi = torch.aminmax(rows, dim=0)
    mean = rows.mean(dim=0)
    rows -= mean
    return _Moments(
        count=idx.numel(), mean=mean, scatter=rows.T @ rows,
        by_class=_class_sums(rows, codes[idx], num_codes),
        class_count=torch.bincount(codes[idx], minlength=num_codes).to(x.dtype),
        peak=torch.maximum(hi, -lo),
    )


def _inv_std(m2: torch.Tensor, n: int, peak: torch.Tensor, rtol: float) -> torch.Tensor:
    import torch

    std = torch.sqrt(m2 / n)
    varying = std > rtol * peak
    return torch.where(varying, 1.0 / torch.where(varying, std, 1.0), 0.0)


def _gram_fold(k: int, parts: list[_Moments], scatter_sum: torch.Tensor, l2: float,
               rtol: float) -> RidgeFit:
    """Fold k's fit from the other folds' sums.

    Pooled scatter of the training folds j (Chan et al.): sum_j S_j + sum_j n_j d_j d_j^T,
    d_j = mean_j - mu; per-class sums likewise: sum_j B_j + counts_j d_j.
    """
    import torch

    others = [p for j, p in enumerate(parts) if j != k]
    n = sum(p.count for p in others)
    mu = sum(p.count * p.mean for p in others) / n
    dev = torch.stack([p.mean - mu for p in others])  # (F - 1, D)
    counts = torch.tensor([float(p.count) for p in others], dtype=mu.dtype, device=mu.device)
    a = torch.sub(scatter_sum, parts[k].scatter, out=parts[k].scatter)  # fold k's own only
    a.addmm_(dev.T * counts, dev)
    m2 = a.diagonal().clone()
    peak = torch.stack([p.peak for p in others]).amax(dim=0)
    inv = _inv_std(m2, n, peak, rtol)
    class_count = sum(p.class_count for p in others)
    present = (class_count > 0).nonzero().squeeze(1)
    by_class = sum(p.by_class for p in others)
    by_class.addmm_(torch.stack([p.class_count for p in others]).T, dev)  # (C, D)
    # S C S / n + l2 I
    scale = inv / math.sqrt(n)
    a.mul_(scale[:, None]).mul_(scale[None, :])
    a.diagonal().add_(l2)
    rhs = (by_class[present] * inv).T.mul_(1.0 / n)  # (D, K)
    weight = _cholesky_solve(a, rhs)
    return RidgeFit(weight, class_count[present] / n, mu, inv, present, "gram")


def _kernel_fold(x: torch.Tensor, codes: torch.Tensor, train: torch.Tensor, num_codes: int,
                 l2: float, rtol: float) -> RidgeFit:
    import torch

    rows = x[train]
    n = rows.shape[0]
    mu = rows.mean(dim=0)
    z = rows - mu
    inv = _inv_std((z * z).sum(dim=0), n, rows.abs().amax(dim=0), rtol)
    z.mul_(inv)
    kernel = z @ z.T
    kernel.mul_(1.0 / n).diagonal().add_(l2)
    class_count = torch.bincount(codes[train], minlength=num_codes).to(x.dtype)
    present = (class_count > 0).nonzero().squeeze(1)
    lookup = torch.full((num_codes,), -1, dtype=torch.int64, device=x.device)
    lookup[present] = torch.arange(present.numel(), device=x.device)
    targets = torch.zeros(n, present.numel(), dtype=x.dtype, device=x.device)
    targets[torch.arange(n, device=x.device), lookup[codes[train]]] = 1.0 / n
    weight = z.T @ _cholesky_solve(kernel, targets)
    return RidgeFit(weight, class_count[present] / n, mu, inv, present, "kernel")


def ridge_folds(
    x: torch.Tensor, codes: torch.Tensor, fold: torch.Tensor, num_folds: int, l2: float, *,
    rtol: float, workers: int = 1, route: str | None = None,
) -> list[tuple[RidgeFit, torch.Tensor, torch.Tensor]]:
    """Per fold: the ridge fit on the other folds, the held-out row indices, their logits.

    :param x: (N, D) float64 features.
    :param codes: (N,) class codes in 0..C-1.
    :param fold: (N,) fold id of each row, 0..num_folds-1.
    :param rtol: a feature with training std <= rtol * max |x| there is constant.
    :param workers: folds computed at once, each on one torch thread (CPU); 1: in turn
        on the caller's threads.
    :param route: "gram" or "kernel"; by default :func:`choose_route`.
    """
    if workers <= 1:
        return _ridge_folds(x, codes, fold, num_folds, l2, rtol, None, route)
    with torch_threads(1), ThreadPoolExecutor(workers, initializer=one_torch_thread) as pool:
        return _ridge_folds(x, codes, fold, num_folds, l2, rtol, pool, route)


def _ridge_folds(
    x: torch.Tensor, codes: torch.Tensor, fold: torch.Tensor, num_folds: int, l2: float,
    rtol: float, pool: ThreadPoolExecutor | None, route: str | None,
) -> list[tuple[RidgeFit, torch.Tensor, torch.Tensor]]:
    import torch

    n, d = x.shape
    num_codes = int(codes.max()) + 1
    route = route or choose_route(n, d, num_folds)
    tests = [(fold == k).nonzero().squeeze(1) for k in range(num_folds)]

    def run(task, items):
        return list(pool.map(task, items)) if pool is not None else [task(i) for i in items]

    def predict(fit: RidgeFit, test: torch.Tensor) -> torch.Tensor:
        rows = x[test]
        return torch.addmm(fit.bias, rows.sub_(fit.mean).mul_(fit.inv_std), fit.weight)

    if route == "gram":
        parts = run(lambda idx: _moments(x, codes, idx, num_codes), tests)
        scatter_sum = parts[0].scatter.clone()
        for p in parts[1:]:
            scatter_sum += p.scatter  # in fold order: the same sum for any thread count

        def gram_task(k: int) -> tuple[RidgeFit, torch.Tensor]:
            fit = _gram_fold(k, parts, scatter_sum, l2, rtol)
            return fit, predict(fit, tests[k])

        done = run(gram_task, range(num_folds))
    elif route == "kernel":
        def kernel_task(k: int) -> tuple[RidgeFit, torch.Tensor]:
            fit = _kernel_fold(x, codes, (fold != k).nonzero().squeeze(1), num_codes, l2, rtol)
            return fit, predict(fit, tests[k])

        done = run(kernel_task, range(num_folds))
    else:
        raise ValueError(f"unknown route {route!r}")
    return [(fit, test, logits) for (fit, logits), test in zip(done, tests, strict=True)]
