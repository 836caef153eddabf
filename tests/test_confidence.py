"""Confidence of a ranking: resampling on the extracted arrays, P(best), rank intervals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import zoosel.confidence as confidence_module
from zoosel.api import list_scorers, rank
from zoosel.cards import render_card
from zoosel.ci import evaluate, explain
from zoosel.cli import cli
from zoosel.cli import commands as _commands  # noqa: F401  (registers the commands)
from zoosel.confidence import Confidence, assess, resamples, summarize
from zoosel.formats import render_csv, render_table
from zoosel.hookspecs import hookimpl
from zoosel.plugins import get_plugin_manager
from zoosel.testing.counting import ForwardCounter
from zoosel.types import CandidateResult, DatasetSummary, Need, Ranking, Scorer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class ControlledScorers:
    """``first_mean``: the mean of feature column 0, so the test decides every value;
    ``pool_first``: the same as components, normalised over the pool (counting calls)."""

    pool_calls: list[set[str]] = []

    @hookimpl
    def register_scorers(self, register):
        def first_mean(inputs):
            return float(inputs.features[:, 0].double().mean())

        def pool(parts):
            ControlledScorers.pool_calls.append(set(parts))
            mean = np.mean([p["m"] for p in parts.values()])
            return {c: p["m"] - mean for c, p in parts.items()}

        register(Scorer("first_mean", first_mean, frozenset({Need.FEATURES}), "test"))
        register(Scorer("pool_first", lambda i: {"m": first_mean(i)},
                        frozenset({Need.FEATURES}), "test", pool_normalize=pool))


@pytest.fixture(scope="module")
def controlled():
    pm = get_plugin_manager()
    pm.register(ControlledScorers(), name="confidence-test-scorers")
    try:
        yield list_scorers()
    finally:
        pm.unregister(name="confidence-test-scorers")


def _ranking(scores: dict[str, float], primary: str = "first_mean") -> Ranking:
    results = [CandidateResult(candidate=c, source="local", scores={primary: v})
               for c, v in sorted(scores.items(), key=lambda kv: -kv[1])]
    return Ranking(dataset=DatasetSummary("d", "all", "f", 2, 4, 2, 0, ("a", "b")),
                   scorers=[primary], primary=primary, results=results, failed=[], skipped=[])


# Two classes of two rows (rows 0, 1: class 0; rows 2, 3: class 1). Half-sampling keeps one
# row per class: four equally likely resamples. Column 0 of A is 3, 0 | 3, 0, so A's mean
# is 3, 1.5, 1.5 or 0; B is always 1 and C always -1. Worked by hand: A first in 3 of 4
# (P(best) 0.75), B in 1 of 4 (0.25), C never; A's and B's ranks are 1 or 2 (interval 1-2),
# C's always 3; A beats B with probability 0.75.
LABELS = np.array([0, 0, 1, 1])
ARRAYS = {
    "A": {"features": np.array([[3.0], [0.0], [3.0], [0.0]], dtype=np.float32)},
    "B": {"features": np.ones((4, 1), dtype=np.float32)},
    "C": {"features": -np.ones((4, 1), dtype=np.float32)},
}
FULL = {"A": 1.5, "B": 1.0, "C": -1.0}


@pytest.mark.parametrize("name", ["first_mean", "pool_first"])
def test_hand_worked_pool(controlled, name):
    ControlledScorers.pool_calls.clear()
    conf = assess(_ranking(FULL, name), ARRAYS, LABELS, controlled[name], replicates=4000,
                  seed=3)
    assert conf.candidates == ["A", "B", "C"]
    assert conf.p_best["A"] == pytest.approx(0.75, abs=0.03)
    assert conf.p_best["B"] == pytest.approx(0.25, abs=0.03)
    assert conf.p_best["C"] == 0.0
    assert conf.rank_interval == {"A": (1, 2), "B": (1, 2), "C": (3, 3)}
    assert conf.p_beats("A", "B") == pytest.approx(0.75, abs=0.03)
    assert conf.p_beats("B", "C") == 1.0
    assert not conf.failures and not conf.left_out
    assert conf.indistinguishable()  # 0.75 < 0.8
    if name == "pool_first":  # normalised over the whole pool once per resample
        assert ControlledScorers.pool_calls == [{"A", "B", "C"}] * 4000


def test_resamples_are_within_class_and_seeded():
    labels = np.repeat(np.arange(3), [5, 4, 1])
    first = list(resamples(labels, 20, seed=7))
    again = list(resamples(labels, 20, seed=7))
    other = list(resamples(labels, 20, seed=8))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))
    for rows in first:  # half of each class, rounded up, no repeats
        assert np.bincount(labels[rows], minlength=3).tolist() == [3, 2, 1]
        assert len(set(rows.tolist())) == len(rows)
    for rows in resamples(labels, 20, seed=7, method="bootstrap"):
        assert np.bincount(labels[rows], minlength=3).tolist() == [5, 4, 1]


def test_summarize_ties_and_failures_by_hand():
    nan = float("nan")
    values = np.array([[2.0, 2.0, 1.0],   # A and B tie first: half a win each
                       [3.0, 1.0, 0.0],
                       [0.0, nan, 1.0],   # B failed: ranked last
                       [1.0, 2.0, 0.0]])
    p_best, low, high = summarize(values)
    # A: 0.5 + 1 + 0 + 0; B: 0.5 + 0 + 0 + 1; C: 0 + 0 + 1 + 0  (over 4 replicates)
    assert p_best.tolist() == pytest.approx([0.375, 0.375, 0.25])
    # ranks: A 1,1,2,2  B 1,2,3,1  C 3,3,1,3
    assert low.tolist() == [1, 1, 1] and high.tolist() == [2, 3, 3]


def test_seeded_and_no_forward_pass(example, tmp_path_factory, monkeypatch):
    zoo, data = example
    counter = ForwardCounter(monkeypatch)
    during: list[int] = []
    real = confidence_module.assess

    def watched(*args, **kwargs):
        before = counter.calls
        result = real(*args, **kwargs)
        during.append(counter.calls - before)
        return result

    monkeypatch.setattr(confidence_module, "assess", watched)
    common = dict(local_dirs=[str(zoo)], per_class=6, progress=False,
                  cache_dir=tmp_path_factory.mktemp("cache"), scorers=["consensus", "lfc"])
    first = rank(str(data), confidence=12, **common)
    assert counter.calls > 0 and during == [0]  # models ran, but not for the confidence
    second = rank(str(data), confidence=12, use_cache=False, **common)  # arrays kept in memory
    assert during == [0, 0]
    a, b = first.confidence, second.confidence
    assert a is not None and b is not None
    assert a.candidates == [r.candidate for r in first.results] == b.candidates
    assert np.array_equal(a.values, b.values) and a.p_best == b.p_best
    assert a.rank_interval == b.rank_interval
    assert sum(a.p_best.values()) == pytest.approx(1.0)
    assert a.values.shape == (12, 5) and np.isfinite(a.values).all()
    off = rank(str(data), confidence=0, **common)
    assert off.confidence is None
    # the JSON rows, the table and the card carry it
    rows = first.to_dict()["ranking"]
    assert rows[0]["p_best"] == a.p_best[rows[0]["candidate"]]
    assert rows[0]["rank_interval"] == list(a.rank_interval[rows[0]["candidate"]])
    assert "P(best)" in render_table(first).splitlines()[0]
    assert "Confidence: over 12 resamples" in render_card(first)
    assert "p_best" in render_csv(first).splitlines()[0]
    assert off.to_dict()["ranking"][0]["p_best"] is None


def _confidence(p_b_worse: float) -> Confidence:
    """A over B in a share ``p_b_worse`` of 100 replicates."""
    wins = round(100 * p_b_worse)
    values = np.array([[1.0, 0.0]] * wins + [[0.0, 1.0]] * (100 - wins))
    p_best, low, high = summarize(values)
    return Confidence(score="first_mean", replicates=100, seed=0, method="half",
                      candidates=["local:/z/a@1", "local:/z/b@2"],
                      p_best={"local:/z/a@1": p_best[0], "local:/z/b@2": p_best[1]},
                      rank_interval={"local:/z/a@1": (low[0], high[0]),
                                     "local:/z/b@2": (low[1], high[1])},
                      values=values)


def test_fail_only_if_confident():
    ranking = _ranking({"local:/z/a@1": 0.5, "local:/z/b@2": 0.4})
    ranking.confidence = _confidence(0.7)
    plain = evaluate(ranking, "first_mean", 0.05, "b")
    assert plain.exit_code == 1 and plain.p_worse == pytest.approx(0.7)
    unsure = evaluate(ranking, "first_mean", 0.05, "b", fail_only_if_confident=0.9)
    assert unsure.exit_code == 0 and "not confidently worse" in unsure.message
    sure = evaluate(ranking, "first_mean", 0.05, "b", fail_only_if_confident=0.7)
    assert sure.exit_code == 1
    within = evaluate(ranking, "first_mean", 0.2, "b", fail_only_if_confident=0.5)
    assert within.exit_code == 0  # the margin still applies first
    assert evaluate(ranking, "first_mean", 0.0, "a").p_worse == 0.0
    assert "indistinguishable (P(best) 0.70 vs 0.30" in explain(plain)
    ranking.confidence = _confidence(0.9)
    assert evaluate(ranking, "first_mean", 0.05, "b").indistinguishable is None


def test_indistinguishable_note():
    ranking = _ranking({"local:/z/a@1": 0.5, "local:/z/b@2": 0.4})
    ranking.confidence = _confidence(0.6)
    table = render_table(ranking)
    assert "the top candidates are indistinguishable (P(best) 0.60 vs 0.40" in table
    assert "indistinguishable" in render_card(ranking)
    assert json.loads(json.dumps(ranking.to_dict()))["confidence"]["indistinguishable"]
    ranking.confidence = _confidence(0.95)
    assert "indistinguishable" not in render_table(ranking)


def test_recommend_option_needs_the_resamples(tmp_path: Path):
    get_plugin_manager().hook.register_commands(cli=cli)
    base = ["recommend", "--dataset", str(tmp_path), "--model", "timm:x", "--current", "x"]
    out = CliRunner().invoke(cli, [*base, "--confidence", "0", "--fail-only-if-confident",
                                   "0.9"])
    assert out.exit_code == 2 and "needs the confidence resamples" in out.output
    out = CliRunner().invoke(cli, [*base, "--fail-only-if-confident", "1.5"])
    assert out.exit_code == 2 and "probability" in out.output


def test_default_replicates_from_the_environment(monkeypatch):
    from zoosel.confidence import DEFAULT_REPLICATES, default_replicates
    from zoosel.errors import UsageError

    monkeypatch.delenv("ZOOSEL_CONFIDENCE", raising=False)
    assert default_replicates() == DEFAULT_REPLICATES == 50
    monkeypatch.setenv("ZOOSEL_CONFIDENCE", "0")
    assert default_replicates() == 0
    monkeypatch.setenv("ZOOSEL_CONFIDENCE", "many")
    with pytest.raises(UsageError, match="ZOOSEL_CONFIDENCE"):
        default_replicates()


def test_recommend_reports_how_sure_it_is(example, tmp_path):
    get_plugin_manager().hook.register_commands(cli=cli)
    zoo, data = example
    report = tmp_path / "verdict.json"
    args = ["recommend", "--dataset", str(data), "--local-dir", str(zoo), "--per-class", "6",
            "--cache-dir", str(tmp_path / "cache"), "-q", "--current", "resnet-a",
            "--confidence", "10", "--json", str(report)]
    strict = CliRunner().invoke(cli, args)
    verdict = json.loads(report.read_text())
    assert verdict["p_worse"] is not None and 0.0 <= verdict["p_worse"] <= 1.0
    assert verdict["ranking"]["confidence"]["replicates"] == 10
    if verdict["current"] != verdict["recommended"]:
        assert f"in {verdict['p_worse']:.0%} of the resamples" in strict.output
    lenient = CliRunner().invoke(cli, [*args, "--fail-only-if-confident", "1.0"])
    again = json.loads(report.read_text())
    assert again["p_worse"] == verdict["p_worse"]  # seeded: the same resamples
    expected = 1 if again["gap"] > 0 and again["p_worse"] >= 1.0 else 0
    assert lenient.exit_code == expected, lenient.output
