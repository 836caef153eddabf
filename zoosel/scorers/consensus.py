"""``consensus``: zoosel's default ranking, the mean standardised value of a few
complementary feature-only scores over the pool of candidates.

Definition. For each component score s (:data:`COMPONENTS`) and each candidate m of the
pool, the component is standardised over the candidates that have a finite value::

    z_s(m) = (s(m) - mean_pool(s)) / std_pool(s)        (population std; 0 if std is 0)

and ``consensus(m)`` is the mean of ``z_s(m)`` over the components m has. With
:data:`METHOD` ``"rank"`` the standardisation is the rank position in [0, 1] instead
(0 the worst candidate, 1 the best, ties averaged). Higher is better; the value is
pool-relative (it says where a model stands among these candidates).

Which components and which standardisation were chosen by the benchmark, not by hand:
``zoosel bench fit`` searches every combination of one to three cheap feature-only
scores with either standardisation and keeps the one with the lowest mean top-1 regret +
trials to best over the targets of every committed benchmark build (the standard zoo and
the three-family ``diverse`` zoo, each build weighted equally); it reports that search
with leave-one-task-out cross-validation (each held-out task, in every build at once, is
ranked by the combination chosen on the other tasks), which is the honest estimate of
what to expect on new data (``zoosel.bench.combination``, ``zoosel.bench.joint``). The
constants below are the fit on every task of both builds
(``benchmarks/results/selection-joint``: 8 standard and 32 diverse tasks); 23 of its 32
folds choose the same.

Cost: one feature extraction and the three components' own time (no gradients, no
source head).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from zoosel.errors import ScoringError, UsageError
from zoosel.hookspecs import hookimpl
from zoosel.types import Need, ScoreInputs, Scorer

NAME = "consensus"
COMPONENTS: tuple[str, ...] = ("sfda", "logme", "linft")
"""The component scores (fitted on the committed benchmark, see the module docstring)."""
METHOD = "z"
"""How each component is standardised over the pool: ``z`` (z-score) or ``rank``."""
METHODS: tuple[str, ...] = ("z", "rank")


def _finite(values: Mapping[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()
            if v is not None and math.isfinite(float(v))}


def rank_positions(values: Mapping[str, float]) -> dict[str, float]:
    """Positions in [0, 1] of the finite values (0 the lowest, 1 the highest, ties averaged;
    a single value gets 1)."""
    from scipy.stats import rankdata

    kept = _finite(values)
    if len(kept) == 1:
        return dict.fromkeys(kept, 1.0)
    names = list(kept)
    ranks = rankdata([kept[n] for n in names])  # 1..n, ties averaged
    return {n: float((r - 1) / (len(names) - 1)) for n, r in zip(names, ranks, strict=True)}


def z_scores(values: Mapping[str, float]) -> dict[str, float]:
    """Z-scores of the finite values over themselves (population std; all 0 when the
    values are equal)."""
    kept = _finite(values)
    if not kept:
        return {}
    x = np.array(list(kept.values()), dtype=np.float64)
    std = float(x.std())
    if std == 0.0 or not math.isfinite(std):
        return dict.fromkeys(kept, 0.0)
    mean = float(x.mean())
    return {n: (v - mean) / std for n, v in kept.items()}


def standardise(values: Mapping[str, float], method: str) -> dict[str, float]:
    """One component over the pool, by ``method`` (``z`` or ``rank``)."""
    if method == "z":
        return z_scores(values)
    if method == "rank":
        return rank_positions(values)
    raise UsageError(f"unknown standardisation {method!r}; known: {', '.join(METHODS)}.")


def combine(pool: Mapping[str, Mapping[str, float]], method: str = METHOD,
            components: tuple[str, ...] | None = None) -> dict[str, float]:
    """``{candidate: mean standardised component}`` for ``{candidate: {component: value}}``.

    ``components`` limits the components used (default: every one present). A candidate
    missing a component (or with a non-finite value) is averaged over the others; one with
    none is left out.
    """
    names = sorted({c for parts in pool.values() for c in parts}
                   if components is None else set(components))
    sums = dict.fromkeys(pool, 0.0)
    counts = dict.fromkeys(pool, 0)
    for name in names:
        column = {m: parts[name] for m, parts in pool.items() if name in parts}
        for m, value in standardise(column, method).items():
            sums[m] += value
            counts[m] += 1
    return {m: sums[m] / counts[m] for m in pool if counts[m]}


def component_values(inputs: ScoreInputs, scorers: Mapping[str, Scorer | None],
                     owner: str) -> dict[str, float]:
    """The finite value of every scorer in ``scorers`` (None: not registered) on one
    candidate's inputs; raises :class:`ScoringError`, naming ``owner``, when none has one."""
    values: dict[str, float] = {}
    problems: list[str] = []
    given = _given(inputs)
    for name, scorer in scorers.items():
        if scorer is None:
            problems.append(f"{name}: not registered")
            continue
        # A value the engine already has is reused only when this call could have computed
        # it: the component reads nothing these inputs lack.
        shared = inputs.computed if inputs.computed is not None and scorer.needs <= given \
            else {}
        try:
            value = shared[name] if name in shared else float(scorer.fn(inputs))  # type: ignore[arg-type]
        except ScoringError as exc:
            problems.append(f"{name}: {exc}")
            continue
        if math.isfinite(value) and inputs.computed is shared:
            shared.setdefault(name, value)
        if math.isfinite(value):
            values[name] = value
        else:
            problems.append(f"{name}: not finite")
    if not values:
        raise ScoringError(f"{owner}: no component score could be computed "
                           f"({'; '.join(problems) or 'none registered'}).")
    return values


def _given(inputs: ScoreInputs) -> frozenset[Need]:
    """The needs these inputs satisfy (each need names its field of :class:`ScoreInputs`)."""
    return frozenset(n for n in Need if getattr(inputs, n.value) is not None)


def components(inputs: ScoreInputs) -> dict[str, float]:
    """The value of every component score on one candidate's features."""
    from zoosel.api import list_scorers

    available = list_scorers()
    return component_values(inputs, {name: available.get(name) for name in COMPONENTS}, NAME)


def aggregate(pool: dict[str, dict[str, float]]) -> dict[str, float]:
    """The pool step of :data:`NAME` (see :func:`combine`)."""
    return combine(pool, METHOD, COMPONENTS)


@hookimpl
def register_scorers(register: Callable[[Scorer], None]) -> None:
    """Register ``consensus``."""
    register(Scorer(
        name=NAME,
        fn=components,
        needs=frozenset({Need.FEATURES}),
        summary=f"zoosel's default: mean {'z-score' if METHOD == 'z' else 'rank position'} "
                f"over the candidates of {', '.join(COMPONENTS)} (chosen on the benchmark "
                "builds by leave-one-task-out cross-validation).",
        reference="zoosel benchmark (benchmarks/results/selection-joint/report.md)",
        cost="one extraction + the components' own time",
        pool_normalize=aggregate,
        # 3: z(logme + linft + gbc) (2: the same with linft version 1);
        # 1: z(sfda + logme + hscore_reg)
        version="4",
    ))
