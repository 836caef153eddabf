"""Fitting the default selector on several benchmark builds at once (``zoosel bench fit``).

Each build (a zoo with its targets, one ``results.json``) adds its (task, regime) pairs to
one search (:mod:`zoosel.bench.combination`):

* targets are named ``build/task``; the leave-one-out folds hold a *task* out of every
  build together, so the same dataset seen through two zoos is never on both sides of a
  fold;
* the objective (top-1 regret + trials to best) is averaged within each build, and the
  builds' means with **equal weight**. A build's number of pairs says how many targets
  and regimes it was run with, not how much its zoo counts: weighing by pairs would let
  the build with more regimes (or, later, more targets) choose the default for every
  zoo. Within a build each (task, regime) counts once;
* a score can be masked on a build (``exclude``): it is removed from that build's pairs.
  A score is masked so without asking when it is *stale*: the scorer version the results
  record for it (:mod:`zoosel.bench.results_file`) is not the installed scorer's, so its
  values are another computation's (results that record no versions keep every score).
  A combination that uses a masked score is then judged on that build by its other
  components (as ``consensus`` ranks when a component fails), and a single masked score
  is not a candidate. A pool score missing from some pair of a build is masked on that
  build the same way.

Rows, per build and for all builds together (a task's metric averaged over the builds
that have it), per regime: ``loto:consensus`` (each task ranked by the combination chosen
on the other tasks of every build), ``fit:consensus`` (the fit on every pair,
in-sample), ``loto:single`` (the same protocol restricted to single scores),
``blind:static`` (:mod:`zoosel.bench.baselines`), the shipped ``consensus`` and every
measured score, on mean top-1 regret and trials to best, with the margins of
``loto:consensus`` over each (:func:`zoosel.bench.metrics.default_verdict`, a paired
bootstrap over tasks).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoosel.bench import baselines, combination
from zoosel.bench.combination import Combination
from zoosel.bench.metrics import (
    aggregate,
    default_verdict,
    regime_sort_key,
    scorer_metrics,
)
from zoosel.bench.results_file import check_results, check_versions, load_results
from zoosel.errors import UsageError
from zoosel.scorers import consensus
from zoosel.types import Scorer

FEATURE_POOL: tuple[str, ...] = (*combination.POOL, "nleep")
"""The single-build pool and NLEEP (a Gaussian mixture on the features), which the
single-build fit leaves out while the standard build's values predate its fix (stale
there, so masked on that build)."""
GRADIENT_POOL: tuple[str, ...] = (*FEATURE_POOL, "linft_grad")
"""With ``linft_grad``, which needs gradient sketches (about 2.3-2.7x one extraction on
the committed builds): an option, not the default pool."""
POOLS: dict[str, tuple[str, ...]] = {"features": FEATURE_POOL, "features+grad": GRADIENT_POOL}
DEFAULT_POOLS: tuple[str, ...] = ("features", "features+grad")

FIT = "fit:consensus"
SHIPPED = consensus.NAME
METRICS: tuple[str, ...] = ("top1_regret", "trials_to_best")
ALL = "all builds"
WEIGHTING = ("each build's mean over its (task, regime) pairs, builds weighted equally "
             "(a build with more pairs or regimes does not outweigh another)")


@dataclass(frozen=True)
class Build:
    """One benchmark build's ground truth and measured scores."""

    name: str
    tasks: dict[str, dict[str, dict[str, Any]]]
    """``tasks[task][regime]`` (regimes that are not ablations), measured scores only."""
    generalist: str = ""
    excluded: tuple[str, ...] = ()
    """Scores left out as asked (``--exclude``)."""
    source: str = ""
    regimes: list[str] = field(default_factory=list)
    stale: dict[str, str] = field(default_factory=dict)
    """Scores left out because the results record another version than the installed
    scorer's: ``{score: "results have version 1, installed 2"}``."""
    versions_recorded: bool = False
    """Whether the results record scorer versions (stale scores can be told apart)."""
    versions_note: str = "versions not recorded"
    """What the scorer versions say about this build, in one line."""


