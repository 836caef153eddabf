"""H-score (Bao et al. 2019) and the regularised H-score (Ibrahim et al. 2022).

References.
* Bao, Li, Huang, Wang, Zheng, Zhang, Tong, "An information-theoretic approach to
  transferability in task transfer learning", ICIP 2019.
* Ibrahim, Ponomareva, Mazumder, "Newer is not always better: rethinking transferability
  metrics, their peculiarities, stability and performance", ECML-PKDD 2022
  (arXiv 2110.06893).
* Ledoit, Wolf, "A well-conditioned estimator for large-dimensional covariance matrices",
  Journal of Multivariate Analysis 88(2), 2004 (the shrinkage intensity).

Notation. F is (N, D), Fc = F - 1 m^T its column-centred copy, y_c the indicator column of
class c (n_c samples), s_c = Fc^T y_c the class sums of Fc and G = Fc^T Fc. Covariances use
1/N throughout: cov(f) = G / N and cov(E[f | y]) = (1/N) sum_c n_c (mu_c - m)(mu_c - m)^T
= (1/N) sum_c s_c s_c^T / n_c. (The factor cancels in H. Public code of the regularised
H-score takes cov(f) from a Ledoit-Wolf fit, with 1/N, but cov(E[f | y]) from np.cov, with
1/(N-1), which scales H_alpha by N / (N-1); here both use 1/N.)

H-score::

    H = tr(cov(f)^+ cov(E[f | y])) = sum_c s_c^T G^+ s_c / n_c
      = sum_c |P y_c|^2 / n_c,         P = Fc G^+ Fc^T = Fc Fc^+

P is the orthogonal projection onto the column space of Fc, so H measures how much of each
class indicator the (centred) features can express linearly. Consequences:

* 0 <= H <= C - 1 (C = classes present): P projects inside the centred vectors 1^perp and
  sum_c |y_c - (n_c / N) 1|^2 / n_c = C - 1.
* H is invariant to any invertible affine map of the features (scale, rotation, shift,
  mixing of dimensions): they leave col(Fc) unchanged.
* N <= D: centred features of N samples generically span all of 1^perp (rank N - 1), so
  P = I - 1 1^T / N and H = C - 1 exactly, the maximum, whatever the model: H-score then
  carries no information and every such candidate ties. This is the instability the
  literature reports for N < D; the regularised H-score below does not saturate.

The pseudo-inverse keeps the eigen-directions of G with eigenvalue above
max(N, D) * eps * lambda_max(G) (eps = 2^-52), the usual numerical-rank cut-off.
Computation: columns that are exactly constant (dead ReLU units) are dropped first (they
are exactly in the null space). Then with the smaller Gram (G = Fc^T Fc if D < N, else
K = Fc Fc^T):

* D < N, fast path: Cholesky G = L L^T and H = |L^-1 [s_c / sqrt(n_c)]|_F^2, taken only
  when G is numerically full rank: four steps of block inverse and power iteration (8
  vectors, seeded by ``seed``) estimate lambda_min(G) and lambda_max(G), and the fast path
  requires lambda_min > 100 * max(N, D) * eps * lambda_max (a random block cannot miss an
  extreme eigenvalue by a factor of 100), i.e. a condition number below about 2e10 at
  N = 2,500. Then every eigenvalue is kept and G^+ = G^-1.
* D >= N, fast path: if Fc has rank N - 1 (checked the same way on K + (tr(K) / N^2) 1 1^T)
  the answer is C - 1 exactly.
* Otherwise (duplicated or linearly dependent columns, rank-deficient samples): one
  eigen-decomposition of the smaller Gram and the cut-off above, O(min(N, D)^3).

Regularised H-score::

    H_alpha = tr(cov_alpha(f)^-1 (1 - alpha) cov(E[f | y])),
    cov_alpha(f) = (1 - alpha) S + alpha mu I,   S = G / N,  mu = tr(S) / D

with alpha the Ledoit-Wolf (2004) shrinkage intensity of the centred features (computed
here in closed form, the estimator scikit-learn's ``ledoit_wolf`` also implements)::

    d^2    = |S - mu I|_F^2 / D
    bbar^2 = (1 / (N^2 D)) sum_i |x_i x_i^T - S|_F^2
           = (sum_i |x_i|^4 - N |S|_F^2) / (N^2 D)            (x_i the centred rows)
    alpha  = min(bbar^2, d^2) / d^2                           (alpha = 0 when d^2 = 0)

|S|_F = |G|_F / N = |K|_F / N comes from whichever Gram is formed; sum_i |x_i|^4 is O(N D).
With a = 1 - alpha and b = alpha mu N, cov_alpha = (a G + b I) / N and

    H_alpha = a sum_c s_c^T (a G + b I)^-1 s_c / n_c                      (D < N)
            = a sum_c (K y_c)^T (a K + b I)^-1 y_c / n_c                  (D >= N)

(Fc (a Fc^T Fc + b I)^-1 Fc^T = K (a K + b I)^-1), one Cholesky of a positive definite
matrix; no pseudo-inverse is needed when alpha > 0. alpha = 0 (S already a multiple of I,
e.g. D = 1) gives H_alpha = H; alpha = 1 gives H_alpha = 0. H_alpha is invariant to
scaling, translation and orthogonal rotations of the features (not to general linear maps:
the shrinkage target mu I is not).

Degenerate inputs. Constant features (every row equal): both scores are 0.0, their minimum
(no direction varies). A class with one sample, duplicated samples, D = 1 and N < D give
the finite values the formulas define (see above for N < D). Fewer than 2 samples or 2
classes, non-finite features or bad labels raise ScoringError. Classes absent from the
labels are ignored.

Direction: higher is better for both; no sign flip.
Cost: one Gram, O(N D min(N, D)), one Cholesky, O(min(N, D)^3 / 3), and O(C D min(N, D))
for the class terms; the rank-deficient fallback adds an eigen-decomposition.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from zoosel.errors import ScoringError
from zoosel.hookspecs import hookimpl
from zoosel.scorers.gbc import varying_columns
from zoosel.scorers.inputs import as_float64, check_labels
from zoosel.threads import serial
from zoosel.types import Need, ScoreInputs, Scorer

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

__all__ = ["hscore", "ledoit_wolf_shrinkage", "regularized_hscore", "register_scorers"]

_EPS = 2.0**-52
RANK_MARGIN = 100.0
"""The Cholesky fast path of H-score needs lambda_min above the rank cut-off by this factor."""
_PROBE_VECTORS = 8
_PROBE_STEPS = 4


def _prepare(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    f = as_float64(features, "features")
    y = check_labels(labels, f.shape[0], num_classes).to(f.device)
    return f, y


def _class_terms(
    fc: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class index per sample (0..C-1 over present classes), sizes (C,), sums of Fc (C, D)."""
    import torch

    with serial():
        _, inverse, counts = torch.unique(y, return_inverse=True, return_counts=True)
        sums = torch.zeros(counts.numel(), fc.shape[1], dtype=fc.dtype, device=fc.device)
        sums.index_add_(0, inverse, fc)
    return inverse, counts.to(fc.dtype), sums


