"""Choosing zoosel's default selector on the benchmark, with leave-one-target-out checks.

The default selector (``zoosel.scorers.consensus``) averages a few component scores, each
standardised over the pool of candidates. Which components and which standardisation are
fitted here, from the benchmark's results alone (no model is run):

* search space: every combination of 1 to :data:`MAX_SIZE` scores of :data:`POOL` (cheap,
  feature-only scores: no gradients, no source head), each with either standardisation of
  :data:`zoosel.scorers.consensus.METHODS`;
* objective: the mean, over the (task, regime) targets it is fitted on (the regimes that
  are not ablations), of top-1 regret (points) + trials to best (fine-tunings), the two
  numbers a user pays; ties go to fewer components, then by name.

Leave-one-target-out (LOTO): for each task, the combination is chosen on the other tasks
only and ranks the held-out task (row ``loto:consensus``). That row, not the fit on every
task (row ``consensus``, in-sample), is the estimate of how the default does on a new
dataset. Row ``loto:single`` runs the same protocol restricted to one score, the fair
comparison for "pick the best single score on the benchmark".

Several builds (zoos) at once (:mod:`zoosel.bench.joint`): their tasks are prefixed with
the build's name, the folds hold a task *group* out of every build together (the same
dataset in two zoos is one group), and the objective averages each build's mean with
equal weight (``fit_loto(groups=..., builds=...)``). One build with the defaults is the
protocol above.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from zoosel.bench.metrics import (
    expected_best_of_top_k,
    expected_trials_to_best,
    regime_sort_key,
)
from zoosel.scorers import consensus

POOL: tuple[str, ...] = (
    "sfda", "logme", "hscore_reg", "knn", "lfc", "linft", "etran", "gbc", "ncti",
)
"""Components the search may use: feature-only scores costing about one extraction.
(``nleep`` is left out while the standard build's values predate its fix; the fit over
several builds, :mod:`zoosel.bench.joint`, takes it on the builds whose values are current;
``linear_probe`` costs 15 extractions; LEEP and NCE need a source head.)"""
MAX_SIZE = 3

FITTED = consensus.NAME
LOTO = "loto:consensus"
LOTO_SINGLE = "loto:single"
OBJECTIVE = "mean top-1 regret (points) + trials to best over the training targets"


@dataclass(frozen=True)
class Combination:
    """A candidate default: how components are standardised, and which."""

    method: str
    components: tuple[str, ...]

    @property
    def label(self) -> str:
        if len(self.components) == 1:  # either standardisation gives the same order
            return self.components[0]
        return f"{self.method}({' + '.join(self.components)})"

    def scores(self, entry: Mapping[str, Any]) -> dict[str, float]:
        """Its value for every member of one (task, regime) entry of the results."""
        raw = entry.get("scores") or {}
        pool: dict[str, dict[str, float]] = {m: {} for m in entry["accuracy"]}
        for name in self.components:
            for member, value in (raw.get(name) or {}).items():
                if member in pool and value is not None and math.isfinite(float(value)):
                    pool[member][name] = float(value)
        return consensus.combine(pool, self.method, self.components)


@dataclass(frozen=True)
class Weighted:
    """A weighted z-average: each component z-scored over the pool
    (:func:`zoosel.scorers.consensus.z_scores`), a member's value the weighted sum of its
    components' z-scores, a component it lacks counting as the pool mean (0); a member
    with none of them is left out. Weights are non-negative; only their ratios matter."""

    weights: tuple[tuple[str, float], ...]

    @property
    def method(self) -> str:
        return "z"

    @property
    def components(self) -> tuple[str, ...]:
        return tuple(name for name, w in self.weights if w > 0)

    @property
    def label(self) -> str:
        total = sum(w for _, w in self.weights if w > 0) or 1.0
        return "z(" + " + ".join(f"{w / total:.2f} {name}" for name, w in self.weights
                                 if w > 0) + ")"

    def scores(self, entry: Mapping[str, Any]) -> dict[str, float]:
        """Its value for every member of one (task, regime) entry of the results."""
        raw = entry.get("scores") or {}
        sums: dict[str, float] = {}
        for name, weight in self.weights:
            if weight <= 0:
                continue
            column = {m: float(v) for m, v in (raw.get(name) or {}).items()
                      if m in entry["accuracy"] and v is not None}
            for member, z in consensus.z_scores(column).items():
                sums[member] = sums.get(member, 0.0) + weight * z
        return sums


def combinations(available: Iterable[str], max_size: int = MAX_SIZE,
                 methods: Sequence[str] = consensus.METHODS) -> list[Combination]:
    """Every single score of ``available``, and every combination of 2..``max_size`` of
    them (in their order) with each standardisation ``methods``."""
    names = list(available)
    singles = [Combination(methods[0], (name,)) for name in names]
    return singles + [Combination(method, combo) for method in methods
                      for k in range(2, max_size + 1)
                      for combo in itertools.combinations(names, k)]


def loss(entry: Mapping[str, Any], score: Mapping[str, float], tol: float = 0.0) -> float:
    """Top-1 regret (points) + expected trials to best of ``score`` on one target."""
    acc = entry["accuracy"]
    regret = 100.0 * (max(acc.values()) - expected_best_of_top_k(acc, score, 1))
    return regret + expected_trials_to_best(acc, score, tol)


def loss_table(tasks: Mapping[str, Mapping[str, Mapping[str, Any]]], regimes: Sequence[str],
               candidates: Sequence[Combination], tol: float = 0.0,
               objective: Callable[[Mapping[str, Any], Mapping[str, float], float], float]
               = loss) -> dict[tuple[Combination, str, str], float]:
    """``objective`` (default :func:`loss`) of every candidate on every (task, regime) in
    ``regimes``; ``objective(entry, scores, tol)`` is lower for a better ranking."""
    table = {}
    for task in sorted(tasks):
        for regime in regimes:
            entry = tasks[task].get(regime)
            if entry is None:
                continue
            for candidate in candidates:
                table[(candidate, task, regime)] = objective(entry, candidate.scores(entry),
                                                             tol)
    return table


def build_mean(values: Iterable[tuple[str, float]],
               builds: Mapping[str, str] | None = None) -> float:
    """Mean of ``(task, value)`` pairs as :func:`choose` weighs them: averaged within each
    build (``builds`` maps a task to its build; without it one build), the builds' means
    averaged with equal weight. NaN when there is no value."""
    per_build: dict[str, list[float]] = {}
    for task, value in values:
        per_build.setdefault(builds.get(task, "") if builds else "", []).append(value)
    means = [sum(v) / len(v) for v in per_build.values()]
    return sum(means) / len(means) if means else math.nan


def choose(table: Mapping[tuple[Combination, str, str], float],
           candidates: Sequence[Combination], train: Iterable[str],
           builds: Mapping[str, str] | None = None) -> Combination:
    """The candidate with the lowest mean loss over the targets of the ``train`` tasks.

    ``builds`` maps a task to the benchmark build it comes from: the loss is then averaged
    within each build and the builds' means averaged with equal weight
    (:func:`build_mean`), so that a build with more (task, regime) pairs does not
    outweigh another. Without it (or with one build) every target counts once."""
    train = set(train)
    losses: dict[Combination, list[tuple[str, float]]] = {}
    for (candidate, task, _), value in table.items():
        if task in train:
            losses.setdefault(candidate, []).append((task, value))

    def key(candidate: Combination) -> tuple[float, int, str]:
        mean = build_mean(losses.get(candidate) or [], builds)
        return (round(mean, 9) if math.isfinite(mean) else math.inf,
                len(candidate.components), candidate.label)

    return min(candidates, key=key)


def fit_loto(tasks: Mapping[str, Mapping[str, Mapping[str, Any]]], regimes: Sequence[str],
             candidates: Sequence[Combination], tol: float = 0.0,
             groups: Mapping[str, str] | None = None, builds: Mapping[str, str] | None = None,
             ) -> tuple[dict[str, Combination], Combination]:
    """``({held-out group: combination chosen on the other groups}, fit on every task)``.

    ``groups`` maps each task to its fold (default: the task itself): every task of a
    group is held out together, so the same dataset seen through two builds never sits on
    both sides of a fold. ``builds`` weighs the objective per build (see :func:`choose`)."""
    table = loss_table(tasks, regimes, candidates, tol)
    names = sorted(tasks)
    group_of = {t: (groups or {}).get(t, t) for t in names}
    picks = {held: choose(table, candidates, [t for t in names if group_of[t] != held], builds)
             for held in sorted(set(group_of.values()))}
    return picks, choose(table, candidates, names, builds)


def combined_cost(cost: Mapping[str, float], components: Sequence[str]) -> float:
    """Seconds of a combination: its components' costs with the feature extraction,
    which each of them includes and the engine does once, counted once. The extraction is
    taken as the cheapest cost among :data:`POOL` and ``random`` (a hash of the features),
    which slightly underestimates the total by that score's own time."""
    values = {n: float(v) for n, v in cost.items() if v is not None and math.isfinite(v)}
    if any(c not in values for c in components):
        return math.nan
    extraction = min(values[n] for n in (*POOL, "random") if n in values)
    return sum(values[c] for c in components) - (len(components) - 1) * extraction


