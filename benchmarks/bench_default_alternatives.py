"""Ways to fit zoosel's default selector, compared held out on the committed builds.

``zoosel bench fit`` chooses the default (``zoosel.scorers.consensus``) by an exhaustive
search of 1-3 component z- or rank-averages of the feature-only pool, minimising mean
top-1 regret + trials to best over every (task, regime) pair, each build weighted equally.
This benchmark runs other fitting protocols under the SAME leave-one-task-out folds (a
task held out of every build at once) and the same build weighting, and reports each
protocol's held-out top-1 regret and trials to best per regime, pooled over the builds
(a task's value the mean over the builds that have it), with bootstrap intervals over
tasks, whether it beats every single score and ``blind:static`` on the mean at 5- and
20-shot, and its scoring cost. Protocols:

* ``search-3`` (the shipped protocol), ``search-4`` (up to 4 components), ``per-regime``
  (the search run separately on each regime's pairs, each regime ranked by its own pick),
  ``single`` (the search restricted to one score: ``loto:single``);
* ``top3-objective`` and ``wtau-objective``: the shipped search with a smoother surrogate
  objective (top-3 regret + trials to best; 1 - weighted Kendall tau, which weighs the
  top of the ranking), the real metrics reported;
* ``listwise``: non-negative weights of a weighted z-average of the whole pool
  (:class:`zoosel.bench.combination.Weighted`), fitted by a listwise softmax loss (the
  cross-entropy between softmax(accuracy / tau) and softmax(weighted z)) with a penalty
  ``lam / 2 * sum (w_j - mean w)^2`` that shrinks towards equal weights (``lam = inf``:
  the equal-weight z-average); ``(lam, tau)`` is chosen by an inner leave-one-task-out
  on the training tasks of each outer fold, on the real objective, so it is nested;
* ``z-all`` and ``rank-all``: the z- and rank-average of the whole pool (no fit).

Choosing among protocols is itself a fit: row ``nested`` chooses the protocol inside each
outer fold, by the leave-one-task-out loss of every protocol on that fold's training
tasks (each protocol refitted without the inner held-out task too), and ranks the outer
held-out task with the chosen protocol fitted on the training tasks.

    python benchmarks/bench_default_alternatives.py [--resamples 2000]
        [--out benchmarks/results/selection-joint/alternatives.md]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    # thousands of tiny L-BFGS-B fits: BLAS threads cost 5-15x their time on 2 busy cores
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
from scipy.optimize import minimize  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]  # this checkout's zoosel first

from _common import cpu_model  # noqa: E402

from zoosel.bench import baselines, combination, joint  # noqa: E402
from zoosel.bench.combination import Combination, Weighted  # noqa: E402
from zoosel.bench.metrics import (  # noqa: E402
    aggregate,
    correlations,
    default_verdict,
    expected_best_of_top_k,
    expected_trials_to_best,
)
from zoosel.bench.report import _fmt, _fmt_ci, _table  # noqa: E402
from zoosel.scorers import consensus  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
BUILDS = (("standard", "selection/results.json"), ("diverse", "selection-diverse/results.json"))
GOAL_REGIMES = ("5-shot", "20-shot")
LAMBDAS: tuple[float, ...] = (0.0, 0.1, 1.0)
TAUS: tuple[float, ...] = (0.01, 0.03)
RIDGE = 1e-4  # keeps the free-scale listwise fit bounded

Ranker = Any  # Combination or Weighted: ``.scores(entry)``, ``.components``, ``.label``
Fit = dict[str, Ranker]  # {regime: ranker}


# --------------------------------------------------------------------------- objectives


def top3_loss(entry: Mapping[str, Any], score: Mapping[str, float], tol: float = 0.0) -> float:
    """Top-3 regret (points: best accuracy minus the best of the 3 top-scored) + trials."""
    acc = entry["accuracy"]
    return (100.0 * (max(acc.values()) - expected_best_of_top_k(acc, score, 3))
            + expected_trials_to_best(acc, score, tol))


def wtau_loss(entry: Mapping[str, Any], score: Mapping[str, float], tol: float = 0.0) -> float:
    """1 - weighted Kendall tau between the score and accuracy (2 when undefined)."""
    tau = correlations(entry["accuracy"], score)["weighted_tau"]
    return 1.0 - tau if math.isfinite(tau) else 2.0


# --------------------------------------------------------------------------- protocols


class Protocol:
    """A way to fit the default on the targets of some training groups (tasks)."""

    name = ""
    description = ""

    def __init__(self, targets: joint.Targets) -> None:
        self.t = targets
        self._cache: dict[frozenset[str], Fit] = {}

    def fit(self, train: frozenset[str]) -> Fit:
        if train not in self._cache:
            self._cache[train] = self._fit(train)
        return self._cache[train]

    def _fit(self, train: frozenset[str]) -> Fit:
        raise NotImplementedError

    def train_targets(self, train: frozenset[str]) -> list[str]:
        return [name for name, group in self.t.groups.items() if group in train]


class Fixed(Protocol):
    """No fit: one ranker for every fold."""

    def __init__(self, targets: joint.Targets, name: str, ranker: Ranker,
                 description: str) -> None:
        super().__init__(targets)
        self.name, self.ranker, self.description = name, ranker, description

    def _fit(self, train: frozenset[str]) -> Fit:
        return dict.fromkeys(self.t.regimes, self.ranker)


class Search(Protocol):
    """:func:`combination.choose` over ``candidates`` on a loss table, jointly over the
    regimes or per regime."""

    def __init__(self, targets: joint.Targets, name: str, candidates: Sequence[Combination],
                 table: Mapping[tuple[Combination, str, str], float], description: str,
                 per_regime: bool = False) -> None:
        super().__init__(targets)
        self.name, self.description = name, description
        self.candidates = list(candidates)
        wanted = set(self.candidates)
        table = {k: v for k, v in table.items() if k[0] in wanted}
        self.tables = ({r: {k: v for k, v in table.items() if k[2] == r}
                        for r in targets.regimes} if per_regime else {"": table})

    def _fit(self, train: frozenset[str]) -> Fit:
        names = self.train_targets(train)
        picks = {r: combination.choose(table, self.candidates, names, self.t.builds)
                 for r, table in self.tables.items()}
        return {r: picks.get(r, picks.get("")) for r in self.t.regimes}


class Listwise(Protocol):
    """Non-negative listwise weights over the pool, ``(lam, tau)`` chosen by an inner
    leave-one-task-out on the training tasks."""

    name = "listwise"

    def __init__(self, targets: joint.Targets, lambdas: Sequence[float] = LAMBDAS,
                 taus: Sequence[float] = TAUS) -> None:
        super().__init__(targets)
        self.pool = list(targets.available)
        self.settings = [(lam, tau) for lam in lambdas for tau in taus] + [(math.inf, 0.0)]
        self.description = (
            "non-negative weights of a z-average of the pool, listwise softmax loss, "
            "shrunk towards equal weights; (lam, tau) by inner leave-one-task-out over "
            f"lam in {{{', '.join(f'{x:g}' for x in lambdas)}, inf}} x tau in "
            f"{{{', '.join(f'{x:g}' for x in taus)}}}")
        self.keys = [(name, r) for name in sorted(targets.tasks)
                     for r in targets.regimes if r in targets.tasks[name]]
        self.index = {k: i for i, k in enumerate(self.keys)}
        self.Z, self.has, self.acc, self.members = design(targets, self.keys, self.pool)
        self.valid = np.arange(self.Z.shape[1])[None, :] < np.array(
            [len(m) for m in self.members])[:, None]  # the target's members, not padding
        self._weights: dict[tuple[frozenset[str], tuple[float, float]], np.ndarray] = {}
        self.chosen: dict[frozenset[str], tuple[float, float]] = {}

    def rows(self, train: frozenset[str]) -> np.ndarray:
        return np.array([i for i, (name, _) in enumerate(self.keys)
                         if self.t.groups[name] in train], dtype=int)

    def weights(self, train: frozenset[str], setting: tuple[float, float]) -> np.ndarray:
        key = (train, setting)
        if key not in self._weights:
            lam, tau = setting
            if math.isinf(lam):
                w = np.ones(len(self.pool))
            else:
                idx = self.rows(train)
                share = build_shares([self.t.builds[self.keys[i][0]] for i in idx])
                w = fit_weights(self.Z[idx], self.valid[idx], self.acc[idx], share, lam, tau)
            self._weights[key] = w
        return self._weights[key]

    def ranker(self, w: np.ndarray) -> Weighted:
        return Weighted(tuple((n, float(x)) for n, x in zip(self.pool, w, strict=True)))

    def heldout_loss(self, train: frozenset[str], setting: tuple[float, float],
                     held: str) -> list[tuple[str, float]]:
        w = self.weights(train, setting)
        out = []
        for i in self.rows(frozenset({held})):
            name, regime = self.keys[i]
            entry = self.t.tasks[name][regime]
            score = self.Z[i] @ w
            used = (self.has[i] & (w > 0)).any(axis=1)  # as Weighted, which leaves out a
            scores = {m: float(score[j])                  # member with none of them
                      for j, m in enumerate(self.members[i]) if used[j]}
            out.append((name, combination.loss(entry, scores)))
        return out

    def _fit(self, train: frozenset[str]) -> Fit:
        best, best_loss = self.settings[-1], math.inf
        for setting in self.settings:
            values = [v for g in sorted(train)
                      for v in self.heldout_loss(train - {g}, setting, g)]
            mean = combination.build_mean(values, self.t.builds)
            if mean < best_loss - 1e-9:
                best, best_loss = setting, mean
        self.chosen[train] = best
        return dict.fromkeys(self.t.regimes, self.ranker(self.weights(train, best)))


def design(targets: joint.Targets, keys: Sequence[tuple[str, str]], pool: Sequence[str]
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[list[str]]]:
    """Padded arrays of the targets ``keys``: z-scores (target, member, score; 0 where
    missing, as :class:`Weighted` counts them), where a value is present, accuracies,
    member names."""
    from zoosel.scorers.consensus import z_scores

    members = [sorted(targets.tasks[n][r]["accuracy"]) for n, r in keys]
    size = max(len(m) for m in members)
    Z = np.zeros((len(keys), size, len(pool)))
    has = np.zeros(Z.shape, dtype=bool)
    acc = np.zeros((len(keys), size))
    for i, (name, regime) in enumerate(keys):
        entry = targets.tasks[name][regime]
        acc[i, :len(members[i])] = [entry["accuracy"][m] for m in members[i]]
        for j, score in enumerate(pool):
            column = {m: float(v) for m, v in (entry["scores"].get(score) or {}).items()
                      if m in entry["accuracy"] and v is not None}
            z = z_scores(column)
            Z[i, :len(members[i]), j] = [z.get(m, 0.0) for m in members[i]]
            has[i, :len(members[i]), j] = [m in z for m in members[i]]
    return Z, has, acc, members


def build_shares(builds: Sequence[str]) -> np.ndarray:
    """Each target's weight: 1 / (number of builds x the targets of its build)."""
    counts = Counter(builds)
    return np.array([1.0 / (len(counts) * counts[b]) for b in builds])


