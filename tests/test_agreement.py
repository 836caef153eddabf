"""Agreement of the scores of a ranking, on a hand-built ranking."""

from __future__ import annotations

import json

import pytest

from zoosel import agreement
from zoosel.formats import render_json, render_table
from zoosel.types import CandidateResult, DatasetSummary, Ranking

# Sorted by "main". Positions over the 4 candidates (0 worst, 1 best):
#   a: main 1, x 1, y 0        -> spread 1.0, flagged
#   b: main 2/3, x 2/3, y 1    -> spread 1/3
#   c: main 1/3, x 0, y 2/3    -> spread 2/3, flagged
#   d: main 0, x 1/3, y 1/3    -> spread 1/3 (z has only one value: not a score here)
SCORES = {
    "a": {"main": 4.0, "x": 40.0, "y": -3.0, "z": 1.0},
    "b": {"main": 3.0, "x": 30.0, "y": 9.0},
    "c": {"main": 2.0, "x": 10.0, "y": 5.0},
    "d": {"main": 1.0, "x": 20.0, "y": 0.0},
}


def _ranking() -> Ranking:
    results = [CandidateResult(candidate=c, source="local", scores=s) for c, s in SCORES.items()]
    return Ranking(dataset=DatasetSummary("d", "all", "f", 2, 8, 4, 0, ("p", "q")),
                   scorers=["main", "x", "y", "z"], primary="main", results=results,
                   failed=[], skipped=[])


def test_votes_spread_and_flags_by_hand():
    info = agreement.summarize(_ranking())
    assert info["recommended"] == "a" and info["other_scores"] == ["x", "y"]
    assert info["top1_votes"] == 1 and info["first_by"] == {"x": ["a"], "y": ["b"]}
    assert info["spread"] == pytest.approx({"a": 1.0, "b": 1 / 3, "c": 2 / 3, "d": 1 / 3})
    assert info["flagged"] == ["a", "c"]


def test_agreement_in_json_and_table():
    ranking = _ranking()
    data = json.loads(render_json(ranking))
    assert data["agreement"]["flagged"] == ["a", "c"] and data["agreement"]["top1_votes"] == 1
    table = render_table(ranking)
    assert "agreement: 1 of 2 other scores (x, y) also rank the recommended model first; " \
        "scores disagree strongly" in table
    assert "disagree a: main 1.00, y 0.00\n" in table
    assert "disagree c: y 0.67, x 0.00\n" in table
    assert "disagree b" not in table and "disagree d" not in table


def test_a_single_score_gives_no_agreement_lines():
    ranking = _ranking()
    ranking.scorers, ranking.primary = ["main"], "main"
    assert agreement.notes(ranking) == []
    assert agreement.summarize(ranking)["flagged"] == []