def _extreme_eigenvalue_estimates(
    mat: torch.Tensor, chol: torch.Tensor, seed: int
) -> tuple[float, float]:
    """(lambda_min, lambda_max) estimates of the SPD ``mat = chol chol^T``.

    Block inverse iteration and block power iteration from seeded random vectors; both are
    Rayleigh quotients, so lambda_min is over-estimated and lambda_max under-estimated,
    each by a small factor (a random block cannot miss an extreme eigenvalue by much).
    """
    import torch

    gen = torch.Generator(device=mat.device).manual_seed(seed)
    start = torch.randn(
        mat.shape[0], _PROBE_VECTORS, generator=gen, dtype=mat.dtype, device=mat.device
    )
    lo, hi = start, start
    for _ in range(_PROBE_STEPS):
        lo = torch.cholesky_solve(lo / lo.norm(dim=0).clamp_min(1e-300), chol)
        hi = mat @ (hi / hi.norm(dim=0).clamp_min(1e-300))
    lo = lo / lo.norm(dim=0).clamp_min(1e-300)
    hi = hi / hi.norm(dim=0).clamp_min(1e-300)
    z = torch.linalg.solve_triangular(chol, lo, upper=False)  # |z|^2 = x^T mat^-1 x
    inv_top = float((z * z).sum(dim=0).max())
    top = float((hi * (mat @ hi)).sum(dim=0).max())
    return (1.0 / inv_top if inv_top > 0 else math.inf), top