def fit_weights(Z: np.ndarray, valid: np.ndarray, acc: np.ndarray, share: np.ndarray,
                lam: float, tau: float) -> np.ndarray:
    """Non-negative ``w`` minimising ``sum_t share_t CE(softmax(acc_t / tau),
    softmax(Z_t w)) + lam / 2 sum_j (w_j - mean w)^2 + RIDGE / 2 |w|^2`` (L-BFGS-B)."""
    masked = np.where(valid, acc, -np.inf)
    q = np.exp((masked - masked.max(axis=1, keepdims=True)) / tau)
    q /= q.sum(axis=1, keepdims=True)
    loss_grad = listwise_objective(Z, valid, q, share, lam)
    res = minimize(loss_grad, np.full(Z.shape[2], 0.5), jac=True, method="L-BFGS-B",
                   bounds=[(0.0, None)] * Z.shape[2])
    return res.x


def listwise_objective(Z: np.ndarray, valid: np.ndarray, q: np.ndarray, share: np.ndarray,
                       lam: float) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """``w -> (loss, gradient)`` of :func:`fit_weights` for target distributions ``q``."""

    def f(w: np.ndarray) -> tuple[float, np.ndarray]:
        s = np.where(valid, Z @ w, -np.inf)
        top = s.max(axis=1, keepdims=True)
        e = np.exp(s - top)
        total = e.sum(axis=1, keepdims=True)
        p = e / total
        log_p = np.where(valid, s - top - np.log(total), 0.0)
        ce = -(q * log_p).sum(axis=1)
        d = w - w.mean()
        loss = float(share @ ce + 0.5 * lam * d @ d + 0.5 * RIDGE * w @ w)
        grad = np.einsum("tm,tmp->p", share[:, None] * (p - q), Z) + lam * d + RIDGE * w
        return loss, grad

    return f


