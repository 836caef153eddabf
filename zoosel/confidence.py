"""How sure a ranking is: resample the per-class sample, re-score, re-rank.

Each replicate draws, within every class, a subset of the class's sample rows (a seeded
numpy Generator; the same rows for every candidate, so candidates are compared on the
same draw), recomputes the score the ranking is sorted by on every candidate's arrays
(the features and source probabilities the run already extracted: no forward pass), and
ranks the candidates. For a pool-relative score (``consensus``) the components are
computed per candidate and normalised over the pool within each replicate. Then, per
candidate:

* ``p_best``: the fraction of replicates in which it comes first (a tie for first place
  splits the replicate between the tied candidates);
* ``rank_interval``: the 5th and 95th percentiles of its rank over the replicates (a
  90% interval; rank 1 is the best, tied candidates share the better rank).

Resampling (:data:`METHODS`). ``half`` (the default) draws half of each class's rows
(rounded up) without replacement. For a score that behaves like a mean, the spread of a
half-sample value around the full-sample value matches the spread of the full-sample
value around the truth (half-sampling), so the intervals describe the uncertainty of the
ranking itself. ``bootstrap`` draws every class's rows with replacement; it is offered,
but duplicated rows make several scores degenerate: on 10 classes x 20 rows, D=128,
LogME's bootstrap values ranged 0.11 to 8.2 against -0.07 on the sample (it reads
duplicates as noise-free directions), and the regularised H-score rose from 2.24 to about
5.5 (shrinkage sees less noise). Both are components of ``consensus``, hence ``half``.

A leader whose ``p_best`` is below :data:`INDISTINGUISHABLE_BELOW` is reported as
indistinguishable from the runner-up: with two equally good candidates each comes first
about half the time, so a threshold at 0.5 would let such a pair pass about half the time;
at 0.8 the leader must come first in four resamples out of five.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from zoosel.errors import UsageError

if TYPE_CHECKING:
    from zoosel.types import Ranking, Scorer

DEFAULT_REPLICATES = 50
"""Replicates of ``zoosel select`` and :func:`zoosel.rank` (``--confidence``; 0: off),
unless ``$ZOOSEL_CONFIDENCE`` says otherwise (:func:`default_replicates`)."""
INDISTINGUISHABLE_BELOW = 0.8
"""A leader with a lower ``p_best`` is reported as indistinguishable from the next."""
INTERVAL = (5.0, 95.0)
"""Percentiles of the rank interval."""
METHODS = ("half", "bootstrap")
PER_SAMPLE = ("features", "source_probs", "gradient_sketch", "probe_features")
"""Arrays with one row per sample (resampled); the others (source means) are kept whole."""


@dataclass
class Confidence:
    """The outcome of :func:`assess` for one ranking."""

    score: str
    """The score resampled (the ranking's primary)."""
    replicates: int
    seed: int
    method: str
    candidates: list[str]
    """The candidates assessed, in ranking order (those with arrays and a finite score)."""
    p_best: dict[str, float]
    rank_interval: dict[str, tuple[int, int]]
    failures: dict[str, int] = field(default_factory=dict)
    """Replicates in which a candidate's score could not be computed (ranked last there)."""
    left_out: dict[str, str] = field(default_factory=dict)
    """Candidates of the ranking not assessed, with the reason."""
    seconds: float = 0.0
    values: np.ndarray | None = field(default=None, repr=False)
    """(replicates, candidates) resampled scores, NaN where a score failed."""

    @property
    def leader(self) -> str | None:
        return self.candidates[0] if self.candidates else None

    def runner_up(self) -> str | None:
        """The candidate other than the leader with the highest ``p_best``."""
        others = [c for c in self.candidates[1:]]
        return max(others, key=lambda c: self.p_best[c]) if others else None

    def indistinguishable(self, threshold: float = INDISTINGUISHABLE_BELOW) -> bool:
        """Whether the leader's ``p_best`` is below ``threshold`` (two or more candidates)."""
        leader = self.leader
        return bool(leader is not None and len(self.candidates) > 1 and
            self.p_best[leader] < threshold)

    def p_beats(self, a: str, b: str) -> float:
        """Fraction of replicates in which ``a`` scores higher than ``b`` (ties count half;
        a failed score loses to any finite one)."""
        assert self.values is not None
        i, j = self.candidates.index(a), self.candidates.index(b)
        x = np.nan_to_num(self.values[:, i], nan=-np.inf)
        y = np.nan_to_num(self.values[:, j], nan=-np.inf)
        return float(np.mean((x > y) + 0.5 * (x == y)))

    def to_dict(self) -> dict[str, Any]:
        leader, second = self.leader, self.runner_up()
        return {
            "score": self.score, "replicates": self.replicates, "seed": self.seed,
            "method": self.method, "interval_percentiles": list(INTERVAL),
            "threshold": INDISTINGUISHABLE_BELOW,
            "indistinguishable": self.indistinguishable(),
            "leader": leader, "runner_up": second,
            "p_leader_beats_runner_up": self.p_beats(leader, second)
            if leader and second and self.values is not None else None,
            "failures": self.failures, "left_out": self.left_out,
            "seconds": round(self.seconds, 3),
        }

    def row(self, candidate: str) -> dict[str, Any]:
        """The ``p_best`` and ``rank_interval`` fields of one ranking row."""
        if candidate not in self.p_best:
            return {"p_best": None, "rank_interval": None}
        return {"p_best": float(self.p_best[candidate]),
                "rank_interval": [int(r) for r in self.rank_interval[candidate]]}

    def cells(self, candidate: str) -> list[str]:
        """The two table cells of one candidate: P(best) and the rank interval."""
        if candidate not in self.p_best:
            return ["-", "-"]
        low, high = self.rank_interval[candidate]
        return [f"{self.p_best[candidate]:.2f}", str(low) if low == high else f"{low}-{high}"]

    def notes(self) -> list[str]:
        """Lines for the notes under a table."""
        lines = [f"confidence: {self.replicates} resamples of the per-class sample "
                 f"({_method_text(self.method)}, seed {self.seed}) re-scored by {self.score} "
                 "on the extracted features; P(best) = share of resamples a candidate comes "
                 f"first, rank 90% = 5th-95th percentile of its rank"]
        lines += [f"confidence: {c} left out ({why})" for c, why in self.left_out.items()]
        lines += [f"confidence: {c}: {self.score} failed in {n} of {self.replicates} "
                  "resamples (ranked last there)" for c, n in self.failures.items()]
        if self.indistinguishable():
            lines.append(self.indistinguishable_text())
        return lines

    def indistinguishable_text(self) -> str:
        leader, second = self.leader, self.runner_up()
        assert leader is not None and second is not None
        return (f"the top candidates are indistinguishable (P(best) "
                f"{self.p_best[leader]:.2f} vs {self.p_best[second]:.2f}: {leader} vs "
                f"{second}); the leader comes first in fewer than "
                f"{INDISTINGUISHABLE_BELOW:.0%} of the resamples")


def default_replicates() -> int:
    """``$ZOOSEL_CONFIDENCE`` when set, else :data:`DEFAULT_REPLICATES`."""
    raw = os.environ.get("ZOOSEL_CONFIDENCE", "").strip()
    if not raw:
        return DEFAULT_REPLICATES
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise UsageError(f"ZOOSEL_CONFIDENCE={raw!r}: write 0 (off) or a number of resamples.")
    return value


def _method_text(method: str) -> str:
    return {"half": "half of each class, without replacement",
            "bootstrap": "bootstrap within each class"}.get(method, method)


def resamples(labels: np.ndarray, replicates: int, seed: int,
              method: str = "half") -> Iterator[np.ndarray]:
    """Row indices of each replicate (sorted), drawn within each class."""
    if method not in METHODS:
        raise UsageError(f"unknown resampling {method!r}; known: {', '.join(METHODS)}.")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for _ in range(replicates):
        parts = []
        for rows in groups:
            if method == "half":
                parts.append(rng.choice(rows, math.ceil(len(rows) / 2), replace=False))
            else:
                parts.append(rng.choice(rows, len(rows), replace=True))
        yield np.sort(np.concatenate(parts))


def summarize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(p_best, rank_low, rank_high)`` per column of ``values`` (replicates x candidates,
    higher is better, NaN: the score failed, ranked below every finite value)."""
    x = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=-np.inf)
    top = x.max(axis=1, keepdims=True)
    first = x == top
    p_best = (first / first.sum(axis=1, keepdims=True)).mean(axis=0)
    ranks = 1 + (x[:, None, :] > x[:, :, None]).sum(axis=2)  # rank of column j in row b
    low = np.percentile(ranks, INTERVAL[0], axis=0, method="lower")
    high = np.percentile(ranks, INTERVAL[1], axis=0, method="higher")
    return p_best, low.astype(int), high.astype(int)


def replicate_values(arrays: Mapping[str, Mapping[str, np.ndarray]], labels: np.ndarray,
                     num_classes: int, name: str, scorer: Scorer,
                     rows: np.ndarray) -> dict[str, float]:
    """The score ``name`` of every candidate on the sample rows ``rows`` (NaN on failure);
    a pool-relative score is normalised over the candidates of ``arrays``."""
    from zoosel.engine.runner import score_arrays

    y = np.asarray(labels)[rows]
    out: dict[str, float] = {}
    parts: dict[str, dict[str, float]] = {}
    for candidate, held in arrays.items():
        picked = {k: (v[rows] if k in PER_SAMPLE else v) for k, v in held.items()}
        scores, components, _ = score_arrays(picked, y, num_classes, {name: scorer})
        if name in components:
            parts[candidate] = components[name]
        out[candidate] = float(scores.get(name, math.nan))
    if scorer.pool_normalize is not None:
        final = scorer.pool_normalize(parts) if parts else {}
        out = {c: float(final.get(c, math.nan)) for c in arrays}
    return out


def assess(ranking: Ranking, arrays: Mapping[str, Mapping[str, np.ndarray]],
           labels: np.ndarray, scorer: Scorer, replicates: int = DEFAULT_REPLICATES,
           seed: int = 0, method: str = "half") -> Confidence:
    """Resample ``ranking``'s sample and re-rank its candidates by its primary score.

    ``arrays`` holds each candidate's extracted arrays (``{candidate: {name: array}}``);
    candidates of the ranking missing there are left out with a note. Nothing is run
    through a model.
    """
    import torch

    from zoosel.engine.preprocess import scoring_threads
    from zoosel.threads import torch_threads

    if replicates < 1:
        raise UsageError("the number of confidence resamples must be at least 1.")
    began = time.perf_counter()
    name = ranking.primary
    left_out: dict[str, str] = {}
    names: list[str] = []
    for r in ranking.results:
        value = r.scores.get(name)
        if value is None or not math.isfinite(value):
            left_out[r.candidate] = f"no {name} score"
        elif r.candidate not in arrays:
            left_out[r.candidate] = "its extracted arrays are not available"
        else:
            names.append(r.candidate)
    held = {c: arrays[c] for c in names}
    values = np.full((replicates, len(names)), np.nan)
    n = len(labels)
    dim = max((np.shape(a.get("features", np.empty((n, 1))))[1] for a in held.values()),
              default=1)
    with torch_threads(scoring_threads(n, dim, torch.get_num_threads())):
        for b, rows in enumerate(resamples(labels, replicates, seed, method)):
            if not names:
                break
            got = replicate_values(held, labels, ranking.dataset.num_classes, name, scorer,
                                   rows)
            values[b] = [got[c] for c in names]
    p_best, low, high = summarize(values) if names else ([], [], [])
    failed = np.isnan(values).sum(axis=0)
    return Confidence(
        score=name, replicates=replicates, seed=seed, method=method, candidates=names,
        p_best={c: float(p) for c, p in zip(names, p_best, strict=True)},
        rank_interval={c: (int(lo), int(hi)) for c, lo, hi in zip(names, low, high,
                                                                   strict=True)},
        failures={c: int(f) for c, f in zip(names, failed, strict=True) if f},
        left_out=left_out, seconds=time.perf_counter() - began, values=values,
    )


def needed_arrays(scorer: Scorer) -> set[str]:
    """Names of the arrays ``scorer`` reads (what a run keeps for :func:`assess`)."""
    names = {n.value for n in scorer.needs}
    if "source_means" in names:
        names.add("source_weights")
    return names