def build_from_results(results: Mapping[str, Any], name: str,
                       exclude: Sequence[str] = (), source: str = "",
                       installed: Mapping[str, Scorer] | None = None) -> Build:
    """A :class:`Build` from a results dict (written or not): the rows an evaluation
    derived, the ablation regimes, the ``exclude`` scores and the stale ones (their
    recorded version is not the ``installed`` scorer's; default: the registered
    scorers) are left out."""
    results = check_results(results, f"build {name!r}")
    versions = check_versions(results, installed)
    derived = set(results.get("derived_scores") or ())
    ablations = set(results.get("ablations") or ())
    dropped = derived | set(exclude) | set(versions.stale)
    tasks: dict[str, dict[str, dict[str, Any]]] = {}
    for task, regimes in results["tasks"].items():
        for regime, entry in regimes.items():
            if regime in ablations:
                continue
            scores = {s: {m: float(x) for m, x in v.items()  # null (NaN) as missing
                          if isinstance(x, (int, float)) and not isinstance(x, bool)}
                      for s, v in (entry.get("scores") or {}).items()
                      if s not in dropped and isinstance(v, Mapping)}
            tasks.setdefault(str(task), {})[str(regime)] = {
                "accuracy": dict(entry["accuracy"]), "scores": scores,
                "cost": {s: v for s, v in (entry.get("cost") or {}).items() if s in scores}}
    if not tasks:
        raise UsageError(f"build {name!r} has no (task, regime) pair.")
    present = {s for regimes in results["tasks"].values() for e in regimes.values()
               for s in (e.get("scores") or {})}
    unknown = sorted(set(exclude) - present)
    if unknown:
        raise UsageError(f"build {name!r} has no score {', '.join(unknown)} to leave out; "
                         f"its scores: {', '.join(sorted(present - derived))}.")
    regimes = sorted({r for t in tasks.values() for r in t}, key=regime_sort_key)
    return Build(name=name, tasks=tasks, generalist=str(results.get("generalist") or ""),
                 excluded=tuple(sorted(set(exclude))), source=source, regimes=regimes,
                 stale=versions.reasons(), versions_recorded=versions.recorded,
                 versions_note=versions.summary())


def build_name(results: Mapping[str, Any], path: Path) -> str:
    """The default name of a build: its profile, else the folder of its results file."""
    return str((results.get("meta") or {}).get("profile") or "") or Path(path).parent.name


def load_builds(paths: Sequence[tuple[str | None, Path]],
                exclude: Mapping[str, Sequence[str]] | None = None) -> list[Build]:
    """The builds of written ``results.json`` files, each ``(name or None, path)``
    (default name: :func:`build_name`), with ``exclude[name]`` scores left out."""
    exclude = dict(exclude or {})
    builds = []
    for given, path in paths:
        data = load_results(Path(path))
        name = given or build_name(data, Path(path))
        builds.append(build_from_results(data, name, exclude.pop(name, ()), source=str(path)))
    if exclude:
        raise UsageError(f"no build named {', '.join(sorted(exclude))} to leave scores out "
                         f"of; the builds: {', '.join(b.name for b in builds)}.")
    return builds


def resolve_pool(spec: str) -> tuple[str, tuple[str, ...]]:
    """``(label, scores)`` of a pool given by name (:data:`POOLS`) or as scores separated
    by commas."""
    if spec in POOLS:
        return spec, POOLS[spec]
    names = tuple(dict.fromkeys(s.strip() for s in spec.split(",") if s.strip()))
    if "," not in spec and len(names) == 1:
        raise UsageError(f"unknown pool {spec!r}: give one of {', '.join(POOLS)} or scores "
                         "separated by commas (e.g. sfda,logme,knn).")
    if not names:
        raise UsageError("an empty pool: give a pool name or scores separated by commas.")
    return ",".join(names), names


def _usable(build: Build, score: str) -> bool:
    return all(score in e["scores"] for regimes in build.tasks.values()
               for e in regimes.values())


