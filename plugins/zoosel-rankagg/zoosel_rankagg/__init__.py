"""``rankagg``: the mean rank-normalised position of a candidate over feature-only scores.

A pool-relative scorer (see :class:`zoosel.types.Scorer`): ``fn`` returns, for one
candidate, the value of every component score; ``pool_normalize`` turns each component
into positions in the pool (0 the worst candidate, 1 the best, ties averaged) and
returns each candidate's mean position.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from zoosel.hookspecs import hookimpl
from zoosel.scorers.consensus import combine, component_values
from zoosel.scorers.consensus import rank_positions as rank_positions  # part of this API
from zoosel.types import Need, ScoreInputs, Scorer

__version__ = "0.1.0"

COMPONENTS: tuple[str, ...] = ("lfc", "logme", "hscore", "gbc", "nleep", "sfda")
"""The component scores, used when registered as feature-only, non-pool-relative scorers."""

NAME = "rankagg"


def component_scorers(available: Mapping[str, Scorer]) -> dict[str, Scorer]:
    """The registered scorers among :data:`COMPONENTS` that need only features."""
    return {
        name: available[name] for name in COMPONENTS
        if name in available and available[name].needs == frozenset({Need.FEATURES})
        and available[name].pool_normalize is None
    }


def components(inputs: ScoreInputs) -> dict[str, float]:
    """Every component score of one candidate (finite values only)."""
    import zoosel

    return component_values(inputs, component_scorers(zoosel.list_scorers()), NAME)


def aggregate(pool: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """``{candidate: mean position over its components}`` for ``{candidate: components}``."""
    return combine(pool, "rank")


@hookimpl
def register_scorers(register: Callable[[Scorer], None]) -> None:
    """Register ``rankagg``."""
    register(Scorer(
        name=NAME,
        fn=components,
        needs=frozenset({Need.FEATURES}),
        summary="Mean rank-normalised position in the pool over feature-only scores "
                f"({', '.join(COMPONENTS[:2])}, and others when registered).",
        reference="zoosel-rankagg",
        cost="the sum of its components'",
        pool_normalize=aggregate,
    ))