# --------------------------------------------------------------------------- evaluation


def nested(protocols: Sequence[Protocol], targets: joint.Targets
           ) -> tuple[dict[str, Protocol], dict[str, dict[str, float]]]:
    """``({outer group: protocol chosen}, {outer group: {protocol: inner loss}})``: each
    protocol's leave-one-task-out loss (regret + trials, builds weighted equally) on the
    outer fold's training tasks; the lowest wins (ties: the earlier protocol)."""
    groups = sorted(set(targets.groups.values()))
    every = frozenset(groups)
    heldout: dict[tuple[str, frozenset[str], str], list[tuple[str, float]]] = {}

    def losses(p: Protocol, train: frozenset[str], held: str) -> list[tuple[str, float]]:
        key = (p.name, train, held)
        if key not in heldout:
            fit = p.fit(train)
            heldout[key] = [(name, combination.loss(targets.tasks[name][r],
                                                    fit[r].scores(targets.tasks[name][r])))
                            for name, g in sorted(targets.groups.items()) if g == held
                            for r in targets.tasks[name]]
        return heldout[key]

    chosen, inner = {}, {}
    for outer in groups:
        rest = every - {outer}
        inner[outer] = {p.name: combination.build_mean(
            [v for g in sorted(rest) for v in losses(p, rest - {g}, g)], targets.builds)
            for p in protocols}
        chosen[outer] = min(protocols, key=lambda p: round(inner[outer][p.name], 9))
    return chosen, inner