def _merged(builds: Sequence[Build], masked: Mapping[str, set[str]]
            ) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, str], dict[str, str]]:
    """The targets of every build, named ``build/task`` (masked scores removed), with each
    target's group (its task) and build."""
    tasks, groups, of_build = {}, {}, {}
    for build in builds:
        for task, regimes in build.tasks.items():
            name = f"{build.name}/{task}"
            tasks[name] = {r: {**e, "scores": {s: v for s, v in e["scores"].items()
                                               if s not in masked[build.name]}}
                           for r, e in regimes.items()}
            groups[name], of_build[name] = task, build.name
    return tasks, groups, of_build


@dataclass(frozen=True)
class Targets:
    """Every build's (task, regime) pairs merged for one pool (see :func:`merge`)."""

    available: list[str]
    """Scores of the pool usable (in every pair) on some build."""
    masked: dict[str, set[str]]
    """``{build: scores of available masked there}``."""
    tasks: dict[str, dict[str, dict[str, Any]]]
    """``tasks["build/task"][regime]``, masked scores removed."""
    groups: dict[str, str]
    """``{"build/task": task}``: the fold of each target."""
    builds: dict[str, str]
    """``{"build/task": build}``."""
    regimes: list[str]

    def candidates(self, max_size: int = combination.MAX_SIZE,
                   methods: Sequence[str] = consensus.METHODS) -> list[Combination]:
        """:func:`combination.combinations` of the available scores, less those that use
        only scores masked on some build (they could not rank its pairs)."""
        return [c for c in combination.combinations(self.available, max_size, methods)
                if all(any(n not in m for n in c.components) for m in self.masked.values())]


def merge(builds: Sequence[Build], pool: Sequence[str]) -> Targets:
    """The builds' pairs, folds and masks for a fit over ``pool``."""
    available = [s for s in pool if any(_usable(b, s) for b in builds)]
    masked = {b.name: {s for s in available if not _usable(b, s)} for b in builds}
    if not available:
        raise UsageError(f"no score of the pool ({', '.join(pool)}) is in every pair of "
                         "any build.")
    groups_all = {t for b in builds for t in b.tasks}
    if len(groups_all) < 3:
        raise UsageError(f"the builds have {len(groups_all)} task(s); leaving one out needs "
                         "at least 3.")
    tasks, groups, of_build = _merged(builds, masked)
    regimes = sorted({r for b in builds for r in b.regimes}, key=regime_sort_key)
    return Targets(available, masked, tasks, groups, of_build, regimes)


def fit_pool(builds: Sequence[Build], pool: Sequence[str], tol: float = 0.0
             ) -> dict[str, Any]:
    """The joint leave-one-task-out fit over ``pool``: ``picks`` / ``single_picks``
    ({task: Combination}), ``fit_all`` / ``single_fit_all``, ``available`` (scores usable
    on some build), ``masked`` ({build: scores masked there}) and ``n_candidates``."""
    t = merge(builds, pool)
    candidates = t.candidates()
    picks, fitted = combination.fit_loto(t.tasks, t.regimes, candidates, tol, t.groups,
                                         t.builds)
    singles = [c for c in candidates if len(c.components) == 1]
    single_picks, single_fit = combination.fit_loto(t.tasks, t.regimes, singles, tol,
                                                    t.groups, t.builds)
    return {"available": t.available, "masked": {b: sorted(m) for b, m in t.masked.items()},
            "n_candidates": len(candidates), "picks": picks, "single_picks": single_picks,
            "fit_all": fitted, "single_fit_all": single_fit}


def reference_rows(build: Build, masked: set[str]
                   ) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """``scores[task][regime][row]`` of one build without any fit: its measured scores
    (less ``masked``), ``blind:static`` and the shipped default (recomputed when not
    measured)."""
    shipped = Combination(consensus.METHOD, consensus.COMPONENTS)
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for task, regimes in build.tasks.items():
        for regime, entry in regimes.items():
            view = {**entry, "scores": {s: v for s, v in entry["scores"].items()
                                        if s not in masked}}
            rows = dict(view["scores"])
            rows[baselines.STATIC] = baselines.static_scores(build.tasks, task, regime)
            if SHIPPED not in rows and all(_usable(build, c) for c in shipped.components):
                rows[SHIPPED] = shipped.scores(view)
            out.setdefault(task, {})[regime] = rows
    return out