def _certified_cholesky(mat: torch.Tensor, size: int, seed: int) -> torch.Tensor | None:
    """Cholesky factor of ``mat`` when it is numerically full rank, else None.

    Full rank means every eigenvalue above the pseudo-inverse cut-off
    ``size * eps * lambda_max``; the estimates of :func:`_extreme_eigenvalue_estimates`
    must clear it by the factor ``RANK_MARGIN``.
    """
    import torch

    chol, info = torch.linalg.cholesky_ex(mat)
    if int(info) != 0 or not bool(torch.isfinite(chol.diagonal()).all()):
        return None
    with serial():
        low, high = _extreme_eigenvalue_estimates(mat, chol, seed)
    if not low > RANK_MARGIN * size * _EPS * high:
        return None
    return chol


def _hscore_centred(fc: torch.Tensor, y: torch.Tensor, seed: int) -> float:
    """H-score of column-centred features without constant columns."""
    import torch

    n, d = fc.shape
    inverse, counts, sums = _class_terms(fc, y)
    size = max(n, d)
    if d < n:
        gram = fc.T @ fc
        rhs = sums.T / counts.sqrt()  # (D, C): s_c / sqrt(n_c)
        chol = _certified_cholesky(gram, size, seed)
        if chol is not None:
            w = torch.linalg.solve_triangular(chol, rhs, upper=False)
            return float((w * w).sum())
        with serial():
            lam, vec = torch.linalg.eigh(gram)
        keep = lam > size * _EPS * float(lam.max())
        w = vec[:, keep].T @ rhs
        return float(((w * w).sum(dim=1) / lam[keep]).sum())
    kern = fc @ fc.T
    trace = float(kern.trace())
    shifted = kern + (trace / (n * n))  # adds (tr(K) / N) 1 1^T / N: the 1 direction
    if _certified_cholesky(shifted, size, seed) is not None:
        return float(counts.numel() - 1)  # rank(Fc) = N - 1: P = I - 1 1^T / N
    with serial():
        lam, vec = torch.linalg.eigh(kern)
    keep = lam > size * _EPS * float(lam.max())
    onehot = torch.zeros(n, counts.numel(), dtype=fc.dtype, device=fc.device)
    onehot[torch.arange(n, device=fc.device), inverse] = 1.0
    proj = vec[:, keep].T @ onehot  # (r, C): U_r^T y_c
    return float(((proj * proj).sum(dim=0) / counts).sum())


def hscore(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None, seed: int = 0
) -> float:
    """H-score tr(cov(f)^+ cov(E[f | y])) of ``features`` (N, D) for ``labels`` (N,).

    :param num_classes: optional upper bound used only to validate ``labels``.
    :param seed: seeds the probe vectors of the numerical-rank check (the value does not
        depend on it beyond round-off).
    :returns: H in [0, C - 1], higher is better; C - 1 whenever N <= D (see module doc).
    :raises ScoringError: on unusable input.
    """
    f, y = _prepare(features, labels, num_classes)
    varying = varying_columns(f)
    if not bool(varying.any()):
        return 0.0
    if not bool(varying.all()):
        f = f[:, varying]
    result = _hscore_centred(f - f.mean(dim=0), y, seed)
    if not math.isfinite(result):
        raise ScoringError("H-score is not finite for these features.")
    return result


def _ledoit_wolf(fc: torch.Tensor, gram: torch.Tensor) -> tuple[float, float]:
    """(alpha, mu) of the Ledoit-Wolf estimator from centred rows and either Gram."""
    import torch

    n, d = fc.shape
    sq = torch.einsum("ij,ij->i", fc, fc)  # |x_i|^2, no (N, D) temporary
    mu = float(sq.sum()) / (n * d)  # tr(S) / D
    s_fro2 = float((gram * gram).sum()) / (n * n)  # |S|_F^2
    delta2 = max((s_fro2 - d * mu * mu) / d, 0.0)  # |S - mu I|_F^2 / D
    beta2 = max((float((sq * sq).sum()) - n * s_fro2) / (n * n * d), 0.0)
    beta2 = min(beta2, delta2)
    # S already equals the target mu I (e.g. D = 1) up to round-off: nothing to shrink,
    # and beta2 / delta2 would be a ratio of two round-off errors.
    spherical = delta2 <= 1e-12 * s_fro2 / d
    alpha = 0.0 if beta2 <= 0.0 or spherical else beta2 / delta2
    return alpha, mu


