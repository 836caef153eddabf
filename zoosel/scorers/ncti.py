"""NCTI, the neural collapse transferability index (Wang et al. 2023, ICCV, "How far
pre-trained models are from neural collapse on the target dataset informs their
transferability", arXiv 2306.06409). Pool-relative.

Setting, as in the authors' code: the centred features are projected on their first
d = min(64, N - C) principal components (rank permitting), and a regularised LDA is
fitted there with the shrinkage lam = max(exp(-sum of the 32 largest PCA variances),
1e-10) (variances with the 1 / (N - 1) convention). The LDA is zoosel's Fisher fit
(:func:`zoosel.scorers.sfda.fisher_lda`): S_w(lam) = (1 - lam) S_w + lam tr(S_w) / d I,
directions V from the generalised eigenproblem S_b v = e S_w(lam) v (V^T S_w(lam) V = I,
the k <= C - 1 directions with e > 0), posteriors p(c | x) of the Gaussian classifier in
that space. With Z = (x_i - mu)^T V (N x k) the projected features and P (N x C) the
posteriors, the three neural-collapse terms of one candidate (``fn`` returns them) are::

    seli = |Z|_*                                   (simplex-ETF / SELI term, nuclear norm)
    ncc  = (1/N) sum_i P[i, y_i]                   (nearest-centre classifier term)
    vc   = -log sum_c |P_c|_*                      (within-class variability collapse;
                                                    P_c the rows of class c)

|.|_* is the nuclear norm (sum of singular values). A larger nuclear norm of the
projected features means a higher-rank, closer-to-ETF geometry; a smaller class-wise
nuclear norm of the predictions means more collapsed classes, hence the minus sign. The
paper writes S_vc without the log; its code takes the log, which zoosel follows.
zoosel uses the plain between-class scatter S_b in the eigenproblem (scikit-learn's
eigen solver, used by the authors, takes the shrunk total minus the shrunk within-class
scatter, which adds lam tr(S_b) / d I to S_b: the posteriors are the same, the Fisher
directions differ by O(lam) when C - 1 < d).

Pool normalisation (``pool_normalize``): each term is min-max normalised over the
candidate pool, n(v) = (v - min) / (max - min), and NCTI = n(seli) + n(ncc) + n(vc), in
[0, 3] (the authors' code computes n(seli) + n(ncc) - n(-vc) = this minus 1: same
ranking). A term equal for every candidate, in particular a pool of ONE candidate,
normalises to 0.0, so a single candidate scores 0.0.

Degenerate inputs. ScoringError for constant features, when every class has a single
sample (N = C) or when every sample equals its class mean (S_w = 0). Otherwise (a class
with one sample, duplicates, N < D, D = 1) the terms are finite.

Invariances: permutation of samples, relabelling of classes, translation and rotation of
the features. Not scale invariant (lam depends on the variances; at the usual feature
scales lam sits at its 1e-10 floor).

Direction: higher is better (each term and the normalised sum).
Cost: the Krylov PCA (O(N D b q), b = 72) plus O(N d^2 + d^3 + C^3) for the LDA and
O(sum_c N_c C min(N_c, C)) for the class-wise nuclear norms.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from zoosel.errors import ScoringError
from zoosel.hookspecs import hookimpl
from zoosel.scorers.etran import min_max_sum
from zoosel.scorers.sfda import (
    SHRINKAGE_FLOOR,
    fisher_lda,
    reduced_features,
    serial,
)
from zoosel.types import Need, ScoreInputs, Scorer

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import torch

__all__ = ["COMPONENTS", "ncti_components", "ncti_pool_normalize", "nuclear_norm",
           "register_scorers"]

COMPONENTS = ("seli", "ncc", "vc")
PCA_DIM = 64
SHRINKAGE_COMPONENTS = 32


def nuclear_norm(matrix: torch.Tensor) -> float:
    """Sum of the singular values of ``matrix`` (float64)."""
    import torch

    if matrix.numel() == 0:
        return 0.0
    with serial():
        return float(torch.linalg.svdvals(matrix).sum())


def ncti_components(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int | None = None,
    *,
    dim: int = PCA_DIM,
    seed: int = 0,
) -> dict[str, float]:
    """NCTI's raw terms of one candidate: ``{"seli": ..., "ncc": ..., "vc": ...}``."""
    import torch

    if dim < 1:
        raise ScoringError(f"dim must be at least 1, got {dim}.")
    z, y, c, pca = reduced_features(features, labels, num_classes, max_dim=dim, seed=seed)
    n = z.shape[0]
    z = z[:, : n - c]  # at most N - C dimensions, so that S_w can be full rank
    variances = pca.eigenvalues[:SHRINKAGE_COMPONENTS] / (n - 1)
    lam = max(math.exp(-float(variances.sum())), SHRINKAGE_FLOOR)
    fit = fisher_lda(z, y, c, shrinkage=lam)
    projected = (z - z.mean(dim=0)) @ fit.directions
    seli = nuclear_norm(projected)
    ncc = fit.mean_true_posterior(y)
    order = torch.argsort(y, stable=True)
    counts = torch.bincount(y, minlength=c).tolist()
    blocks = torch.split(fit.posteriors[order], counts)
    spread = sum(nuclear_norm(block) for block in blocks)
    vc = -math.log(spread)
    parts = {"seli": seli, "ncc": ncc, "vc": vc}
    if not all(math.isfinite(v) for v in parts.values()):
        raise ScoringError("NCTI terms are not finite for these features.")
    return parts


def ncti_pool_normalize(pool: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """NCTI over a pool: the sum of the three min-max normalised terms."""
    return min_max_sum(pool, COMPONENTS)


def _components(inputs: ScoreInputs) -> dict[str, float]:
    if inputs.features is None:
        raise ScoringError("NCTI needs features.")
    return ncti_components(inputs.features, inputs.labels, inputs.num_classes)


@hookimpl
def register_scorers(register: Callable[[Scorer], None]) -> None:
    """Register NCTI (pool-relative)."""
    register(
        Scorer(
            name="ncti",
            fn=_components,
            needs=frozenset({Need.FEATURES}),
            summary="Neural-collapse terms (nuclear-norm geometry, nearest-centre "
            "posterior, class-wise collapse), min-max normalised over the pool.",
            reference="Wang et al. 2023, ICCV, NCTI (arXiv 2306.06409)",
            cost="Krylov PCA to 64 dims + O(N d^2 + d^3 + C^3)",
            pool_normalize=ncti_pool_normalize,
        )
    )
