"""ETran, energy-based transferability estimation (Gholami et al. 2023, ICCV, "ETran:
energy-based transferability estimation", arXiv 2308.02027). Pool-relative.

Components, per candidate (``fn`` returns them as a dict):

* ``energy``: S_en = (1/N) sum_i log sum_d exp(f_id), the negative free energy of an
  energy-based model that reads the penultimate features f_i as logits (temperature 1).
  A high value says the target images are in-distribution for the model. The authors'
  released script averages only the lowest 0.5% of the per-sample values;
  ``energy_fraction`` reproduces that (default 1.0: all samples, the paper's mean).
* ``lda``: S_cls = (1/N) sum_i p(y_i | x_i), the mean true-class posterior of the
  regularised Fisher/LDA classifier, computed exactly as SFDA's first stage
  (:func:`zoosel.scorers.sfda.fisher_lda`: shrinkage lam = max(exp(-5 sigma_max(S_w)),
  1e-10), generalised eigenproblem, Gaussian classifier in the Fisher space) on the same
  principal-component reduction to min(N - C, floor(N / C)) dimensions, without which it
  saturates at 1.0 whenever D is large against N (see :mod:`zoosel.scorers.sfda`).

The paper's third term, the SVD-based regression score S_reg (least-squares fit of the
targets), is its term for regression and detection targets; zoosel ranks for
classification and leaves it out, as the authors' classification scripts do.

Pool normalisation (``pool_normalize``): each component is min-max normalised over the
candidate pool, n(v) = (v - min) / (max - min), and the final score is the sum
T = n(S_en) + n(S_cls) (the paper adds its normalised terms; the authors' classification
script weights them 0.15 / 0.85, available as ``RELEASED_WEIGHTS`` through
:func:`etran_pool_normalize`). A component equal for every candidate, and in particular
a pool of ONE candidate, normalises to 0.0, so a single candidate scores 0.0.

Degenerate inputs. The energy term is finite for any finite features (constant ones
included). The LDA term raises ScoringError where SFDA's Fisher fit does: constant
features, every class with a single sample, or every sample equal to its class mean.
Otherwise (one-sample classes, duplicates, N < D, D = 1) both are finite.

Invariances: permutation of samples and relabelling of classes for both terms; the LDA
term is also translation and rotation invariant, the energy term is neither (it reads
the feature coordinates as logits) and neither is scale invariant.

Direction: higher is better (for each component and for the normalised sum).
Cost: O(N D) for the energy, the LDA term as SFDA's first stage (Krylov PCA O(N D d q)
plus O(N d^2 + d^3 + C^3)); normalisation O(M) for M candidates.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from zoosel.errors import ScoringError
from zoosel.hookspecs import hookimpl
from zoosel.scorers.inputs import as_float64
from zoosel.scorers.sfda import fisher_lda, reduced_features
from zoosel.types import Need, ScoreInputs, Scorer

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import torch

__all__ = [
    "COMPONENTS",
    "RELEASED_WEIGHTS",
    "etran_components",
    "etran_pool_normalize",
    "min_max_pool",
    "min_max_sum",
    "register_scorers",
]

COMPONENTS = ("energy", "lda")
PAPER_WEIGHTS = {"energy": 1.0, "lda": 1.0}
RELEASED_WEIGHTS = {"energy": 0.15, "lda": 0.85}


def energy_score(features: torch.Tensor, fraction: float = 1.0) -> float:
    """Mean of logsumexp over the feature dimensions (the lowest ``fraction`` of samples)."""
    import torch

    if not 0 < fraction <= 1:
        raise ScoringError("energy_fraction must lie in (0, 1].")
    f = as_float64(features, "features")
    per_sample = torch.logsumexp(f, dim=1)
    if fraction < 1:
        count = max(1, math.ceil(fraction * per_sample.numel()))
        per_sample = per_sample.sort().values[:count]
    return float(per_sample.mean())


def lda_score(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int | None = None,
    *,
    max_dim: int | None = None,
    seed: int = 0,
) -> float:
    """Mean true-class posterior of the regularised Fisher/LDA classifier (SFDA stage 1)."""
    z, y, c, _ = reduced_features(features, labels, num_classes, max_dim=max_dim, seed=seed)
    return fisher_lda(z, y, c).mean_true_posterior(y)


def etran_components(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int | None = None,
    *,
    energy_fraction: float = 1.0,
    max_dim: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """ETran's raw components of one candidate: ``{"energy": S_en, "lda": S_cls}``."""
    parts = {
        "energy": energy_score(features, energy_fraction),
        "lda": lda_score(features, labels, num_classes, max_dim=max_dim, seed=seed),
    }
    if not all(math.isfinite(v) for v in parts.values()):
        raise ScoringError("ETran components are not finite for these features.")
    return parts


def min_max_pool(
    pool: Mapping[str, Mapping[str, float]], components: tuple[str, ...]
) -> dict[str, dict[str, float]]:
    """Each component min-max normalised over the candidates: (v - min) / (max - min),
    0.0 for every candidate when max == min (one candidate, or equal values)."""
    out: dict[str, dict[str, float]] = {cand: {} for cand in pool}
    for name in components:
        values = {}
        for cand, parts in pool.items():
            if name not in parts:
                raise ScoringError(f"candidate {cand!r} lacks the component {name!r}.")
            value = float(parts[name])
            if not math.isfinite(value):
                raise ScoringError(f"candidate {cand!r} has a non-finite {name!r}.")
            values[cand] = value
        lo, hi = min(values.values(), default=0.0), max(values.values(), default=0.0)
        for cand, value in values.items():
            out[cand][name] = (value - lo) / (hi - lo) if hi > lo else 0.0
    return out


def min_max_sum(
    pool: Mapping[str, Mapping[str, float]],
    components: tuple[str, ...],
    weights: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Per candidate, sum_c weights[c] * minmax(component c) over ``components`` (weights
    default to 1): the pool normalisation of ETran and NCTI."""
    normalised = min_max_pool(pool, components)
    return {cand: sum((1.0 if weights is None else weights[name]) * parts[name]
                      for name in components)
            for cand, parts in normalised.items()}


def etran_pool_normalize(
    pool: Mapping[str, Mapping[str, float]], weights: Mapping[str, float] | None = None
) -> dict[str, float]:
    """ETran over a pool: sum_c weights[c] * minmax(component c); weights default to 1."""
    return min_max_sum(pool, COMPONENTS, PAPER_WEIGHTS if weights is None else weights)


def _components(inputs: ScoreInputs) -> dict[str, float]:
    if inputs.features is None:
        raise ScoringError("ETran needs features.")
    return etran_components(inputs.features, inputs.labels, inputs.num_classes)


@hookimpl
def register_scorers(register: Callable[[Scorer], None]) -> None:
    """Register ETran (pool-relative)."""
    register(
        Scorer(
            name="etran",
            fn=_components,
            needs=frozenset({Need.FEATURES}),
            summary="Energy (in-distribution) score plus LDA classification score, each "
            "min-max normalised over the candidate pool.",
            reference="Gholami et al. 2023, ICCV, ETran (arXiv 2308.02027)",
            cost="O(N D) energy + SFDA's first stage",
            pool_normalize=etran_pool_normalize,
        )
    )
