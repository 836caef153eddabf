"""Dataset-blind rankings: what a selector must beat to show it reads the target data.

A zoo has a quality order of its own: some members transfer well almost everywhere. A
ranking that never looks at the target can therefore correlate with fine-tuned accuracy
as well as a score does (Singh et al. 2025, arXiv 2510.06448). Three such rankings are
added next to the selectors:

* ``blind:static``: each member's mean fine-tuned accuracy on the OTHER tasks of the
  benchmark, in the same regime (leave-one-target-out, so the target's own accuracies
  never enter its ranking);
* ``blind:source_acc``: each member's accuracy on its own source domain;
* ``blind:params``: each member's parameter count (bigger ranked first).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

STATIC = "blind:static"
SOURCE_ACCURACY = "blind:source_acc"
PARAMS = "blind:params"
BLIND: tuple[str, ...] = (STATIC, SOURCE_ACCURACY, PARAMS)


def static_scores(tasks: Mapping[str, Mapping[str, Mapping[str, Any]]], task: str,
                  regime: str) -> dict[str, float]:
    """Each member of ``tasks[task][regime]``: its mean fine-tuned accuracy on the other
    tasks in ``regime`` (NaN for a member no other task has)."""
    others = [tasks[t][regime]["accuracy"] for t in sorted(tasks)
              if t != task and regime in tasks[t]]
    out = {}
    for member in tasks[task][regime]["accuracy"]:
        values = [float(acc[member]) for acc in others if member in acc]
        out[member] = sum(values) / len(values) if values else math.nan
    return out


def zoo_scores(zoo: Sequence[Mapping[str, Any]], key: str) -> dict[str, float]:
    """``{member: zoo[key]}`` for the members that have a finite number there."""
    out = {}
    for member in zoo:
        value = member.get(key)
        if isinstance(value, (int, float)) and math.isfinite(float(value)):
            out[str(member.get("id"))] = float(value)
    return out


def add_blind_rows(results: dict[str, Any]) -> list[str]:
    """Add the dataset-blind rankings to the scores of every (task, regime) of ``results``
    (in place; their cost is 0). Returns the names added (those the zoo allows)."""
    tasks = results["tasks"]
    zoo = results.get("zoo") or []
    fixed = {SOURCE_ACCURACY: zoo_scores(zoo, "source_accuracy"),
             PARAMS: zoo_scores(zoo, "params")}
    fixed = {name: values for name, values in fixed.items() if values}
    for task in sorted(tasks):
        for regime, entry in tasks[task].items():
            scores = entry.setdefault("scores", {})
            scores[STATIC] = static_scores(tasks, task, regime)
            for name, values in fixed.items():
                scores[name] = {m: values[m] for m in entry["accuracy"] if m in values}
            cost = entry.get("cost")
            if cost is not None:
                for name in (STATIC, *fixed):
                    cost[name] = 0.0
    return [STATIC, *fixed]
