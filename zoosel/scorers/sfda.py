"""SFDA, self-challenging Fisher discriminant analysis (Shao et al. 2022, ECCV, "Not all
models are equal: predicting model transferability in a self-challenging Fisher space",
arXiv 2207.03036).

Formula. Let x_i be the (centred) features, C the classes present, pi_c = N_c / N the
class priors, mu_c the class means and mu the global mean::

    S_w = (1/N) sum_i (x_i - mu_{y_i})(x_i - mu_{y_i})^T          (= sum_c pi_c cov_c)
    S_b = sum_c pi_c (mu_c - mu)(mu_c - mu)^T
    S_w(lam) = (1 - lam) S_w + lam (tr(S_w) / d) I                  (shrinkage)
    lam = max(exp(-5 sigma_max(S_w)), 1e-10)                         (from the data)

sigma_max is the largest eigenvalue of S_w (computed exactly; the authors' code uses three
power iterations). The Fisher directions solve the GENERALISED symmetric eigenproblem
S_b v = e S_w(lam) v (scipy's ``eigh(S_b, S_w)``, never ``eigh(inv(S_w) S_b)``). zoosel
solves it the way LAPACK's ``sygv`` does, Cholesky S_w(lam) = L L^T and the standard
problem L^-1 S_b L^-T, and uses that S_b = B B^T has rank <= C - 1 (B = [sqrt(pi_c)
(mu_c - mu)], d x C): the nonzero eigenpairs come from the C x C matrix W^T W with
W = L^-1 B, u_j = W q_j / sqrt(e_j) and v_j = L^-T u_j, so V^T S_w(lam) V = I and
V^T S_b V = diag(e). Only directions with e_j > 1e-10 e_max are kept (at most C - 1).
In this Fisher space the within-class covariance is I, and each class is a Gaussian::

    logit_c(x) = (V^T (x - mu)) . (V^T (mu_c - mu)) - |V^T (mu_c - mu)|^2 / 2 + log pi_c
    p(c | x)   = softmax_c(logit_c(x))

(identical to the LDA classifier with S_w(lam)^-1, because (mu_c - mu)^T S_w(lam)^-1 only
sees the directions with e_j > 0). Then the self-challenging ConfMix step: with
p~_i = softmax(p(. | x_i))_{y_i} (the authors soften the probabilities with a second
softmax) and m~_c = (sum_k mu_k - mu_c) / (C - 1) the mean of the OTHER class means::

    x'_i = p~_i x_i + (1 - p~_i) m~_{y_i}

and a second Fisher fit on x' with the same lam. The score is the mean posterior of the
true class under the second fit::

    SFDA = (1/N) sum_i p'(y_i | x'_i)          (in (0, 1]; no log, as in the paper)

Dimension reduction (zoosel's choice; the paper has none). In-sample, a Gaussian classifier
in d dimensions favours each sample's own class by about d / N_c in logit units, so SFDA
saturates at 1.0 when N is small and D large (pure noise features of 25 samples per class
in 2,048 dimensions score 1.0). zoosel therefore projects the centred features on their
first ``d = min(N - C, floor(N / C))`` principal components (the mean class size, at most
the rank of S_w), or ``max_dim`` when given; pure noise then scores close to chance
(1 / C). The principal components come from an exact ``eigh`` of the smaller Gram when
min(N, D) <= 512 (or d is a large fraction of it), and otherwise from a seeded block
Krylov (Lanczos-type) iteration with Rayleigh-Ritz on the smaller Gram A (never formed),
blocks of d + 8 vectors, until every kept Ritz pair has residual |A v - theta v| <=
1e-10 theta_max or 8 blocks (16 passes over the features) are built. With a spectral gap
after the d-th component this is exact PCA to round-off (``seed``, which picks the start
block, then does not matter); in a flat spectrum the top-d subspace is itself
ill-conditioned and the 8-block Ritz subspace is a seeded, reproducible approximation of
it (on the benchmark's 2,500 x 2,048 features SFDA differs from the exact-PCA value by
3e-8).

Degenerate inputs. A class with one sample is fine (it adds nothing to S_w). Duplicated
samples are fine. N < D is the case the reduction is for. D = 1 works (one direction).
ScoringError when the features are constant (no principal component), when every class
has a single sample (N = C: no within-class scatter), or when every sample equals its
class mean (S_w = 0). If all class means coincide (S_b = 0) the posteriors are the priors
and SFDA = sum_c pi_c^2 (finite).

Invariances: permutation of samples, relabelling of classes, translation and rotation of
the features. Not scale invariant in general: lam depends on the scale of S_w (at the
usual feature scales lam sits at its 1e-10 floor and the score is scale invariant in
practice).

Direction: higher is better; no sign flip.
Cost: O(N D b q) for the Krylov PCA with b = d + 8 and q <= 8 blocks, O(N d^2) for the
scatters, O(d^3 + C^3) for the two Cholesky factorisations and the small eigenproblems,
O(N C k) for the posteriors. No D x D matrix is formed unless min(N, D) <= 512.
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

__all__ = [
    "FisherFit",
    "PrincipalScores",
    "SFDAFit",
    "class_indices",
    "fisher_lda",
    "principal_scores",
    "register_scorers",
    "sfda",
    "sfda_fit",
]

SHRINKAGE_RATE = 5.0  # lam = exp(-SHRINKAGE_RATE * sigma_max(S_w)), as in the paper's code
SHRINKAGE_FLOOR = 1e-10
EXACT_PCA_MAX = 512  # min(N, D) up to which the principal components come from a full eigh
KRYLOV_RTOL = 1e-10  # Ritz residual |A v - theta v| / theta_max accepted as converged
KRYLOV_MAX_BLOCKS = 8  # Krylov blocks (2 passes over the features each) at most
KRYLOV_OVERSAMPLE = 8  # block size is k + this
_RANK_RTOL = 1e-10  # Gram eigenvalues below this fraction of the largest are zero
_GEIG_RTOL = 1e-10  # generalised eigenvalues below this fraction of the largest are zero
_WITHIN_RTOL = 1e-20  # tr(S_w) / tr(S_t) below this: no within-class variation


def class_indices(
    labels: torch.Tensor, n: int, num_classes: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated labels mapped to 0..C-1 over the classes present, and the class counts."""
    import torch

    y = check_labels(labels, n, num_classes)
    _, index, counts = torch.unique(y, return_inverse=True, return_counts=True)
    return index, counts