def heldout_rows(builds: Sequence[joint.Build], targets: joint.Targets,
                 picks: Mapping[str, Mapping[str, Fit]]
                 ) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """``rows[build][task][regime][row]``: the reference rows (the shipped default
    recomputed from its constants on every build) and, for each row of
    ``picks`` ({row: {held-out group: fit}}), the held-out task ranked by its fit."""
    shipped = Combination(consensus.METHOD, consensus.COMPONENTS)
    rows = {}
    for build in builds:
        rows[build.name] = joint.reference_rows(build, targets.masked[build.name])
        for task, regimes in rows[build.name].items():
            for regime, cells in regimes.items():
                entry = targets.tasks[f"{build.name}/{task}"][regime]
                # a build may hold a former definition's measured values under this name
                cells[joint.SHIPPED] = shipped.scores(entry)
                for row, per_fold in picks.items():
                    cells[row] = per_fold[task][regime].scores(entry)
    return rows


def heldout_objective(targets: joint.Targets, per_fold: Mapping[str, Fit],
                      group: str | None = None) -> float:
    """The fit's own objective held out: :func:`combination.loss` of every pair (of
    ``group`` only, if given) ranked by its fold's fit, each build's mean, builds weighted
    equally."""
    values = [(name, combination.loss(entry, per_fold[targets.groups[name]][r].scores(entry)))
              for name, regimes in targets.tasks.items() for r, entry in regimes.items()
              if group is None or targets.groups[name] == group]
    return combination.build_mean(values, targets.builds)


