"""LFC, the label-feature correlation (Deshpande et al. 2021, arXiv 2102.00084).

Formula. With Theta = F F^T (the N x N linear kernel of the rows of F) and the label
kernel K_Y[i, j] = +1 if y_i == y_j else -1, LFC is the Pearson correlation of the
N^2 entries of Theta and K_Y::

    S = sum((Theta - mu_T) * (K_Y - mu_K)) / (|Theta - mu_T|_F |K_Y - mu_K|_F)

with ONE scalar mean over all N^2 entries for each matrix (not CKA's double centring)
and Frobenius norms. F is used exactly as given: raw penultimate features, as in the
paper; zoosel adds no normalisation. The same function serves any (N, D) matrix, e.g.
the gradient sketches of LGC (:func:`kernel_label_correlation`).

Closed form (no N x N matrix is ever formed). Let n_c be the class sizes,
q = sum_c n_c^2 / N^2, m = F^T 1 / N (the mean row), Fc = F - 1 m^T (columns
centred), S_c = Fc^T y_c (class sums of Fc, y_c the one-hot column) and a = Fc m.

* K_Y = 2 Y Y^T - 1 1^T, so sum(K_Y) = N^2 (2q - 1), |K_Y|_F^2 = N^2 and
  |K_Y - mu_K|_F^2 = N^2 - N^2 (2q - 1)^2 = 4 N^2 q (1 - q).
* Theta = Fc Fc^T + a 1^T + 1 a^T + |m|^2 1 1^T. Since Fc^T 1 = 0 and 1^T a = 0, the
  entries of the first three terms sum to zero, so mu_T = |m|^2 and
  Theta - mu_T 1 1^T = Fc Fc^T + a 1^T + 1 a^T; the cross terms of its squared norm
  vanish (Fc Fc^T 1 = 0, 1^T a = 0), so
  |Theta - mu_T|_F^2 = |Fc^T Fc|_F^2 + 2 N |a|^2.
  (|Fc^T Fc|_F = |Fc Fc^T|_F: the smaller Gram, min(N, D)^2, is the one formed.)
* The entries of Theta - mu_T sum to zero, so the covariance term is
  sum((Theta - mu_T) * (K_Y - mu_K)) = sum((Theta - mu_T) * K_Y)
  = 2 sum_c |S_c|^2 - |Fc^T 1|^2 + 2 a^T K_Y 1 = 2 sum_c |S_c|^2 + 4 m . sum_c n_c S_c
  (K_Y 1 = 2 Y n - N 1, with n the vector of class sizes).
  (Expanding the uncentred form gives the textbook identity
  sum(Theta * K_Y) = 2 sum_c |F^T y_c|^2 - |F^T 1|^2 with mean(Theta) = |F^T 1|^2 / N^2;
  the centred form above is the same number without cancelling the large |m|^2 terms.)

Hence::

    S = (sum_c |S_c|^2 + 2 m . sum_c n_c S_c) / (N sqrt(q (1 - q) (|Fc^T Fc|_F^2 + 2 N |Fc m|^2)))

Invariances: relabelling of the classes and permutation of the samples; scale invariant
(F -> c F multiplies Theta by c^2, which a correlation ignores) and rotation invariant
(F Q Q^T F^T = F F^T for an orthogonal Q). Translating the features changes the score.

Direction: higher is better (a correlation in [-1, 1]); no sign flip.
Cost: O(N D min(N, D)) time for the Gram, O(min(N, D)^2 + C D) memory; float64 throughout.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from zoosel.errors import ScoringError
from zoosel.hookspecs import hookimpl
from zoosel.scorers.inputs import as_float64, check_labels
from zoosel.types import Need, ScoreInputs, Scorer

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

__all__ = ["kernel_label_correlation", "label_feature_correlation", "register_scorers"]

_ROW_SPREAD_TOL = 1e-24  # |Fc|^2 / |F|^2 below this: all rows equal up to round-off


def kernel_label_correlation(
    matrix: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None
) -> float:
    """Pearson correlation between the entries of ``matrix @ matrix.T`` and K_Y.

    :param matrix: (N, D) rows to correlate (features for LFC, gradient sketches for LGC).
    :param labels: (N,) integer class labels.
    :param num_classes: optional upper bound used only to validate ``labels``.
    :returns: the correlation in [-1, 1], as a Python float; higher is better.
    :raises ScoringError: on unusable input or a constant kernel.
    """
    import torch

    f = as_float64(matrix, "features")
    n, d = f.shape
    y = check_labels(labels, n, num_classes).to(f.device)

    counts = torch.bincount(y).to(torch.float64)
    q = float((counts * counts).sum()) / (n * n)

    mean = f.mean(dim=0)  # m, (D,)
    fc = f - mean  # Fc, columns centred
    class_sums = torch.zeros(counts.numel(), d, dtype=torch.float64, device=f.device)
    class_sums.index_add_(0, y, fc)  # S_c, (C, D)
    numerator = float((class_sums * class_sums).sum()) + 2.0 * float(
        mean @ (counts @ class_sums)
    )

    # Both variance terms are sums of squares: no cancellation. The kernel is constant
    # exactly when all rows are equal, i.e. when Fc vanishes up to centring round-off.
    if not float((fc * fc).sum()) > _ROW_SPREAD_TOL * float((f * f).sum()):
        raise ScoringError("all feature rows are equal: the kernel is constant, LFC undefined.")
    gram = fc.T @ fc if d <= n else fc @ fc.T  # the smaller of the two Grams
    a = fc @ mean
    var_theta = float((gram * gram).sum()) + 2.0 * n * float(a @ a)
    result = numerator / (n * math.sqrt(q * (1.0 - q) * var_theta))
    if not math.isfinite(result):
        raise ScoringError("LFC is not finite for these inputs.")
    return result


def label_feature_correlation(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None
) -> float:
    """LFC: :func:`kernel_label_correlation` of the penultimate features (higher is better)."""
    return kernel_label_correlation(features, labels, num_classes)


def _score(inputs: ScoreInputs) -> float:
    if inputs.features is None:
        raise ScoringError("LFC needs features.")
    return label_feature_correlation(inputs.features, inputs.labels, inputs.num_classes)


@hookimpl
def register_scorers(register: Callable[[Scorer], None]) -> None:
    """Register LFC."""
    register(
        Scorer(
            name="lfc",
            fn=_score,
            needs=frozenset({Need.FEATURES}),
            summary="Pearson correlation of the feature kernel F F^T with the label kernel.",
            reference="Deshpande et al. 2021, arXiv 2102.00084",
            cost="O(N D min(N, D))",
        )
    )