# ------------------------------------------------------------------------------------ PCA


@dataclass(frozen=True)
class PrincipalScores:
    """Leading principal components of centred features ``xc`` (float64).

    ``scores`` is (N, k), the coordinates of the rows of ``xc`` on the first k principal
    axes (Xc V_k); ``eigenvalues`` (k,) are the matching eigenvalues of Xc^T Xc, in
    decreasing order; ``total`` is their sum over all axes (|Xc|_F^2); ``method`` says how
    they were found ("exact" or "krylov").
    """

    scores: torch.Tensor
    eigenvalues: torch.Tensor
    total: float
    method: str


def _rank_cut(evals: torch.Tensor, k: int) -> int:
    """How many of the decreasing ``evals`` to keep: at most k, nonzero ones only."""
    if evals.numel() == 0 or not float(evals[0]) > 0:
        return 0
    return min(k, int((evals > _RANK_RTOL * evals[0]).sum()))


def _exact_scores(xc: torch.Tensor, k: int) -> PrincipalScores:
    import torch

    n, d = xc.shape
    if n <= d:  # the N x N Gram: scores are U sqrt(e)
        with serial():
            evals, vecs = torch.linalg.eigh(xc @ xc.T)
        evals, vecs = evals.flip(0), vecs.flip(1)
        kept = _rank_cut(evals, k)
        scores = vecs[:, :kept] * evals[:kept].clamp_min(0).sqrt()
    else:  # the D x D Gram: scores are Xc V
        gram = xc.T @ xc
        with serial():
            evals, vecs = torch.linalg.eigh(gram)
        evals, vecs = evals.flip(0), vecs.flip(1)
        kept = _rank_cut(evals, k)
        scores = xc @ vecs[:, :kept]
    total = float((xc * xc).sum())
    return PrincipalScores(scores, evals[:kept].clamp_min(0), total, "exact")


