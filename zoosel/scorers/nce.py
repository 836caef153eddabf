"""NCE, the negative conditional entropy (Tran et al. 2019, ICCV, arXiv 1908.08142).

Formula. z_i = argmax_z theta(x_i)_z is the source head's hard prediction (ties go to the
lowest index), y_i the target label. From the empirical joint of the pairs::

    P(y, z) = #{i : y_i = y, z_i = z} / N,     P(z) = #{i : z_i = z} / N
    NCE     = -H(Y | Z) = sum_{y, z} P(y, z) log( P(y, z) / P(z) )

with 0 log 0 = 0 (only observed pairs enter).

Direction: higher is better as is (NCE <= 0, 0 when z determines y); no sign flip.
Cost: O(N Cs) for checking the rows and their argmax (one thread), plus O(N + C Cs)
for the pair counts when the C x Cs table has at most 4 N + 65536 cells, else O(N log N)
(sorted pair codes, never a dense table).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from zoosel.errors import ScoringError
from zoosel.hookspecs import hookimpl
from zoosel.scorers.inputs import (
    check_labels,
    check_probability_rows,
    probability_matrix,
    row_blocks,
)
from zoosel.threads import torch_threads
from zoosel.types import Need, ScoreInputs, Scorer

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np
    import torch

__all__ = ["negative_conditional_entropy", "nce", "register_scorers"]

_DENSE_CELLS = 2**16  # pair counts in a dense table up to 4 N + this many cells


def negative_conditional_entropy(
    source_labels: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None
) -> float:
    """-H(Y | Z) of target ``labels`` given hard source predictions ``source_labels``.

    Both are (N,) integer tensors; returns a float <= 0, higher is better.
    """
    import torch

    if not isinstance(source_labels, torch.Tensor) or source_labels.ndim != 1:
        raise ScoringError("source_labels must be a 1-D integer torch.Tensor.")
    if source_labels.dtype.is_floating_point or source_labels.dtype.is_complex:
        raise ScoringError(f"source_labels must be integers, got {source_labels.dtype}.")
    z = source_labels.to(torch.int64)
    n = z.shape[0]
    y = check_labels(labels, n, num_classes).to(z.device)
    z_low, z_high = (int(v) for v in torch.aminmax(z))
    if z_low < 0:
        raise ScoringError("source_labels must be non-negative.")

    num_z = z_high + 1
    codes = y * num_z + z
    cells = (int(y.max()) + 1) * num_z
    # one thread: small operations, and a float64 log on several threads can cost ms
    with torch_threads(1):
        if cells <= 4 * n + _DENSE_CELLS:
            pair_counts = torch.bincount(codes, minlength=cells)
            pairs = pair_counts.nonzero().squeeze(1)
            pair_counts = pair_counts[pairs]
        else:
            pairs, pair_counts = torch.unique(codes, return_counts=True)
        z_counts = torch.bincount(z, minlength=num_z)
        n_yz = pair_counts.to(torch.float64)
        n_z = z_counts[pairs % num_z].to(torch.float64)
        result = float((n_yz * torch.log(n_yz / n_z)).sum()) / n
    if not math.isfinite(result):
        raise ScoringError("NCE is not finite for these inputs.")
    return result


def nce(source_probs: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> float:
    """NCE from source-head probabilities (N, Cs): -H(Y | argmax theta). Higher is better."""
    import torch

    theta = probability_matrix(source_probs)
    if theta.dtype not in (torch.float32, torch.float64):
        theta = theta.to(torch.float32)  # half-precision row sums would round past the check
    # Row sums in the input dtype are ample for the 1e-3 row-sum check.
    if theta.device.type == "cpu":
        sums, low, top = _rows_numpy(theta.numpy())
        check_probability_rows(torch.tensor(low), torch.from_numpy(sums), theta)
        top = torch.from_numpy(top)
    else:
        check_probability_rows(theta.min(), theta.sum(dim=1), theta)
        top = theta.argmax(dim=1)
    return negative_conditional_entropy(top, labels, num_classes)


def _rows_numpy(a: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Row sums, the minimum and the row argmax (first maximum) of ``a``, in row blocks that
    stay in cache (one read of ``a`` from memory; numpy's reductions are vectorised)."""
    import numpy as np

    n, cs = a.shape
    sums = np.empty(n, dtype=a.dtype)
    top = np.empty(n, dtype=np.int64)
    low = math.inf
    with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN sums are reported
        for start, stop in row_blocks(n, cs * a.itemsize):
            block = a[start:stop]
            block.sum(axis=1, out=sums[start:stop])
            low = min(low, float(block.min()))
            block.argmax(axis=1, out=top[start:stop])
    return sums, low, top


def _score(inputs: ScoreInputs) -> float:
    if inputs.source_probs is None:
        raise ScoringError("NCE needs source-head probabilities.")
    return nce(inputs.source_probs, inputs.labels, inputs.num_classes)


@hookimpl
def register_scorers(register: Callable[[Scorer], None]) -> None:
    """Register NCE."""
    register(
        Scorer(
            name="nce",
            fn=_score,
            needs=frozenset({Need.SOURCE_PROBS}),
            summary="Negative conditional entropy of the labels given the source head's "
            "predicted class.",
            reference="Tran et al. 2019, ICCV, Transferability and Hardness (arXiv 1908.08142)",
            cost="O(N Cs + N log N)",
        )
    )