def in_sample(targets: joint.Targets, table: Mapping[tuple[Combination, str, str], float],
              per_task: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]],
              comparators: Sequence[str]) -> dict[str, Any]:
    """An upper bound for any protocol that picks one of the candidates of ``table``:
    each candidate judged on every task (in-sample), pooled as the held-out rows, against
    the ``comparators`` of ``per_task``. Returns how many candidates beat them all on the
    mean at 5- and 20-shot (with and without ``linft_grad``, which needs gradients) and
    the candidate whose worst margin over them is the largest."""
    regret = combination.loss_table(
        targets.tasks, targets.regimes, sorted({c for c, _, _ in table}, key=str),
        objective=lambda e, s, tol: combination.loss(e, s, tol)
        - expected_trials_to_best(e["accuracy"], s, tol))
    cells: dict[str, dict[str, dict[str, list[tuple[float, float]]]]] = {}
    for (c, name, r), value in table.items():
        cells.setdefault(targets.groups[name], {}).setdefault(r, {}).setdefault(
            c.label, []).append((regret[(c, name, r)], value - regret[(c, name, r)]))
    per = {g: {r: {**{n: dict(per_task[g][r][n]) for n in comparators if n in per_task[g][r]},
                   **{label: {"top1_regret": sum(v[0] for v in vals) / len(vals),
                              "trials_to_best": sum(v[1] for v in vals) / len(vals)}
                      for label, vals in rows.items()}}
               for r, rows in regimes.items()} for g, regimes in cells.items()}
    labels = sorted({c.label for c, _, _ in table})
    out: dict[str, Any] = {"n_candidates": len(labels)}
    for key, against in (("all", list(comparators)),
                         ("without_linft_grad", [c for c in comparators if c != "linft_grad"])):
        beating, best = [], (-math.inf, "", "")
        for label in labels:
            verdict = default_verdict(per, label, against, regimes=GOAL_REGIMES,
                                      metrics=joint.METRICS, n_resamples=1)
            margins = [(c["mean"], f"{r}/{m}/{o}") for r, row in verdict["margins"].items()
                       for m, cols in row.items() for o, c in cols.items()
                       if math.isfinite(c["mean"])]
            worst = min(margins)
            if verdict["beats_all"]:
                beating.append(label)
            if worst[0] > best[0]:
                best = (worst[0], label, worst[1])
        out[key] = {"beating": beating, "best_worst_margin": best[0], "best": best[1],
                    "best_worst_cell": best[2]}
    return out


def cost(builds: Sequence[joint.Build], targets: joint.Targets, per_fold: Mapping[str, Fit]
         ) -> tuple[float, float]:
    """(mean components, mean scoring seconds) of the held-out picks, the components
    masked on a build not counted there: each build's mean over its pairs
    (:func:`combination.combined_cost`), builds weighted equally."""
    counts, seconds = [], []
    for build in builds:
        c, s = [], []
        masked = targets.masked[build.name]
        for task, regimes in build.tasks.items():
            for regime, entry in regimes.items():
                components = [n for n in per_fold[task][regime].components if n not in masked]
                c.append(len(components))
                value = combination.combined_cost(entry.get("cost") or {}, components)
                if math.isfinite(value):
                    s.append(value)
        counts.append(sum(c) / len(c))
        seconds.append(sum(s) / len(s) if s else math.nan)
    return sum(counts) / len(counts), sum(seconds) / len(seconds)


def protocols_for(targets: joint.Targets, say: Callable[[str], None]
                  ) -> tuple[list[Protocol], dict[tuple[Combination, str, str], float]]:
    """Every protocol of this benchmark, the shipped one first, and the loss table of
    every candidate of up to 4 components."""
    four = targets.candidates(4)
    three = [c for c in four if len(c.components) <= combination.MAX_SIZE]
    singles = [c for c in three if len(c.components) == 1]
    began = time.perf_counter()
    table = combination.loss_table(targets.tasks, targets.regimes, four)
    top3 = combination.loss_table(targets.tasks, targets.regimes, three, objective=top3_loss)
    wtau = combination.loss_table(targets.tasks, targets.regimes, three, objective=wtau_loss)
    say(f"loss tables: {len(four)} candidates, {time.perf_counter() - began:.0f} s")
    pool = tuple(targets.available)
    return [
        Search(targets, "search-3", three, table,
               "the shipped protocol: 1-3 components, z or rank, joint over regimes"),
        Search(targets, "search-4", four, table, "the same with up to 4 components"),
        Search(targets, "per-regime", three, table,
               "the shipped search run on each regime's pairs; each regime ranked by its "
               "own pick", per_regime=True),
        Search(targets, "single", singles, table,
               "the search restricted to one score (`loto:single`)"),
        Search(targets, "top3-objective", three, top3,
               "the shipped search minimising top-3 regret + trials to best"),
        Search(targets, "wtau-objective", three, wtau,
               "the shipped search minimising 1 - weighted Kendall tau"),
        Listwise(targets),
        Fixed(targets, "z-all", Combination("z", pool), "z-average of the whole pool"),
        Fixed(targets, "rank-all", Combination("rank", pool),
              "rank-average of the whole pool"),
    ], table