def _orthonormal(block: torch.Tensor, basis: torch.Tensor | None) -> torch.Tensor:
    """An orthonormal basis of ``block`` minus its part in span(``basis``) (maybe empty).

    Projected out twice (classical Gram-Schmidt, reorthogonalised); directions whose
    remaining norm is below 1e-12 of the block's norm are dropped, so a block that falls in
    the span of ``basis`` (an invariant subspace) gives no column rather than round-off.
    """
    import torch

    size = float(block.norm())
    for _ in range(2):
        if basis is not None:
            block = block - basis @ (basis.T @ block)
    u, s, _ = torch.linalg.svd(block, full_matrices=False)
    return u[:, s > 1e-12 * size]


def _krylov_scores(xc: torch.Tensor, k: int, seed: int) -> PrincipalScores | None:
    """Top-k principal components by block Krylov + Rayleigh-Ritz; None: use the exact path.

    The Krylov space span{Q, A Q, ..., A^(q-1) Q} of the smaller Gram A (never formed: each
    block costs two passes over ``xc``) grows until every kept Ritz pair has residual
    |A v - theta v| <= ``KRYLOV_RTOL`` theta_max or ``KRYLOV_MAX_BLOCKS`` blocks are built;
    convergence is checked after blocks 2, 4, 6, ... and the last one.
    """
    import torch

    n, d = xc.shape
    op = xc if n >= d else xc.T  # A = op^T op is the smaller Gram (m x m)
    rows, m = op.shape
    block = k + KRYLOV_OVERSAMPLE
    cap = min(KRYLOV_MAX_BLOCKS * block, m // 2 + block)
    basis = xc.new_empty(m, cap)  # orthonormal Krylov basis K
    image = xc.new_empty(rows, cap)  # op K
    product = xc.new_empty(m, cap)  # A K = op^T op K
    gen = torch.Generator(device="cpu").manual_seed(seed)
    start = torch.randn(m, block, generator=gen, dtype=torch.float64).to(xc.device)
    with serial():
        q = _orthonormal(start, None)
    size, blocks = 0, 0
    total = float((xc * xc).sum())
    while True:
        new = slice(size, size + q.shape[1])
        basis[:, new] = q
        torch.mm(op, q, out=image[:, new])
        torch.mm(op.T, image[:, new], out=product[:, new])
        size, blocks = new.stop, blocks + 1
        last = blocks >= KRYLOV_MAX_BLOCKS or size + block > m // 2
        if last or blocks % 2 == 0:
            img = image[:, :size]
            small = basis[:, :size].T @ product[:, :size]  # K^T A K (size x size, from m rows)
            with serial():
                theta, y = torch.linalg.eigh(0.5 * (small + small.T))
            theta, y = theta.flip(0), y.flip(1)
            if not float(theta[0]) > 0:
                return PrincipalScores(xc[:, :0], theta[:0], total, "krylov")
            top = y[:, :k]
            residual = product[:, :size] @ top - (basis[:, :size] @ top) * theta[:k]
            converged = float(residual.norm(dim=0).max()) <= KRYLOV_RTOL * float(theta[0])
            if converged or last:
                break
        with serial():
            q = _orthonormal(product[:, new], basis[:, :size])
        if q.shape[1] == 0:
            return None  # invariant subspace yet residuals too large: round-off, go exact
    if not converged and blocks < KRYLOV_MAX_BLOCKS:
        return None  # stopped by the size limit, not by convergence or the budget
    kept = _rank_cut(theta, k)
    evals = theta[:kept].clamp_min(0)
    # n >= d: Xc (K y) without another pass over Xc; n < d: U sqrt(e)
    scores = img @ y[:, :kept] if n >= d else (basis[:, :size] @ y[:, :kept]) * evals.sqrt()
    return PrincipalScores(scores, evals, total, "krylov")


def principal_scores(xc: torch.Tensor, k: int, seed: int = 0) -> PrincipalScores:
    """Coordinates of the centred rows ``xc`` on their first ``k`` principal axes.

    Exact (one ``eigh`` of the smaller Gram) when min(N, D) <= ``EXACT_PCA_MAX`` or k is a
    large fraction of it; otherwise a seeded block Krylov iteration (see module docstring).
    Axes with zero variance are dropped, so fewer than k columns may come back.
    """
    n, d = xc.shape
    m = min(n, d)
    k = max(0, min(k, m))
    if k == 0:
        return PrincipalScores(xc[:, :0], xc.new_zeros(0), float((xc * xc).sum()), "exact")
    if m > EXACT_PCA_MAX and 4 * (k + KRYLOV_OVERSAMPLE) < m:
        found = _krylov_scores(xc, k, seed)
        if found is not None:
            return found
    return _exact_scores(xc, k)


# ---------------------------------------------------------------------------- Fisher LDA


@dataclass(frozen=True)
class FisherFit:
    """A regularised Fisher discriminant fit (all tensors float64).

    ``within`` is S_w(lam) and ``between`` S_b (d x d); ``eigenvalues`` (k,) and
    ``directions`` (d, k) solve S_b v = e S_w(lam) v with V^T S_w(lam) V = I, e decreasing;
    ``class_means`` (C, d) are in the input coordinates; ``posteriors`` (N, C) are
    p(c | x_i) of the Gaussian classifier in the Fisher space.
    """

    posteriors: torch.Tensor
    shrinkage: float
    within: torch.Tensor
    between: torch.Tensor
    eigenvalues: torch.Tensor
    directions: torch.Tensor
    class_means: torch.Tensor
    priors: torch.Tensor

    def mean_true_posterior(self, y: torch.Tensor) -> float:
        """(1/N) sum_i p(y_i | x_i), the mean posterior of each sample's own class."""
        return float(self.posteriors.gather(1, y[:, None]).mean())


def adaptive_shrinkage(within: torch.Tensor) -> float:
    """lam = max(exp(-5 sigma_max(S_w)), 1e-10), the paper's data-driven shrinkage."""
    import torch

    top = float(torch.linalg.eigvalsh(within)[-1]) if within.numel() else 0.0
    return max(math.exp(-SHRINKAGE_RATE * max(top, 0.0)), SHRINKAGE_FLOOR)


def fisher_lda(
    z: torch.Tensor, y: torch.Tensor, num_classes: int, shrinkage: float | None = None
) -> FisherFit:
    """Regularised Fisher discriminant of ``z`` (N, d) for labels ``y`` in 0..C-1.

    ``shrinkage`` None takes lam from the data (:func:`adaptive_shrinkage`). Every class in
    0..``num_classes``-1 must be present.
    """
    with serial():
        return _fisher_lda(z, y, num_classes, shrinkage)


def _fisher_lda(
    z: torch.Tensor, y: torch.Tensor, num_classes: int, shrinkage: float | None
) -> FisherFit:
    import torch

    n, d = z.shape
    c = num_classes
    counts = torch.bincount(y, minlength=c).to(z.dtype)
    priors = counts / n
    mu = z.mean(dim=0)
    zc = z - mu
    means = torch.zeros(c, d, dtype=z.dtype, device=z.device).index_add_(0, y, zc)
    means /= counts[:, None]  # class means, centred
    resid = zc - means[y]
    within = resid.T @ resid / n
    trace = float(within.diagonal().sum())
    spread = float((zc * zc).sum()) / n
    if not trace > _WITHIN_RTOL * spread:  # zero up to the round-off of the class means
        raise ScoringError("no within-class variation (every sample equals its class mean): "
                           "the Fisher discriminant is undefined.")
    lam = adaptive_shrinkage(within) if shrinkage is None else float(shrinkage)
    within_s = (1.0 - lam) * within
    within_s.diagonal().add_(lam * trace / d)
    chol, info = torch.linalg.cholesky_ex(within_s)
    if int(info) != 0:
        raise ScoringError("the regularised within-class scatter is not positive definite.")

    factor = (means * priors.sqrt()[:, None]).T  # B (d x C), S_b = B B^T
    between = factor @ factor.T
    w = torch.linalg.solve_triangular(chol, factor, upper=False)  # L^-1 B
    evals, q = torch.linalg.eigh(w.T @ w)
    evals, q = evals.flip(0), q.flip(1)
    top = float(evals[0]) if evals.numel() else 0.0
    keep = int((evals > _GEIG_RTOL * top).sum()) if top > 0 else 0
    keep = min(keep, c - 1, d)
    evals = evals[:keep]
    u = (w @ q[:, :keep]) / evals.sqrt()
    directions = torch.linalg.solve_triangular(chol.T, u, upper=True)  # L^-T u

    proj = zc @ directions  # Fisher coordinates (N, k)
    centres = means @ directions  # (C, k)
    logits = proj @ centres.T - 0.5 * (centres * centres).sum(dim=1) + priors.log()
    posteriors = torch.softmax(logits, dim=1)
    return FisherFit(posteriors, lam, within_s, between, evals, directions, means + mu, priors)


# ---------------------------------------------------------------------------------- SFDA


@dataclass(frozen=True)
class SFDAFit:
    """SFDA and its parts: the reduced dimension, both Fisher fits, the mixed features."""

    score: float
    dim: int
    first: FisherFit
    second: FisherFit
    mixed: torch.Tensor
    pca: PrincipalScores


def default_dim(n: int, num_classes: int) -> int:
    """zoosel's reduced dimension: min(N - C, floor(N / C)), at least 1."""
    return max(1, min(n - num_classes, n // num_classes))


def reduced_features(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int | None = None,
    *,
    max_dim: int | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, int, PrincipalScores]:
    """The validated inputs of SFDA's Fisher fits: principal-component scores (N, d),
    labels mapped to 0..C-1, C, and the PCA result; d = ``max_dim`` or
    :func:`default_dim`. Raises ScoringError as described in the module docstring."""
    f = as_float64(features, "features")
    n = f.shape[0]
    y, counts = class_indices(labels, n, num_classes)
    y = y.to(f.device)
    c = counts.numel()
    if n - c < 1:
        raise ScoringError("every class has a single sample: no within-class scatter, "
                           "the Fisher discriminant is undefined.")
    dim = default_dim(n, c) if max_dim is None else int(max_dim)
    if dim < 1:
        raise ScoringError(f"max_dim must be at least 1, got {max_dim}.")
    pca = principal_scores(f - f.mean(dim=0), dim, seed)
    if pca.scores.shape[1] == 0:
        raise ScoringError("features are constant: the Fisher discriminant is undefined.")
    return pca.scores, y, c, pca


def sfda_fit(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int | None = None,
    *,
    max_dim: int | None = None,
    seed: int = 0,
) -> SFDAFit:
    """Fit SFDA (module docstring) and return the score with its intermediate results.

    :param features: (N, D) float features, any dtype or device (computed in float64).
    :param labels: (N,) integer class labels.
    :param num_classes: optional upper bound used only to validate ``labels``.
    :param max_dim: principal components kept; default ``min(N - C, floor(N / C))``.
    :param seed: seeds the start block of the Krylov PCA (large inputs only).
    :raises ScoringError: on unusable input (see module docstring).
    """
    import torch

    z, y, c, pca = reduced_features(features, labels, num_classes, max_dim=max_dim, seed=seed)
    first = fisher_lda(z, y, c)
    soft = torch.softmax(first.posteriors, dim=1)  # the paper's softened confidence
    conf = soft.gather(1, y[:, None])
    means = first.class_means
    others = (means.sum(dim=0) - means) / (c - 1)
    mixed = conf * z + (1.0 - conf) * others[y]
    second = fisher_lda(mixed, y, c, shrinkage=first.shrinkage)
    score = second.mean_true_posterior(y)
    if not math.isfinite(score):
        raise ScoringError("SFDA is not finite for these features.")
    return SFDAFit(score, z.shape[1], first, second, mixed, pca)


def sfda(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int | None = None,
    *,
    max_dim: int | None = None,
    seed: int = 0,
) -> float:
    """SFDA: mean true-class posterior after ConfMix in the Fisher space (higher is better)."""
    return sfda_fit(features, labels, num_classes, max_dim=max_dim, seed=seed).score


def _score(inputs: ScoreInputs) -> float:
    if inputs.features is None:
        raise ScoringError("SFDA needs features.")
    return sfda(inputs.features, inputs.labels, inputs.num_classes)


@hookimpl
def register_scorers(register: Callable[[Scorer], None]) -> None:
    """Register SFDA."""
    register(
        Scorer(
            name="sfda",
            fn=_score,
            needs=frozenset({Need.FEATURES}),
            summary="Mean true-class posterior in a regularised Fisher space after "
            "self-challenging confusion mixing.",
            reference="Shao et al. 2022, ECCV, SFDA (arXiv 2207.03036)",
            cost="O(N D d) PCA + O(N d^2 + d^3 + C^3)",
        )
    )
