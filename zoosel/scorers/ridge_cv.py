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

Memory (:func:`plan_ridge`). The Gram route keeps one D x D float64 scatter per fold
plus their sum, (F + 1) 8 D^2 bytes: 0.2 GB at D = 2,048, 3.2 GB at 8,192, 13 GB at
16,384 (F = 5). Before allocating, the peak is estimated and checked against a budget
(:func:`memory_budget`, half the memory available). When it does not fit, in this order:

1. Gram route, streamed: the folds' scatters are added to the sum as they come and
   each fold's own is computed again when its fold is fitted (the same operations on
   the same rows, so the same values bit for bit), peak (1 + w) 8 D^2 bytes with w folds
   at once, w from ``workers`` down to 1; one more Gram of the N rows in time.
2. Kernel route, w from ``workers`` down to 1 (equal to round-off, about 1e-12).
3. Otherwise :class:`~zoosel.errors.ScoringError`, saying what would fit.

A route given by the caller is kept; only its own variants are tried.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from zoosel.errors import ScoringError
from zoosel.threads import one_torch_thread, torch_threads

if TYPE_CHECKING:
    import torch

__all__ = [
    "RidgeFit", "RidgePlan", "cholesky_lower", "choose_route", "memory_budget", "peak_bytes",
    "plan_ridge", "ridge_folds",
]

# Cost in Gram flops: the blocked float64 Cholesky below takes about 3 Gram flops per
# flop (D = 2,048, one thread: 0.066 s for D^3/3 flops, Gram 0.22 s for 2 N D^2 at
# N = 2,500).
_CHOLESKY_COST = 1.0  # per d^3 of one factorisation (blocked, below: about half LAPACK's)
_BLOCK = 128  # Cholesky block size: 128-256 were fastest at D = 512-2,048, one thread
# Measured resident peak over the count below: 1.02-1.13 (N = 3,000, D = 1,536, C = 50,
# Gram route kept or streamed, 1-2 folds at once); the rest is BLAS buffers and indices.
_OVERHEAD = 1.15
_BUDGET_SHARE = 0.5  # of the memory available (CPU) or free (CUDA)


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
    plan: RidgePlan | None = None
    """How the folds were computed (route, folds at once, streamed scatters)."""


@dataclass(frozen=True)
class RidgePlan:
    """How :func:`ridge_folds` computes the folds, and its estimated peak memory."""

    route: str
    """"gram" or "kernel"."""
    workers: int
    """Folds computed at once."""
    stream: bool
    """Gram route: each fold's scatter computed again instead of kept (same values)."""
    peak: int
    """Estimated peak bytes besides the input features."""