def run(builds: Sequence[joint.Build], n_resamples: int = 2000, seed: int = 0,
        with_nested: bool = True, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Every protocol's held-out rows, aggregates, verdicts and costs (a JSON-able record
    but for ``protocols``, the fitted objects)."""
    targets = joint.merge(builds, joint.FEATURE_POOL)
    protocols, table = protocols_for(targets, say)
    groups = sorted(set(targets.groups.values()))
    every = frozenset(groups)
    picks: dict[str, dict[str, Fit]] = {}
    for p in protocols:
        began = time.perf_counter()
        picks[p.name] = {g: p.fit(every - {g}) for g in groups}
        say(f"{p.name}: outer folds in {time.perf_counter() - began:.0f} s")
    record: dict[str, Any] = {"groups": groups, "available": targets.available,
                              "masked": {b: sorted(m) for b, m in targets.masked.items()}}
    if with_nested:
        began = time.perf_counter()
        chosen, inner = nested(protocols, targets)
        picks["nested"] = {g: chosen[g].fit(every - {g}) for g in groups}
        outer = {g: {p.name: heldout_objective(targets, picks[p.name], g) for p in protocols}
                 for g in groups}
        record["nested"] = {"chosen": {g: p.name for g, p in chosen.items()},
                            "inner_loss": inner, "outer_loss": outer}
        say(f"nested: {time.perf_counter() - began:.0f} s")
    per_task = joint.pooled_metrics(builds, heldout_rows(builds, targets, picks))
    kw = {"n_resamples": n_resamples, "seed": seed}
    agg = aggregate(per_task, metrics=joint.METRICS, **kw)
    names = {n for regs in per_task.values() for cells in regs.values() for n in cells}
    comparators = sorted(names - set(picks) - {joint.SHIPPED, *baselines.BLIND}
                         ) + [baselines.STATIC]
    record["comparators"] = comparators
    record["aggregates"] = agg
    record["rows"] = {}
    for row, per_fold in picks.items():
        verdict = default_verdict(per_task, row, comparators, regimes=GOAL_REGIMES,
                                  metrics=joint.METRICS, **kw)
        n_comp, seconds = cost(builds, targets, per_fold)
        labels = Counter(f.label for fits in per_fold.values()
                         for f in dict.fromkeys(fits.values()))
        record["rows"][row] = {
            "objective": heldout_objective(targets, per_fold),
            "beats_all": verdict["beats_all"], "beats_all_clearly": verdict["beats_all_clearly"],
            "not_beaten": verdict["not_beaten"], "margins": verdict["margins"],
            "components": n_comp, "seconds": seconds, "picks": dict(labels.most_common()),
        }
    record["protocols"] = protocols
    began = time.perf_counter()
    grad = joint.merge(builds, joint.GRADIENT_POOL)
    grad_table = combination.loss_table(grad.tasks, grad.regimes, grad.candidates())
    record["in_sample"] = {
        "features, up to 4 components": in_sample(targets, table, per_task, comparators),
        "features+grad, up to 3 components": in_sample(grad, grad_table, per_task,
                                                       comparators)}
    say(f"in-sample bound: {time.perf_counter() - began:.0f} s")
    fitted_all = {p.name: {r: f.label for r, f in p.fit(every).items()} for p in protocols}
    record["fit_all"] = fitted_all
    lw = next(p for p in protocols if isinstance(p, Listwise))
    record["listwise_settings"] = {g: list(lw.chosen[every - {g}]) for g in groups}
    record["listwise_setting_all"] = list(lw.chosen[every])
    return record


# --------------------------------------------------------------------------- report


def markdown(record: Mapping[str, Any], command: str, machine: str, load: str,
             seconds: float) -> str:
    agg = record["aggregates"]
    regimes = list(agg)
    protocols = record["protocols"]
    order = [p.name for p in protocols] + (["nested"] if "nested" in record["rows"] else [])
    lines = [
        "# Ways to fit the default selector, held out", "",
        f"Command: `{command}`", "", f"Machine: {machine}.", "",
        f"Load average: {load}. Total run: {seconds:.0f} s (no timing is compared here).", "",
        "Builds: the committed standard (5-shot, 20-shot, full) and diverse (5-shot, "
        "20-shot) results, each score whose recorded scorer version is stale left out of "
        f"that build (as `zoosel bench fit` does). Pool: {', '.join(record['available'])}. "
        "Folds: each of the "
        f"{len(record['groups'])} tasks held out of every build at once; every fit "
        "weighs each build's mean over its (task, regime) pairs equally. Figures: the "
        "held-out task's top-1 regret (points) and trials to best, a task's value the mean "
        "over the builds that have it, mean [bootstrap 95% interval] over tasks "
        "(`zoosel.bench.metrics.aggregate`). Beats all: the protocol's mean is better than "
        "every single score's and `blind:static`'s on both metrics at 5- and 20-shot "
        "(`default_verdict`, paired by task); comparators: "
        f"{', '.join(f'`{c}`' for c in record['comparators'])}.", "",
        "## Protocols", "",
        *_table(["Protocol", "What"], [[f"`{p.name}`", p.description] for p in protocols]
                + ([["`nested`", "the protocol chosen in each outer fold by leave-one-task-"
                     "out over that fold's training tasks (every protocol above refitted "
                     "without each inner held-out task), then fitted on the training "
                     "tasks"]] if "nested" in record["rows"] else [])),
        "", "## Held-out results", "",
    ]
    header = ["Row"]
    for r in regimes:
        header += [f"{r} regret", f"{r} trials"]
    header += ["objective", "beats all (5, 20-shot)", "does not beat (regime/metric/row)",
               "components", "seconds"]
    body = []
    for name in order:
        info = record["rows"][name]
        cells = [f"`{name}`"]
        for r in regimes:
            cell = agg[r].get(name, {})
            cells += [_fmt_ci(cell.get("top1_regret"), "top1_regret"),
                      _fmt_ci(cell.get("trials_to_best"), "trials_to_best")]
        cells += [f"{info['objective']:.2f}", "**yes**" if info["beats_all"] else "no",
                  ", ".join(info["not_beaten"]) or "", f"{info['components']:.1f}",
                  _fmt(info["seconds"])]
        body.append(cells)
    lines += _table(header, body)
    ranked = sorted(order, key=lambda n: record["rows"][n]["objective"])
    winners = [n for n in order if record["rows"][n]["beats_all"]]
    lines += ["", "Lowest held-out objective: " + ", ".join(
        f"`{n}` {record['rows'][n]['objective']:.2f}" for n in ranked[:3])
        + ". Rows that beat every comparator on the mean at 5- and 20-shot: "
        + (", ".join(f"`{n}`" for n in winners) if winners else "none") + "."]
    lines += ["", "Objective: what every fit minimises (top-1 regret + trials to best), held "
              "out, each build's mean over its pairs, builds weighted equally. "
              "Components and seconds: the held-out picks' mean number of component "
              "scores and scoring seconds for the zoo (the builds' recorded costs, "
              "extraction counted once, `combination.combined_cost`), each build's mean "
              "over its pairs, builds weighted equally.", "",
              f"Reference rows (no protocol): `{joint.SHIPPED}` is the shipped default "
              f"`{Combination(consensus.METHOD, consensus.COMPONENTS).label}` recomputed "
              "from its constants on both builds (fitted on every task: in-sample); the "
              "others are the builds' measured scores.", ""]
    refs = [joint.SHIPPED, baselines.STATIC] + [c for c in record["comparators"]
                                                 if c != baselines.STATIC]
    rows = []
    for name in refs:
        cells = [f"`{name}`"]
        for r in regimes:
            cell = agg[r].get(name, {})
            cells += [_fmt_ci(cell.get("top1_regret"), "top1_regret"),
                      _fmt_ci(cell.get("trials_to_best"), "trials_to_best")]
        rows.append(cells)
    lines += _table(header[:1 + 2 * len(regimes)], rows)
    lines += ["", "## Fits", "",
              *_table(["Protocol", "picks over the outer folds (count)", "fit on every task"],
                      [[f"`{n}`", ", ".join(f"`{k}` {v}" for k, v in
                                            list(record["rows"][n]["picks"].items())[:4])
                        + (" ..." if len(record["rows"][n]["picks"]) > 4 else ""),
                        "; ".join(dict.fromkeys(f"`{v}`" for v in record["fit_all"][n].values()))
                        if n in record["fit_all"] else ""] for n in order]), ""]
    settings = Counter(tuple(v) for v in record["listwise_settings"].values())
    lines += ["`listwise` (lam, tau) chosen by the inner leave-one-task-out over the outer "
              "folds: " + ", ".join(f"({s[0]:g}, {s[1]:g}) {n}" for s, n in
                                    settings.most_common())
              + f"; on every task: ({record['listwise_setting_all'][0]:g}, "
              f"{record['listwise_setting_all'][1]:g}).", ""]
    lines += ["## In-sample bound", "",
              "Every candidate of a pool (z or rank averages) fitted and judged on every "
              "task (in-sample, so an upper bound for any protocol that picks one of them), "
              "pooled as above, against the same comparators; the feature pool is the one "
              "searched above, `features+grad` adds `linft_grad` (as `zoosel bench fit "
              "--pool features+grad`):", ""]
    for pool, bound in record["in_sample"].items():
        for key, what in (("all", "every comparator"),
                          ("without_linft_grad", "every comparator but `linft_grad`")):
            b = bound[key]
            lines.append(
                f"* {pool} ({bound['n_candidates']} candidates), against {what}: "
                f"{len(b['beating'])} beat them all on the mean at 5- and 20-shot"
                + (f" ({', '.join(f'`{x}`' for x in b['beating'][:5])})"
                   if b["beating"] else "")
                + f"; the largest worst-case margin is {b['best_worst_margin']:.2f} "
                f"(`{b['best']}`, at {b['best_worst_cell']}).")
    lines.append("")
    if "nested" in record:
        chosen = Counter(record["nested"]["chosen"].values())
        lines += ["## Nested choice of the protocol", "",
                  "Protocol chosen per outer fold: "
                  + ", ".join(f"`{k}` {v}" for k, v in chosen.most_common()) + ".", "",
                  "Inner leave-one-task-out loss (regret + trials, builds weighted "
                  "equally) of each protocol, mean [min, max] over the outer folds:", ""]
        inner = record["nested"]["inner_loss"]
        rows = []
        for name in [p.name for p in protocols]:
            values = [v[name] for v in inner.values()]
            rows.append([f"`{name}`", f"{sum(values) / len(values):.2f} "
                         f"[{min(values):.2f}, {max(values):.2f}]"])
        lines += _table(["Protocol", "inner loss"], rows) + [""]
        outer = record["nested"]["outer_loss"]
        ranks, worse, better = [], 0, 0
        for g, name in record["nested"]["chosen"].items():
            losses = outer[g]
            ranks.append(1 + sum(v < losses[name] - 1e-9 for v in losses.values())
                         + 0.5 * (sum(abs(v - losses[name]) <= 1e-9
                                      for v in losses.values()) - 1))
            worse += losses[name] > losses[protocols[0].name] + 1e-9
            better += losses[name] < losses[protocols[0].name] - 1e-9
        lines += [f"On its own held-out task, the protocol chosen for a fold ranks "
                  f"{sum(ranks) / len(ranks):.1f} of {len(protocols)} on average (1: the "
                  f"lowest loss there, ties sharing their mean rank; a pick at random: "
                  f"{(len(protocols) + 1) / 2:g}); it does worse there than "
                  f"`{protocols[0].name}` in {worse} folds and better in {better}.", ""]
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--no-nested", action="store_true")
    parser.add_argument("--out", type=Path,
                        default=RESULTS / "selection-joint" / "alternatives.md")
    args = parser.parse_args()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    began = time.perf_counter()
    builds = joint.load_builds([(n, RESULTS / p) for n, p in BUILDS])
    record = run(builds, args.resamples, with_nested=not args.no_nested,
                 say=lambda s: print(s, flush=True))
    took = time.perf_counter() - began
    end = " ".join(f"{x:.2f}" for x in os.getloadavg())
    command = "python benchmarks/bench_default_alternatives.py" + (
        f" --resamples {args.resamples}" if args.resamples != 2000 else "") + (
        " --no-nested" if args.no_nested else "")
    machine = (f"{cpu_model()}, {os.cpu_count()} logical cores shared with other jobs, "
               f"Python {platform.python_version()}")
    text = markdown(record, command, machine, f"{load} at the start, {end} at the end", took)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    from zoosel.bench.report import _jsonable

    data = _jsonable({k: v for k, v in record.items() if k != "protocols"})
    args.out.with_suffix(".json").write_text(
        json.dumps(data, indent=1, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