def _rows(build: Build, fit: Mapping[str, Any], masked: set[str]
          ) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """:func:`reference_rows` and the fit's three rows."""
    out = reference_rows(build, masked)
    for task, regimes in out.items():
        for regime, rows in regimes.items():
            entry = build.tasks[task][regime]
            view = {**entry, "scores": {s: v for s, v in entry["scores"].items()
                                        if s not in masked}}
            rows[combination.LOTO] = fit["picks"][task].scores(view)
            rows[FIT] = fit["fit_all"].scores(view)
            rows[combination.LOTO_SINGLE] = fit["single_picks"][task].scores(view)
    return out


def pooled_metrics(builds: Sequence[Build],
                   rows: Mapping[str, Mapping[str, Mapping[str, Mapping[str, Any]]]],
                   tol: float = 0.0) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """``per_task[task][regime][row][metric]`` over every build together from
    ``rows[build][task][regime][row]`` (scores): each build's top-1 regret and trials to
    best, a task's value the mean over the builds that have it (as the ``all builds``
    scope of :func:`fit_builds`)."""
    return _pooled({b.name: _per_task(b, rows[b.name], tol) for b in builds})


def _per_task(build: Build, rows: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]],
              tol: float) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """``per_task[task][regime][row]``: top-1 regret and trials to best of every row."""
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for task, regimes in rows.items():
        for regime, per in regimes.items():
            accuracy = build.tasks[task][regime]["accuracy"]
            out.setdefault(task, {})[regime] = {
                name: {m: v for m, v in scorer_metrics(accuracy, score, None, tol=tol).items()
                       if m in METRICS} for name, score in per.items()}
    return out


def _pooled(per_build: Mapping[str, Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]]]
            ) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """Every task's metrics averaged over the builds that have it, for the rows every one
    of those builds has."""
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    keys = {(t, r) for per in per_build.values() for t, regs in per.items() for r in regs}
    for task, regime in sorted(keys):
        cells = [per[task][regime] for per in per_build.values()
                 if regime in per.get(task, {})]
        names = set.intersection(*(set(c) for c in cells))
        out.setdefault(task, {})[regime] = {
            n: {m: _mean([c[n].get(m) for c in cells]) for m in METRICS} for n in names}
    return out


def _mean(values: Sequence[Any]) -> float:
    x = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(x) / len(x) if len(x) == len(values) and x else math.nan


def _cost(build: Build, components: Sequence[str]) -> float:
    """Mean seconds over the build's pairs (:func:`combination.combined_cost`)."""
    values = [combination.combined_cost(e["cost"], components)
              for regimes in build.tasks.values() for e in regimes.values() if e.get("cost")]
    values = [v for v in values if math.isfinite(v)]
    return sum(values) / len(values) if values else math.nan


