"""GBC, the Gaussian Bhattacharyya coefficient (Pandy et al. 2022).

Reference: Pandy, Agostinelli, Uijlings, Ferrari, Mensink, "Transferability estimation
using Bhattacharyya class separability", CVPR 2022 (arXiv 2111.12780).

Formula. The features are first reduced by PCA (optional, see below) to Z (N, k). Each
class c present in the labels is modelled as a Gaussian N(mu_c, Sigma_c) with mu_c its mean
and Sigma_c = diag(v_c) its per-dimension variances (population variances, 1/n_c, so that
a class with one sample is allowed) -- "diagonal", the default -- or
Sigma_c = sigma_c^2 I with sigma_c^2 = mean_j v_cj -- "spherical". The Bhattacharyya
distance of two Gaussians, with Sigma = (Sigma_c + Sigma_c') / 2, is::

    D_B(c, c') = 1/8 (mu_c - mu_c')^T Sigma^-1 (mu_c - mu_c')
                 + 1/2 log( det Sigma / sqrt(det Sigma_c det Sigma_c') )

which for diagonal covariances is a sum over dimensions j (s_j = (v_cj + v_c'j) / 2)::

    D_B = sum_j [ (mu_cj - mu_c'j)^2 / (8 s_j) + 1/2 log s_j - 1/4 log v_cj - 1/4 log v_c'j ]

and the score sums the Bhattacharyya coefficients over ordered pairs of distinct classes::

    GBC = - sum_{c != c'} exp(-D_B(c, c'))          in [-C (C - 1), 0]

Choices.
* PCA (``pca_dim``, default 64, the dimension Pandy et al. use): the centred features are
  projected on the top min(pca_dim, D, N) eigenvectors of their covariance, whatever D
  (also when D <= pca_dim, so that the diagonal model lives in the principal axes and the
  score does not depend on an arbitrary rotation of the feature space). ``pca_dim=None``
  uses the centred features as they are (diagonal variances on the original axes).
  When the top eigenvalues are (nearly) tied the principal axes are not unique and the
  diagonal score inherits that ambiguity; the spherical one does not.
* Variance floor: v_cj is raised to at least 1e-4 times the mean per-dimension variance of
  Z over all samples (Pandy et al.'s code uses an absolute 1e-4; a relative floor keeps the
  score scale invariant). It makes constant directions and one-sample classes finite;
  dimensions where every class is at the floor with equal means contribute exactly 0.
* The spherical variance is the mean of the floored diagonal one, and its Bhattacharyya
  distance carries the factor k in the log-determinant term (k/2 log s - k/4 log ...);
  the public implementation's spherical branch sums log over a scalar and drops that k.

Computation. Per-class means and variances are O(N k); the pairwise distances are formed
by broadcasting in blocks of classes, O(C^2 k), never a Python loop over pairs. The PCA
uses the smaller Gram A (Fc^T Fc if D <= N, else Fc Fc^T); its top eigenvectors come from
a dense symmetric eigen-decomposition when A is small (<= 768) and otherwise from
Chebyshev-filtered subspace iteration (Zhou and Saad 2007): a block of p = min(2k, k + 64)
seeded random vectors, each iteration a Rayleigh-Ritz step followed by a degree-6
Chebyshev polynomial of A that damps [0, theta_p] (theta_p the smallest Ritz value),
until every wanted Ritz pair has residual |A v - theta v| <= 1e-10 theta_max (dense
fallback after 60 iterations). It costs about 20 products of A with the block (about one
Gram at N = D), where a dense decomposition of A costs several. Eigenvectors are then
exact to that residual divided by the eigenvalue gaps, and the seed changes nothing
beyond that.

Invariances: translation and scaling of the features; rotations when PCA is on (up to
tied principal axes); permutations of samples and relabelling of classes.

Degenerate inputs. Constant features (every row equal): GBC = -C (C - 1), the minimum
(all classes identical). One-sample classes, duplicated samples, D = 1 and N < D (then
k <= N components) give finite values through the variance floor. Fewer than 2 samples
or 2 classes, non-finite features or bad labels raise ScoringError. Classes absent from
the labels are ignored.

Direction: higher is better as is (GBC <= 0, closer to 0 means better separated classes);
no sign flip.
Cost: one Gram O(N D min(N, D)), the top-k eigenvectors, the projection O(N D k), and
O(C^2 k) for the pairs.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from zoosel.errors import ScoringError
from zoosel.hookspecs import hookimpl
from zoosel.scorers.inputs import as_float64, check_labels
from zoosel.threads import serial
from zoosel.types import Need, ScoreInputs, Scorer

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

__all__ = [
    "bhattacharyya_distances",
    "gbc",
    "pca_project",
    "register_scorers",
    "top_eigh",
    "varying_columns",
]

PCA_DIM = 64
VARIANCE_FLOOR = 1e-4
DENSE_EIGH_MAX = 768
"""Symmetric matrices up to this size are decomposed densely (module-level: tests lower it)."""
SUBSPACE_TOL = 1e-10
_SUBSPACE_EXTRA = 64
_CHEBYSHEV_DEGREE = 6
_SUBSPACE_ITERATIONS = 60
_PAIR_BLOCK = 1 << 20  # entries of one (rows, C, k) block of the pairwise computation
_GAUSSIANS = ("diagonal", "spherical")


def varying_columns(f: torch.Tensor) -> torch.Tensor:
    """Boolean (D,): columns of ``f`` that are not constant (one pass, no (N, D) temporary)."""
    import torch

    low, high = torch.aminmax(f, dim=0)
    return low != high


def _orthonormal(w: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis of the columns of ``w`` (Cholesky QR twice, Householder if needed)."""
    import torch

    w = w / w.norm(dim=0).clamp_min(1e-300)
    for _ in range(2):
        r, info = torch.linalg.cholesky_ex(w.mT @ w)
        if int(info) != 0:
            return torch.linalg.qr(w)[0]
        w = torch.linalg.solve_triangular(r.mT, w, upper=True, left=False)
    return w


