"""TransRate (Huang et al. 2022): coding rate of the features minus their rate given labels.

Reference: Huang, Huang, Rong, Yang, Wei, "Frustratingly easy transferability estimation",
ICML 2022 (arXiv 2106.09362). The coding rate is that of Ma et al. 2007 (lossy coding of
Gaussian data) as used by Yu et al. 2020 (MCR^2).

Formula. Z (N, D) are the features centred by their overall mean (not per class), Z_c the
n_c rows of class c, eps the distortion::

    R(Z)      = 1/2 log det(I_D + Z^T Z / (N eps))
    R(Z | Y)  = sum_c (n_c / N) R(Z_c),   R(Z_c) = 1/2 log det(I_D + Z_c^T Z_c / (n_c eps))
    TransRate = R(Z) - R(Z | Y)

Choices.
* eps = 1e-4 (``eps``), the value of the paper's experiments and released code.
* Class weights n_c / N: the rate of Z given Y is the expected rate of the class-conditional
  codes (the MCR^2 convention, R^c = sum_j tr(Pi_j) / (2N) log det(...)). The paper's
  released ten-line code divides the sum of the class rates by C instead, which is the same
  for balanced classes; with unbalanced classes the n_c / N weights are used here.
* No rescaling of the features: TransRate is not scale invariant (scaling Z by s is
  the same as dividing eps by s^2), so models whose features have larger magnitude get
  larger rates. It is invariant to orthogonal rotations and translations of the
  features, to permutations of samples and to relabelling of classes.

Computation. Each log-determinant uses Sylvester's identity
det(I_D + A^T A / t) = det(I_n + A A^T / t) with the smaller Gram (D x D when n > D,
n x n otherwise), and a Cholesky factorisation of the (positive definite) matrix:
log det = 2 sum log diag(L). Class c costs O(n_c D min(n_c, D)), so all classes together
cost O(N D min(n_max, D)), less than the one Gram of R(Z).

Degenerate inputs. Constant features: Z = 0, TransRate = 0.0, its minimum (TransRate >= 0
always: R is concave in Z^T Z, so R(Z) >= sum_c (n_c / N) R(Z_c)). One-sample classes
(R(Z_c) = 1/2 log(1 + |z|^2 / eps)), duplicated samples, D = 1 and N < D give the finite
values of the formula. Fewer than 2 samples or 2 classes, non-finite features or bad
labels raise ScoringError. Classes absent from the labels are ignored.

Direction: higher is better (a rate difference in nats); no sign flip.
Cost: one Gram O(N D min(N, D)), one Cholesky O(min(N, D)^3 / 3), and the class terms
O(N D min(n_c, D)).
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

__all__ = ["coding_rate", "register_scorers", "transrate"]

EPS = 1e-4


def _rate(z: torch.Tensor, eps: float) -> float:
    """1/2 log det(I + z^T z / (n eps)) for the rows z (n, D), via the smaller Gram."""
    import torch

    n, d = z.shape
    gram = z.mT @ z if d < n else z @ z.mT
    mat = gram / (n * eps)
    mat.diagonal().add_(1.0)
    chol, info = torch.linalg.cholesky_ex(mat)
    if int(info) == 0:
        return float(torch.log(chol.diagonal()).sum())
    # I + PSD is positive definite: only round-off can make Cholesky fail.
    with serial():
        lam = torch.linalg.eigvalsh(gram / (n * eps)).clamp_min(0.0)
    return 0.5 * float(torch.log1p(lam).sum())


def coding_rate(features: torch.Tensor, eps: float = EPS) -> float:
    """R(Z) = 1/2 log det(I + Z^T Z / (N eps)) of the rows of ``features``, as given."""
    z = as_float64(features, "features")
    if z.shape[0] < 1:
        raise ScoringError("need at least 1 sample.")
    return _rate(z, eps)


def transrate(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int | None = None,
    eps: float = EPS,
) -> float:
    """TransRate R(Z) - sum_c (n_c / N) R(Z_c) of ``features`` (N, D) for ``labels`` (N,).

    :param num_classes: optional upper bound used only to validate ``labels``.
    :param eps: the distortion of the coding rate (default 1e-4, as in the paper).
    :returns: TransRate >= 0, higher is better.
    :raises ScoringError: on unusable input.
    """
    import torch

    if not eps > 0:
        raise ScoringError(f"eps must be positive, got {eps}.")
    f = as_float64(features, "features")
    n = f.shape[0]
    y = check_labels(labels, n, num_classes).to(f.device)
    if not bool(varying_columns(f).any()):
        return 0.0  # every row equal: Z = 0 exactly (centring round-off aside)
    z = f - f.mean(dim=0)
    total = _rate(z, eps)
    order = torch.argsort(y, stable=True)
    counts = torch.bincount(y)
    conditional = 0.0
    start = 0
    with serial():  # many small Grams and Cholesky factorisations
        for size in counts.tolist():
            if size:
                conditional += size / n * _rate(z[order[start : start + size]], eps)
                start += size
    result = total - conditional
    if not math.isfinite(result):
        raise ScoringError("TransRate is not finite for these features.")
    return result


def _score(inputs: ScoreInputs) -> float:
    if inputs.features is None:
        raise ScoringError("TransRate needs features.")
    return transrate(inputs.features, inputs.labels, inputs.num_classes)


@hookimpl
def register_scorers(register: Callable[[Scorer], None]) -> None:
    """Register TransRate."""
    register(
        Scorer(
            name="transrate",
            fn=_score,
            needs=frozenset({Need.FEATURES}),
            summary="Coding rate of the features minus their class-conditional rate "
            "(eps = 1e-4).",
            reference="Huang et al. 2022, ICML, Frustratingly easy transferability "
            "estimation (arXiv 2106.09362)",
            cost="O(N D min(N, D)) Gram + O(min(N, D)^3) Cholesky + O(N D min(n_c, D))",
        )
    )