def fit_builds(builds: Sequence[Build], pools: Sequence[str] = DEFAULT_POOLS, *,
               tol: float = 0.0, n_resamples: int = 2000, seed: int = 0,
               level: float = 0.95) -> dict[str, Any]:
    """Fit the default on every build at once, for each pool of ``pools`` (names of
    :data:`POOLS` or comma-separated scores), and evaluate its leave-one-task-out rows
    per build and over all builds. Returns a JSON-able record (see :func:`markdown`)."""
    if not builds:
        raise UsageError("no build to fit on: give at least one results.json.")
    names = [b.name for b in builds]
    if len(set(names)) < len(names):
        raise UsageError(f"two builds share a name ({', '.join(names)}): name them "
                         "(NAME=PATH).")
    kw = {"n_resamples": n_resamples, "seed": seed, "level": level}
    shipped = Combination(consensus.METHOD, consensus.COMPONENTS)
    record: dict[str, Any] = {
        "builds": [{"name": b.name, "source": b.source, "tasks": sorted(b.tasks),
                    "regimes": b.regimes, "pairs": sum(len(r) for r in b.tasks.values()),
                    "excluded": list(b.excluded), "stale": dict(b.stale),
                    "versions_recorded": b.versions_recorded, "generalist": b.generalist}
                   for b in builds],
        "objective": combination.OBJECTIVE, "weighting": WEIGHTING,
        "max_size": combination.MAX_SIZE, "methods": list(consensus.METHODS),
        "shipped": shipped.label, "metrics": list(METRICS),
        "settings": {**kw, "tol": tol}, "pools": {},
    }
    for spec in pools:
        label, pool = resolve_pool(spec)
        fit = fit_pool(builds, pool, tol)
        per_build = {}
        scopes: dict[str, Any] = {}
        for build in builds:
            masked = set(fit["masked"][build.name])
            per = _per_task(build, _rows(build, fit, masked), tol)
            per_build[build.name] = per
            scopes[build.name] = _scope(per, build.regimes, kw)
            scopes[build.name]["cost"] = {
                "fit_all": _cost(build, fit["fit_all"].components),
                "single_fit_all": _cost(build, fit["single_fit_all"].components),
                "shipped": _cost(build, shipped.components)}
        if len(builds) > 1:
            pooled = _pooled(per_build)
            regimes = sorted({r for b in builds for r in b.regimes}, key=regime_sort_key)
            scopes[ALL] = _scope(pooled, regimes, kw)
        record["pools"][label] = {
            "pool": list(pool), "available": fit["available"], "masked": fit["masked"],
            "n_candidates": fit["n_candidates"],
            "fit_all": fit["fit_all"].label, "single_fit_all": fit["single_fit_all"].label,
            "fit_components": list(fit["fit_all"].components),
            "fit_method": fit["fit_all"].method,
            "picks": {t: c.label for t, c in fit["picks"].items()},
            "single_picks": {t: c.label for t, c in fit["single_picks"].items()},
            "scopes": scopes,
        }
    return record


def _scope(per_task: Mapping[str, Any], regimes: Sequence[str], kw: Mapping[str, Any]
           ) -> dict[str, Any]:
    """Means and margins of one build (or of all builds) over its tasks: the margins of
    ``loto:consensus`` over every row but the in-sample fit."""
    names = {n for regs in per_task.values() for cells in regs.values() for n in cells}
    comparators = sorted(names - {combination.LOTO, FIT})
    return {
        "regimes": list(regimes),
        "n_tasks": len(per_task),
        "aggregates": aggregate(per_task, metrics=METRICS, **kw),
        "verdict": default_verdict(per_task, combination.LOTO, comparators,
                                   regimes=regimes, metrics=METRICS, **kw),
    }


# --------------------------------------------------------------------------- report


def _ci(cell: Mapping[str, Any] | None) -> str:
    from zoosel.bench.report import _fmt_ci

    return _fmt_ci(cell, "top1_regret")


def _row_order(names: Sequence[str]) -> list[str]:
    first = [combination.LOTO, FIT, combination.LOTO_SINGLE, baselines.STATIC, SHIPPED]
    return [n for n in first if n in names] + sorted(set(names) - set(first))


def _scope_lines(title: str, scope: Mapping[str, Any]) -> list[str]:
    from zoosel.bench.report import _table

    verdict = scope["verdict"]
    lines = [f"### {title}", ""]
    for regime in scope["regimes"]:
        agg = scope["aggregates"].get(regime, {})
        margins = verdict["margins"].get(regime, {})
        rows = []
        for name in _row_order(list(agg)):
            cells = agg[name]
            rows.append([f"`{name}`", _ci(cells.get("top1_regret")),
                         _ci(cells.get("trials_to_best")),
                         _ci(margins.get("top1_regret", {}).get(name)) if name in
                         margins.get("top1_regret", {}) else "",
                         _ci(margins.get("trials_to_best", {}).get(name)) if name in
                         margins.get("trials_to_best", {}) else ""])
        lines += [f"{regime} ({scope['n_tasks']} tasks):", "",
                  *_table(["Row", "top-1 regret (points)", "trials to best",
                           "margin of loto:consensus, regret", "margin, trials"], rows), ""]
    beaten = verdict.get("not_beaten") or []
    lines += [
        f"`loto:consensus` beats every other row on the mean: "
        f"**{'yes' if verdict['beats_all'] else 'no'}**; with every interval above 0: "
        f"**{'yes' if verdict['beats_all_clearly'] else 'no'}**."
        + (f" Not beaten on the mean: {', '.join(beaten)}." if beaten else ""), ""]
    return lines


