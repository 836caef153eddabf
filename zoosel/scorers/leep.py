"""LEEP, the log expected empirical prediction (Nguyen et al. 2020, ICML, arXiv 2002.12462).

Formula. theta (N, Cs) are the source head's softmax probabilities, y the target labels::

    P(y, z) = (1/N) sum_i theta(x_i)_z 1[y_i = y]      (C x Cs empirical joint)
    P(z)    = sum_y P(y, z),      P(y | z) = P(y, z) / P(z)
    LEEP    = (1/N) sum_i log( sum_z P(y_i | z) theta(x_i)_z )

Source classes with P(z) = 0 (theta(x_i)_z = 0 for every i) contribute nothing and are
given P(y | z) = 0. Rows of theta must be probabilities (non-negative, summing to 1 within
1e-3; they are renormalised exactly); logits are refused.

Direction: higher is better (an average log-likelihood, <= 0); no sign flip.
Cost: O(N Cs) time and O(C Cs) memory besides the input: two passes over theta in
float64 row blocks that stay in cache (the first checks the rows and accumulates the
joint, the second takes each row's dot product with P(y_i | .) of its own label only;
no (N, C) product and no float64 copy of theta). Computed in float64, on one thread
(the work is many small cache-resident operations).
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

    import torch

__all__ = ["leep", "register_scorers"]


def leep(source_probs: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> float:
    """LEEP of source-head probabilities ``source_probs`` (N, Cs) for ``labels`` (N,).

    :param num_classes: optional upper bound used only to validate ``labels``.
    :returns: the average log expected empirical prediction (<= 0; higher is better).
    """
    import torch

    theta = probability_matrix(source_probs)
    n, cs = theta.shape
    y = check_labels(labels, n, num_classes).to(theta.device)
    c = int(y.max()) + 1
    f64 = dict(dtype=torch.float64, device=theta.device)
    with torch_threads(1):
        blocks = row_blocks(n, 8 * cs, theta.device.type)
        buf = torch.empty(blocks[0][1], cs, **f64)
        sums = torch.empty(n, **f64)
        low = torch.empty(len(blocks), **f64)
        joint = torch.zeros(c, cs, **f64)  # n P(y, z), from the renormalised rows
        for b, (start, stop) in enumerate(blocks):
            rows = buf[: stop - start].copy_(theta[start:stop])
            torch.sum(rows, dim=1, out=sums[start:stop])
            low[b] = rows.min()
            joint.index_add_(0, y[start:stop], rows.div_(sums[start:stop, None]))
        check_probability_rows(low, sums, theta)
        marginal = joint.sum(dim=0)  # n P(z)
        cond = torch.where(marginal > 0, joint / marginal.clamp_min(1e-300), 0.0)  # P(y | z)
        # EEP of the true label, sum_z P(y_i | z) theta_iz: the label's row of cond only
        eep = torch.empty(n, **f64)
        picked = torch.empty_like(buf)
        for start, stop in blocks:
            rows = buf[: stop - start].copy_(theta[start:stop])
            own = torch.index_select(cond, 0, y[start:stop], out=picked[: stop - start])
            torch.sum(own.mul_(rows), dim=1, out=eep[start:stop])
        eep /= sums
        if not bool((eep > 0).all()):
            raise ScoringError("LEEP: a sample has zero expected empirical prediction.")
        result = float(torch.log(eep).mean())
    if not math.isfinite(result):
        raise ScoringError("LEEP is not finite for these inputs.")
    return result


def _score(inputs: ScoreInputs) -> float:
    if inputs.source_probs is None:
        raise ScoringError("LEEP needs source-head probabilities.")
    return leep(inputs.source_probs, inputs.labels, inputs.num_classes)


@hookimpl
def register_scorers(register: Callable[[Scorer], None]) -> None:
    """Register LEEP."""
    register(
        Scorer(
            name="leep",
            fn=_score,
            needs=frozenset({Need.SOURCE_PROBS}),
            summary="Log-likelihood of the labels through the source head's empirical "
            "label map P(y | z).",
            reference="Nguyen et al. 2020, ICML, LEEP (arXiv 2002.12462)",
            cost="O(N Cs C)",
        )
    )