def ledoit_wolf_shrinkage(features: torch.Tensor) -> float:
    """The Ledoit-Wolf (2004) shrinkage intensity alpha in [0, 1] of ``features`` (N, D).

    Rows are centred by their sample mean; S uses 1/N. See the module docstring.
    """
    f = as_float64(features, "features")
    if f.shape[0] < 2:
        raise ScoringError(f"need at least 2 samples, got {f.shape[0]}.")
    fc = f - f.mean(dim=0)
    gram = fc.T @ fc if fc.shape[1] < fc.shape[0] else fc @ fc.T
    return _ledoit_wolf(fc, gram)[0]


def regularized_hscore(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None, seed: int = 0
) -> float:
    """Regularised H-score with the Ledoit-Wolf shrinkage covariance (higher is better).

    :param num_classes: optional upper bound used only to validate ``labels``.
    :param seed: passed to :func:`hscore` when the shrinkage intensity is exactly 0.
    :raises ScoringError: on unusable input.
    """
    import torch

    f, y = _prepare(features, labels, num_classes)
    if not bool(varying_columns(f).any()):
        return 0.0
    fc = f - f.mean(dim=0)
    n, d = fc.shape
    gram = fc.T @ fc if d < n else fc @ fc.T
    alpha, mu = _ledoit_wolf(fc, gram)
    if alpha <= 0.0:
        return hscore(features, labels, num_classes, seed)
    a, b = 1.0 - alpha, alpha * mu * n
    if a <= 0.0:
        return 0.0
    inverse, counts, sums = _class_terms(fc, y)
    if d < n:
        rhs = sums.T / counts.sqrt()  # (D, C)
        left = rhs
    else:
        rhs = torch.zeros(n, counts.numel(), dtype=fc.dtype, device=fc.device)
        rhs[torch.arange(n, device=fc.device), inverse] = 1.0
        rhs /= counts.sqrt()  # y_c / sqrt(n_c)
        left = fc @ (sums.T / counts.sqrt())  # K y_c / sqrt(n_c)
    mat = a * gram
    mat.diagonal().add_(b)
    chol, info = torch.linalg.cholesky_ex(mat)
    if int(info) == 0:
        solved = torch.cholesky_solve(rhs, chol)
        result = a * float((left * solved).sum())
    else:  # numerically indefinite (tiny b): the same quantity through eigenvalues
        with serial():
            lam, vec = torch.linalg.eigh(gram)
        result = a * float(
            ((vec.T @ left) * (vec.T @ rhs) / (a * lam.clamp_min(0.0) + b)[:, None]).sum()
        )
    if not math.isfinite(result):
        raise ScoringError("regularised H-score is not finite for these features.")
    return result


def _score_h(inputs: ScoreInputs) -> float:
    if inputs.features is None:
        raise ScoringError("H-score needs features.")
    return hscore(inputs.features, inputs.labels, inputs.num_classes)


def _score_h_reg(inputs: ScoreInputs) -> float:
    if inputs.features is None:
        raise ScoringError("regularised H-score needs features.")
    return regularized_hscore(inputs.features, inputs.labels, inputs.num_classes)


@hookimpl
def register_scorers(register: Callable[[Scorer], None]) -> None:
    """Register H-score and the regularised H-score."""
    register(
        Scorer(
            name="hscore",
            fn=_score_h,
            needs=frozenset({Need.FEATURES}),
            summary="tr(cov(f)^+ cov(E[f|y])): class-mean variance explained by the features.",
            reference="Bao et al. 2019, ICIP, An information-theoretic approach to "
            "transferability in task transfer learning",
            cost="O(N D min(N, D)) Gram + O(min(N, D)^3) Cholesky",
        )
    )
    register(
        Scorer(
            name="hscore_reg",
            fn=_score_h_reg,
            needs=frozenset({Need.FEATURES}),
            summary="H-score with the Ledoit-Wolf shrinkage covariance.",
            reference="Ibrahim, Ponomareva, Mazumder 2022, ECML-PKDD, Newer is not always "
            "better (arXiv 2110.06893)",
            cost="O(N D min(N, D)) Gram + O(min(N, D)^3) Cholesky",
        )
    )