KEY_ROWS: tuple[str, ...] = (baselines.STATIC, combination.LOTO_SINGLE, SHIPPED)
"""The rows every summary compares ``loto:consensus`` with, besides the best single score."""
_NOT_SINGLE = {combination.LOTO, FIT, combination.LOTO_SINGLE, SHIPPED, *baselines.BLIND}


def best_single(scope: Mapping[str, Any], regime: str, metric: str) -> str | None:
    """The measured score with the lowest mean ``metric`` in ``regime`` of a scope."""
    from zoosel.bench.report import _num

    agg = scope["aggregates"].get(regime, {})
    means = {n: _num(c.get(metric, {}).get("mean")) for n, c in agg.items()
             if n not in _NOT_SINGLE}
    finite = sorted((v, n) for n, v in means.items() if math.isfinite(v))
    return finite[0][1] if finite else None


def _key_margins(pools: Mapping[str, Any]) -> list[str]:
    from zoosel.bench.report import LABELS, _table

    rows = []
    for label, fit in pools.items():
        for scope_name, scope in fit["scopes"].items():
            margins = scope["verdict"]["margins"]
            for regime in scope["regimes"]:
                for metric in METRICS:
                    cells = margins.get(regime, {}).get(metric, {})
                    best = best_single(scope, regime, metric)
                    rows.append([label, scope_name, regime, LABELS[metric],
                                 *(_ci(cells.get(n)) for n in KEY_ROWS),
                                 f"`{best}`: {_ci(cells.get(best))}" if best else "n/a"])
    return [
        "Margin of `loto:consensus` (positive: it is better) over the dataset-blind "
        "ranking, the same protocol restricted to single scores, the shipped default and "
        "the single score with the best mean in that scope and regime (chosen after the "
        "fact, so the hardest comparison):", "",
        *_table(["Pool", "Scope", "Regime", "Metric", *(f"vs `{n}`" for n in KEY_ROWS),
                 "vs the best single score"], rows), ""]


def _left_out(build: Mapping[str, Any]) -> str:
    """The scores left out of a build's record: excluded, then stale with the reason."""
    stale = build.get("stale") or {}
    parts = [n for n in build["excluded"] if n not in stale]
    parts += [f"{n} ({reason})" for n, reason in stale.items()]
    return "; ".join(parts) or "none"


