"""How far the scores of a ranking agree: on the recommended model, and per candidate.

Each score with a finite value for at least two candidates places every candidate at a
position in [0, 1] among the candidates it scored (0 the worst, 1 the best, ties
averaged). Then:

* ``top1_votes``: how many of the other scores (not the one the ranking is sorted by)
  also rank the recommended candidate first;
* ``spread`` of a candidate: its highest minus its lowest position over the scores;
  a candidate is **flagged** when the spread exceeds :data:`THRESHOLD` (one score puts
  it in the upper half of the pool and another in the lower half, and then some), a
  sign that its place in the ranking depends on which score one believes.
"""

from __future__ import annotations

import math
from typing import Any

from zoosel.scorers.consensus import rank_positions
from zoosel.types import Ranking

THRESHOLD = 0.5


def positions(ranking: Ranking) -> dict[str, dict[str, float]]:
    """``{scorer: {candidate: position in [0, 1]}}`` for the scores with >= 2 values."""
    out = {}
    for name in ranking.scorers:
        values = {r.candidate: r.scores[name] for r in ranking.results
                  if name in r.scores and math.isfinite(r.scores[name])}
        if len(values) >= 2:
            out[name] = rank_positions(values)
    return out


def summarize(ranking: Ranking, threshold: float = THRESHOLD) -> dict[str, Any]:
    """The agreement record of ``ranking`` (see the module docstring), JSON-able."""
    where = positions(ranking)
    best = ranking.best.candidate if ranking.best is not None else None
    others = [s for s in where if s != ranking.primary]
    firsts = {s: sorted(c for c, p in where[s].items() if p == 1.0) for s in others}
    spread = {}
    for r in ranking.results:
        seen = [where[s][r.candidate] for s in where if r.candidate in where[s]]
        if len(seen) >= 2:
            spread[r.candidate] = max(seen) - min(seen)
    return {
        "recommended": best,
        "top1_votes": sum(best in firsts[s] for s in others) if best else 0,
        "other_scores": others,
        "first_by": firsts,
        "threshold": threshold,
        "spread": spread,
        "flagged": [c for c, v in spread.items() if v > threshold],
    }


def notes(ranking: Ranking) -> list[str]:
    """One line on the top-1 agreement and one per flagged candidate, for tables."""
    info = summarize(ranking)
    if not info["other_scores"] or info["recommended"] is None:
        return []
    lines = [f"agreement: {info['top1_votes']} of {len(info['other_scores'])} other scores "
             f"({', '.join(info['other_scores'])}) also rank the recommended model first"]
    if info["flagged"]:
        lines[0] += ("; scores disagree strongly on the candidates below (position among "
                     "the candidates: 0 the worst, 1 the best)")
    where = positions(ranking)
    for candidate in info["flagged"]:
        placed = {s: where[s][candidate] for s in where if candidate in where[s]}
        high, low = max(placed, key=placed.get), min(placed, key=placed.get)
        lines.append(f"disagree {candidate}: {high} {placed[high]:.2f}, {low} "
                     f"{placed[low]:.2f}")
    return lines