def _dense_top(a: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    with serial():
        lam, vec = torch.linalg.eigh(a)
    return lam.flip(0)[:k], vec.flip(1)[:, :k]


def top_eigh(a: torch.Tensor, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest eigenvalues (descending) and eigenvectors of the symmetric PSD ``a``.

    Dense for small matrices, Chebyshev-filtered subspace iteration otherwise (see the
    module docstring); falls back to the dense decomposition if it does not converge.
    """
    import torch

    m = a.shape[0]
    k = min(k, m)
    p = min(2 * k, k + _SUBSPACE_EXTRA)
    if m <= DENSE_EIGH_MAX or 4 * p >= m:
        return _dense_top(a, k)
    gen = torch.Generator(device=a.device).manual_seed(seed)
    with serial():
        x = _orthonormal(torch.randn(m, p, generator=gen, dtype=a.dtype, device=a.device))
    for _ in range(_SUBSPACE_ITERATIONS):
        ax = a @ x  # the products with A are the only threaded work here
        with serial():
            h = x.mT @ ax
            theta, u = torch.linalg.eigh((h + h.mT) / 2)  # Rayleigh-Ritz
            theta, u = theta.flip(0), u.flip(1)
            x, ax = x @ u, ax @ u
            top = float(theta[0])
            resid = ax[:, :k] - x[:, :k] * theta[:k]
            if float(resid.norm(dim=0).max()) <= SUBSPACE_TOL * abs(top):
                return theta[:k], x[:, :k]
            cut = float(theta[-1])  # damp [0, cut], amplify what lies above it
            if not (0.0 < 1e-12 * top < cut < top):
                x = _orthonormal(ax)  # (nearly) rank-deficient block: a plain power step
                continue
            # Scaled Chebyshev recurrence of degree _CHEBYSHEV_DEGREE on [0, cut].
            centre = half = cut / 2
            sigma1 = half / (top - centre)
            sigma = sigma1
            prev, y = x, (ax - centre * x) * (sigma1 / half)
        for _ in range(_CHEBYSHEV_DEGREE - 1):
            ay = a @ y
            with serial():
                nxt = 1.0 / (2.0 / sigma1 - sigma)
                prev, y = y, (ay - centre * y) * (2.0 * nxt / half) - (sigma * nxt) * prev
                sigma = nxt
        with serial():
            x = _orthonormal(y)
    return _dense_top(a, k)


def pca_project(features: torch.Tensor, dim: int, seed: int = 0) -> torch.Tensor:
    """Centred float64 features projected on their top ``min(dim, D, N)`` principal axes.

    Column j holds the scores on the j-th principal axis (variance decreasing); the sign
    of each axis is arbitrary.
    """
    f = as_float64(features, "features")
    return _pca_scores(f - f.mean(dim=0), dim, seed)


def _pca_scores(fc: torch.Tensor, dim: int, seed: int) -> torch.Tensor:
    n, d = fc.shape
    k = min(dim, d, n)
    if d <= n:
        _, vec = top_eigh(fc.mT @ fc, k, seed)
        return fc @ vec
    lam, vec = top_eigh(fc @ fc.mT, k, seed)  # scores = U_k diag(sqrt(lambda_k))
    return vec * lam.clamp_min(0.0).sqrt()


def _class_moments(
    z: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Means (C, k) and population variances (C, k) of the classes present in ``y``."""
    import torch

    _, inverse, counts = torch.unique(y, return_inverse=True, return_counts=True)
    cnt = counts.to(z.dtype)[:, None]
    means = torch.zeros(counts.numel(), z.shape[1], dtype=z.dtype, device=z.device)
    means.index_add_(0, inverse, z)
    means /= cnt
    dev = z - means[inverse]
    var = torch.zeros_like(means)
    var.index_add_(0, inverse, dev * dev)
    return means, var / cnt


def bhattacharyya_distances(means: torch.Tensor, variances: torch.Tensor) -> torch.Tensor:
    """(C, C) Bhattacharyya distances between diagonal Gaussians N(means[c], diag(var[c])).

    Spherical Gaussians are the case of rows of ``variances`` with equal entries.
    """
    import torch

    c, k = means.shape
    half_logdet = 0.5 * torch.log(variances).sum(dim=1)  # 1/2 log det Sigma_c
    out = torch.empty(c, c, dtype=means.dtype, device=means.device)
    rows = max(1, _PAIR_BLOCK // max(1, c * k))
    for lo in range(0, c, rows):
        hi = min(c, lo + rows)
        s = (variances[lo:hi, None, :] + variances[None, :, :]) / 2  # (rows, C, k)
        diff = means[lo:hi, None, :] - means[None, :, :]
        out[lo:hi] = (diff * diff / s).sum(dim=2) / 8 + 0.5 * torch.log(s).sum(dim=2)
        out[lo:hi] -= (half_logdet[lo:hi, None] + half_logdet[None, :]) / 2
    return out


def gbc(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int | None = None,
    *,
    pca_dim: int | None = PCA_DIM,
    gaussian: str = "diagonal",
    seed: int = 0,
) -> float:
    """GBC = -sum_{c != c'} exp(-D_B(c, c')) of ``features`` (N, D) for ``labels`` (N,).

    :param num_classes: optional upper bound used only to validate ``labels``.
    :param pca_dim: number of principal components kept (None: no PCA).
    :param gaussian: ``"diagonal"`` (default) or ``"spherical"`` class covariances.
    :param seed: seeds the iterative eigensolver of large PCAs (no effect beyond round-off).
    :returns: GBC in [-C (C - 1), 0], higher is better.
    :raises ScoringError: on unusable input.
    """
    import torch

    if gaussian not in _GAUSSIANS:
        raise ScoringError(f"gaussian must be one of {_GAUSSIANS}, got {gaussian!r}.")
    if pca_dim is not None and pca_dim < 1:
        raise ScoringError(f"pca_dim must be a positive integer or None, got {pca_dim}.")
    f = as_float64(features, "features")
    y = check_labels(labels, f.shape[0], num_classes).to(f.device)
    c = int(torch.unique(y).numel())
    if not bool(varying_columns(f).any()):
        return -float(c * (c - 1))
    z = f - f.mean(dim=0)
    if pca_dim is not None:
        z = _pca_scores(z, pca_dim, seed)
    with serial():  # (N, k) and (C, C, k) work: small, memory-bound
        means, var = _class_moments(z, y)
        floor = VARIANCE_FLOOR * float((z - z.mean(dim=0)).square().mean())
        if not floor > 0.0:
            return -float(c * (c - 1))
        var = var.clamp_min(floor)
        if gaussian == "spherical":
            var = var.mean(dim=1, keepdim=True).expand_as(var)
        coef = torch.exp(-bhattacharyya_distances(means, var))
        coef.fill_diagonal_(0.0)
        result = -float(coef.sum())
    if not math.isfinite(result):
        raise ScoringError("GBC is not finite for these features.")
    return result


def _score(inputs: ScoreInputs) -> float:
    if inputs.features is None:
        raise ScoringError("GBC needs features.")
    return gbc(inputs.features, inputs.labels, inputs.num_classes)


@hookimpl
def register_scorers(register: Callable[[Scorer], None]) -> None:
    """Register GBC."""
    register(
        Scorer(
            name="gbc",
            fn=_score,
            needs=frozenset({Need.FEATURES}),
            summary="Minus the summed Bhattacharyya coefficients of per-class diagonal "
            "Gaussians in a 64-dim PCA space.",
            reference="Pandy et al. 2022, CVPR, Transferability estimation using "
            "Bhattacharyya class separability (arXiv 2111.12780)",
            cost="O(N D min(N, D)) Gram + top-64 eigenvectors + O(C^2 k)",
        )
    )