def markdown(record: Mapping[str, Any], command: str = "") -> str:
    """The report of :func:`fit_builds` (markdown)."""
    from zoosel.bench.report import _fmt, _table

    s = record["settings"]
    lines = ["# Default selector fitted on several benchmark builds", ""]
    if command:
        lines += ["Command:", "", f"    {command}", ""]
    lines += _table(["Build", "results", "tasks", "regimes", "pairs", "scores left out",
                     "scorer versions"],
                    [[b["name"], f"`{b['source']}`" if b["source"] else "",
                      str(len(b["tasks"])), ", ".join(b["regimes"]), str(b["pairs"]),
                      _left_out(b), "recorded" if b.get("versions_recorded") else
                      "not recorded"] for b in record["builds"]])
    lines += [
        "",
        "A score whose version recorded in a build's results differs from the installed "
        "scorer's is stale: it is left out of that build (as `--exclude` does). A build "
        "without recorded versions keeps every score but those excluded.",
        "",
        f"Search: every single score of the pool and every z- or rank-average of 2 to "
        f"{record['max_size']} of them. Objective: {record['objective']}; "
        f"{record['weighting']}. Folds: each task is held out of every build at once "
        "(its pairs in every build are ranked by the combination chosen on the other "
        "tasks). Margins: `loto:consensus` minus the row (positive: `loto:consensus` is "
        f"better), mean [bootstrap {s['level']:.0%} interval] over tasks, resampled in "
        f"pairs ({s['n_resamples']} resamples, seed {s['seed']}). Over all builds, a "
        "task's value is the mean over the builds that have it. Shipped default "
        f"(row `{SHIPPED}`): `{record['shipped']}`, fitted on the committed standard build "
        "(in-sample on that build). `fit:consensus` is the fit on every pair (in-sample "
        "everywhere), not compared.",
        "",
    ]
    pools = record["pools"]
    summary = []
    for label, fit in pools.items():
        for scope_name, scope in fit["scopes"].items():
            for regime in scope["regimes"]:
                cells = scope["aggregates"].get(regime, {}).get(combination.LOTO, {})
                summary.append([label, scope_name, regime, _ci(cells.get("top1_regret")),
                                _ci(cells.get("trials_to_best")),
                                "yes" if scope["verdict"]["beats_all"] else "no",
                                "yes" if scope["verdict"]["beats_all_clearly"] else "no"])
    lines += ["## Summary", ""]
    lines += _table(["Pool", "Fit on every pair", "Single score"],
                    [[label, f"`{fit['fit_all']}`", f"`{fit['single_fit_all']}`"]
                     for label, fit in pools.items()])
    lines += ["", *_table(["Pool", "Scope", "Regime", "loto:consensus regret",
                           "loto:consensus trials", "beats all (mean)",
                           "beats all (intervals)"], summary), ""]
    lines += _key_margins(pools)
    groups = sorted({g for fit in pools.values() for g in fit["picks"]})
    header = ["Held-out task"]
    for label in pools:
        header += [f"combination ({label})", f"single ({label})"]
    rows = [[g, *(f"`{fit[k].get(g, '')}`" for fit in pools.values()
                  for k in ("picks", "single_picks"))] for g in groups]
    lines += ["## Picks of each fold", "", *_table(header, rows), ""]
    for label, fit in pools.items():
        masked = [f"{b}: {', '.join(m)}" for b, m in fit["masked"].items() if m]
        lines += [
            f"## Pool `{label}`", "",
            f"Scores: {', '.join(f'`{p}`' for p in fit['available'])} "
            f"({fit['n_candidates']} candidates)"
            + (f"; masked (left out of that build's pairs): {'; '.join(masked)}"
               if masked else "") + ".",
            f"Fit on every pair: `{fit['fit_all']}`; single score: "
            f"`{fit['single_fit_all']}`.", ""]
        costs = [[b, _fmt(c["cost"]["fit_all"]), _fmt(c["cost"]["single_fit_all"]),
                  _fmt(c["cost"]["shipped"])] for b, c in fit["scopes"].items() if "cost" in c]
        lines += ["Scoring seconds for the zoo, mean over the build's pairs (extraction "
                  "counted once):", "",
                  *_table(["Build", f"`{fit['fit_all']}`", f"`{fit['single_fit_all']}`",
                           f"shipped `{record['shipped']}`"], costs), ""]
        for scope_name, scope in fit["scopes"].items():
            lines += _scope_lines(f"{label}: {scope_name}", scope)
    return "\n".join(lines).rstrip() + "\n"


def write(record: Mapping[str, Any], out_dir: Path, command: str = "") -> dict[str, Path]:
    """Write ``report.md`` and ``fit.json`` (the record, NaN as null) under ``out_dir``."""
    from zoosel.bench.report import _jsonable

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = _jsonable({**record, "command": command} if command else record)
    report = out_dir / "report.md"
    report.write_text(markdown(data, command), encoding="utf-8")
    path = out_dir / "fit.json"
    path.write_text(json.dumps(data, indent=1, sort_keys=True, allow_nan=False) + "\n",
                    encoding="utf-8")
    return {"fit.json": path, "report.md": report}