def peak_bytes(route: str, stream: bool, n: int, d: int, folds: int, num_codes: int,
               workers: int, itemsize: int = 8) -> int:
    """Estimated peak bytes of :func:`ridge_folds`' own tensors (not the input's).

    Counts the D x D and n x n matrices, the row copies and the (D, C) blocks each fold
    holds at once; small vectors are left out.
    """
    test = -(-n // folds)  # the largest held-out fold
    train = n - n // folds  # the most training rows
    c = num_codes
    per_fold = test * d + 4 * c * d + _BLOCK * d + test * c  # rows, sums, rhs, panel, logits
    if route == "gram" and not stream:
        elements = (folds + 1) * d * d + folds * c * d + workers * per_fold
    elif route == "gram":
        elements = d * d + folds * c * d + workers * (d * d + test * d + per_fold)
    elif route == "kernel":
        elements = workers * (3 * train * d + train * train + 3 * train * c + d * c
                              + test * d + test * c)
    else:
        raise ValueError(f"unknown route {route!r}")
    return int(elements * itemsize * _OVERHEAD)


def memory_budget(device: torch.device | str = "cpu") -> int | None:
    """Bytes the ridge folds may use: half the memory available (Linux ``MemAvailable``,
    else the physical memory) or, on CUDA, half the device's free memory; None: unknown."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * _BUDGET_SHARE)
    from zoosel.sources.loaders import available_memory

    have = available_memory()
    if have is None:
        try:
            have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, OSError, ValueError):
            return None
    return int(have * _BUDGET_SHARE)


def _size(count: float) -> str:
    return f"{count / 2**30:.2f} GiB" if count >= 2**30 else f"{count / 2**20:.0f} MiB"


def plan_ridge(n: int, d: int, folds: int, num_codes: int, *, workers: int = 1,
               route: str | None = None, budget: float | None = None,
               itemsize: int = 8) -> RidgePlan:
    """The first way to compute the folds whose estimated peak fits in ``budget`` bytes.

    In order: ``route`` (default :func:`choose_route`) as is; the Gram route streamed
    with ``workers`` down to 1 folds at once; the kernel route likewise. A route given
    by the caller is kept. ``budget`` None: no limit.

    :raises ScoringError: when none fits.
    """
    if route not in (None, "gram", "kernel"):
        raise ValueError(f"unknown route {route!r}")
    chosen = route or choose_route(n, d, folds)
    workers = max(1, workers)
    counts = range(workers, 0, -1)
    gram = [("gram", False, workers)] + [("gram", True, w) for w in counts]
    kernel = [("kernel", False, w) for w in counts]
    if route is not None:
        options = gram if route == "gram" else kernel
    else:
        options = gram + kernel if chosen == "gram" else kernel + gram[1:]
    for name, stream, w in options:
        peak = peak_bytes(name, stream, n, d, folds, num_codes, w, itemsize)
        if budget is None or peak <= budget:
            return RidgePlan(name, w, stream, peak)
    least = min(peak_bytes(name, stream, n, d, folds, num_codes, 1, itemsize)
                for name, stream, _ in options)
    raise ScoringError(
        f"linear probe: the ridge solver needs at least {_size(least)} for "
        f"{n} samples x {d} features but its memory budget is {_size(budget)} (half the "
        "memory available by default); free memory, reduce the feature dimension, or use the "
        "logistic solver (solver='logistic'), which needs memory O(N D) only.")


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
    scatter: torch.Tensor | None  # (D, D) sum of (x - mean)(x - mean)^T; None: dropped
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


def _gram_fold(k: int, parts: list[_Moments], scatter_sum: torch.Tensor, own: torch.Tensor,
               l2: float, rtol: float) -> RidgeFit:
    """Fold k's fit from the other folds' sums; ``own`` is fold k's scatter (overwritten).

    Pooled scatter of the training folds j (Chan et al.): sum_j S_j + sum_j n_j d_j d_j^T,
    d_j = mean_j - mu; per-class sums likewise: sum_j B_j + counts_j d_j.
    """
    import torch

    others = [p for j, p in enumerate(parts) if j != k]
    n = sum(p.count for p in others)
    mu = sum(p.count * p.mean for p in others) / n
    dev = torch.stack([p.mean - mu for p in others])  # (F - 1, D)
    counts = torch.tensor([float(p.count) for p in others], dtype=mu.dtype, device=mu.device)
    a = torch.sub(scatter_sum, own, out=own)  # the other folds' scatters
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
    rtol: float, workers: int = 1, route: str | None = None, budget: float | None = None,
) -> list[tuple[RidgeFit, torch.Tensor, torch.Tensor]]:
    """Per fold: the ridge fit on the other folds, the held-out row indices, their logits.

    :param x: (N, D) float64 features.
    :param codes: (N,) class codes in 0..C-1.
    :param fold: (N,) fold id of each row, 0..num_folds-1.
    :param rtol: a feature with training std <= rtol * max |x| there is constant.
    :param workers: folds computed at once, each on one torch thread (CPU); 1: in turn
        on the caller's threads. Fewer when memory is short (:func:`plan_ridge`).
    :param route: "gram" or "kernel"; by default :func:`choose_route`.
    :param budget: bytes the folds may use (``math.inf``: no limit); by default
        :func:`memory_budget`.
    :raises ScoringError: when no way of computing the folds fits in the budget.
    """
    n, d = x.shape
    num_codes = int(codes.max()) + 1
    if budget is None:
        budget = memory_budget(x.device)
    plan = plan_ridge(n, d, num_folds, num_codes, workers=workers, route=route, budget=budget,
                      itemsize=x.element_size())
    if workers <= 1:
        return _ridge_folds(x, codes, fold, num_folds, num_codes, l2, rtol, None, plan)
    # One thread per fold even when memory leaves a single worker: the same values.
    with torch_threads(1), ThreadPoolExecutor(plan.workers, initializer=one_torch_thread) as pool:
        return _ridge_folds(x, codes, fold, num_folds, num_codes, l2, rtol, pool, plan)


def _ridge_folds(
    x: torch.Tensor, codes: torch.Tensor, fold: torch.Tensor, num_folds: int, num_codes: int,
    l2: float, rtol: float, pool: ThreadPoolExecutor | None, plan: RidgePlan,
) -> list[tuple[RidgeFit, torch.Tensor, torch.Tensor]]:
    import torch

    tests = [(fold == k).nonzero().squeeze(1) for k in range(num_folds)]

    def run(task, items):
        return list(pool.map(task, items)) if pool is not None else [task(i) for i in items]

    def predict(fit: RidgeFit, test: torch.Tensor) -> torch.Tensor:
        rows = x[test]
        return torch.addmm(fit.bias, rows.sub_(fit.mean).mul_(fit.inv_std), fit.weight)

    def moments(k: int) -> _Moments:
        return _moments(x, codes, tests[k], num_codes)

    if plan.route == "gram":
        parts: list[_Moments] = []
        scatter_sum = None
        # at most plan.workers scatters at once when streamed; added in fold order, so
        # the sum is the same for any thread count and either way
        step = plan.workers if plan.stream else num_folds
        for start in range(0, num_folds, step):
            for p in run(moments, range(start, min(start + step, num_folds))):
                if scatter_sum is None:
                    scatter_sum = p.scatter if plan.stream else p.scatter.clone()
                else:
                    scatter_sum += p.scatter
                if plan.stream:
                    p.scatter = None
                parts.append(p)

        def gram_task(k: int) -> tuple[RidgeFit, torch.Tensor]:
            own = parts[k].scatter if parts[k].scatter is not None else moments(k).scatter
            fit = _gram_fold(k, parts, scatter_sum, own, l2, rtol)
            fit = replace(fit, plan=plan)
            return fit, predict(fit, tests[k])

        done = run(gram_task, range(num_folds))
    else:
        def kernel_task(k: int) -> tuple[RidgeFit, torch.Tensor]:
            fit = _kernel_fold(x, codes, (fold != k).nonzero().squeeze(1), num_codes, l2, rtol)
            fit = replace(fit, plan=plan)
            return fit, predict(fit, tests[k])

        done = run(kernel_task, range(num_folds))
    return [(fit, test, logits) for (fit, logits), test in zip(done, tests, strict=True)]