def add_combination_rows(results: dict[str, Any], tol: float = 0.0) -> dict[str, Any]:
    """Add ``loto:consensus``, ``loto:single`` and (unless measured) ``consensus`` to the
    scores of every (task, regime) of ``results``, in place; return the record of the fit
    (``results["combination"]``). Needs at least 3 tasks and a component of :data:`POOL`;
    otherwise returns ``{}`` and adds nothing."""
    tasks = results["tasks"]
    ablations = set(results.get("ablations") or ())
    regimes = sorted({r for t in tasks.values() for r in t if r not in ablations},
                     key=regime_sort_key)
    available = [n for n in POOL
                 if all(n in (e.get("scores") or {}) for t in tasks.values() for e in t.values())]
    if len(tasks) < 3 or not available:
        return {}
    every = combinations(available)
    picks, fitted = fit_loto(tasks, regimes, every, tol)
    singles = [c for c in every if len(c.components) == 1]
    single_picks, single_fit = fit_loto(tasks, regimes, singles, tol)
    shipped = Combination(consensus.METHOD, consensus.COMPONENTS)
    added = [LOTO, LOTO_SINGLE]
    measured = any(FITTED in (e.get("scores") or {}) for t in tasks.values() for e in t.values())
    if not measured and all(n in available for n in shipped.components):
        added.append(FITTED)
    for task in sorted(tasks):
        for entry in tasks[task].values():
            scores = entry.setdefault("scores", {})
            chosen = {LOTO: picks[task], LOTO_SINGLE: single_picks[task], FITTED: shipped}
            for name in added:
                scores[name] = chosen[name].scores(entry)
                if entry.get("cost") is not None:
                    entry["cost"][name] = combined_cost(entry["cost"], chosen[name].components)
    return {
        "pool": available, "max_size": MAX_SIZE, "methods": list(consensus.METHODS),
        "objective": OBJECTIVE, "regimes": regimes, "n_candidates": len(every),
        "picks": {t: c.label for t, c in picks.items()},
        "single_picks": {t: c.label for t, c in single_picks.items()},
        "fit_all": fitted.label, "single_fit_all": single_fit.label,
        "shipped": shipped.label, "shipped_matches_fit": shipped == fitted,
        "rows": added,
    }
