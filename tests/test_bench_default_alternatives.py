"""bench_default_alternatives.py: the listwise fit against finite differences and a
hand-worked case, and the nested choice of a protocol by hand."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from zoosel.bench import joint
from zoosel.bench.combination import Combination

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_default_alternatives as A  # noqa: E402

# On task a sfda is right and logme puts m2 first (loss: regret 50 points + 2 trials); on
# b and c logme is right and sfda puts m1 first (regret 1 point + 2 trials).
ACC_A = {"m1": 0.9, "m2": 0.4, "m3": 0.3}
ACC_BC = {"m1": 0.59, "m2": 0.6, "m3": 0.2}
SFDA = {"m1": 3.0, "m2": 2.0, "m3": 1.0}
LOGME = {"m1": 2.0, "m2": 3.0, "m3": 1.0}


def _build(name: str) -> joint.Build:
    tasks = {task: {"5-shot": {"accuracy": dict(acc), "scores": {"sfda": dict(SFDA),
                                                                  "logme": dict(LOGME)}}}
             for task, acc in (("a", ACC_A), ("b", ACC_BC), ("c", ACC_BC))}
    return joint.build_from_results({"tasks": tasks}, name)


def test_listwise_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(4, 5, 3))
    valid = np.ones((4, 5), dtype=bool)
    valid[1, 3:] = False  # a target with 3 members, padded
    q = rng.random((4, 5)) * valid
    q /= q.sum(axis=1, keepdims=True)
    share = np.array([0.1, 0.2, 0.3, 0.4])
    f = A.listwise_objective(Z, valid, q, share, lam=0.7)
    w = np.array([0.3, 1.2, 0.5])
    _, grad = f(w)
    eps = 1e-6
    numeric = [(f(w + eps * e)[0] - f(w - eps * e)[0]) / (2 * eps) for e in np.eye(3)]
    assert grad == pytest.approx(numeric, rel=1e-5, abs=1e-8)
    # the loss at w by hand: cross-entropy of each target, weighted, and the penalty
    s = Z @ w
    ce = []
    for t in range(4):
        x = s[t][valid[t]]
        log_p = x - math.log(np.exp(x).sum())
        ce.append(-(q[t][valid[t]] * log_p).sum())
    penalty = 0.35 * ((w - w.mean()) ** 2).sum() + 0.5 * A.RIDGE * (w ** 2).sum()
    assert f(w)[0] == pytest.approx(float(share @ np.array(ce)) + penalty)


def test_listwise_weights_by_hand():
    # score 0 orders the members as accuracy does, score 1 the other way round: the
    # non-negative fit keeps the first and sets the second to 0; with a strong pull to
    # equal weights both are nearly equal.
    acc = np.array([[0.9, 0.5, 0.1]])
    Z = np.stack([np.array([[1.0, 0.0, -1.0]]), np.array([[-1.0, 0.0, 1.0]])], axis=2)
    valid = np.ones((1, 3), dtype=bool)
    w = A.fit_weights(Z, valid, acc, np.ones(1), lam=0.0, tau=0.1)
    assert w[0] > 1.0 and w[1] == 0.0
    shrunk = A.fit_weights(Z, valid, acc, np.ones(1), lam=1e4, tau=0.1)
    assert shrunk[1] > 0 and shrunk[0] - shrunk[1] < 1e-3


def test_design_matches_the_weighted_ranker():
    builds = [_build("std")]
    builds[0].tasks["b"]["5-shot"]["scores"]["logme"].pop("m3")  # a missing value
    targets = joint.merge(builds, ["sfda", "logme"])
    lw = A.Listwise(targets, lambdas=(0.0,), taus=(0.1,))
    w = np.array([0.3, 0.7])
    ranker = lw.ranker(w)
    for i, (name, regime) in enumerate(lw.keys):
        scores = ranker.scores(targets.tasks[name][regime])
        assert scores == pytest.approx(
            {m: float(lw.Z[i, j] @ w) for j, m in enumerate(lw.members[i])})
    assert not lw.has[lw.keys.index(("std/b", "5-shot")), 2, 1]


def test_nested_choice_of_a_protocol_by_hand():
    builds = [_build("std"), _build("div")]
    targets = joint.merge(builds, ["sfda", "logme"])
    sfda = A.Fixed(targets, "sfda", Combination("z", ("sfda",)), "")
    logme = A.Fixed(targets, "logme", Combination("z", ("logme",)), "")
    chosen, inner = A.nested([sfda, logme], targets)
    # sfda's loss: 0 + 1 on a, 1 + 2 on b and c; logme's: 50 + 2 on a, 0 + 1 on b, c.
    # Outer a, inner over b and c: sfda 3, logme 1 -> logme; outer b (or c), inner over a
    # and the other: sfda (1 + 3) / 2 = 2, logme (52 + 1) / 2 = 26.5 -> sfda.
    assert inner["a"] == pytest.approx({"sfda": 3.0, "logme": 1.0})
    assert inner["b"] == pytest.approx({"sfda": 2.0, "logme": 26.5})
    assert {g: p.name for g, p in chosen.items()} == {"a": "logme", "b": "sfda", "c": "sfda"}


def test_search_protocol_reproduces_the_joint_fit():
    builds = [_build("std"), _build("div")]
    targets = joint.merge(builds, ["sfda", "logme"])
    candidates = targets.candidates()
    table = A.combination.loss_table(targets.tasks, targets.regimes, candidates)
    search = A.Search(targets, "search", candidates, table, "")
    fit = joint.fit_pool(builds, ["sfda", "logme"])
    every = frozenset("abc")
    for held, pick in fit["picks"].items():
        assert search.fit(every - {held})["5-shot"] == pick


def test_in_sample_bound_by_hand():
    builds = [_build("std"), _build("div")]
    targets = joint.merge(builds, ["sfda", "logme"])
    table = A.combination.loss_table(targets.tasks, targets.regimes, targets.candidates())
    per_task = joint.pooled_metrics(
        builds, {b.name: joint.reference_rows(b, set()) for b in builds})
    bound = A.in_sample(targets, table, per_task, ["sfda", "logme"])
    # Means over a, b, c: sfda regret (0 + 1 + 1) / 3, trials (1 + 2 + 2) / 3; logme
    # regret 50 / 3, trials (2 + 1 + 1) / 3; either average ties m1 and m2 everywhere:
    # regret (25 + 0.5 + 0.5) / 3, trials 1.5. None beats both; sfda's worst margin is
    # its trials against logme's, 4/3 - 5/3.
    assert bound["n_candidates"] == 4
    assert bound["all"]["beating"] == []
    assert bound["all"]["best"] == "sfda"
    assert bound["all"]["best_worst_margin"] == pytest.approx(-1 / 3)
    assert bound["all"]["best_worst_cell"] == "5-shot/trials_to_best/logme"


def test_run_and_report_on_two_small_builds():
    builds = [_build("std"), _build("div")]
    record = A.run(builds, n_resamples=20, say=lambda s: None)
    rows = record["rows"]
    assert set(rows) == {"search-3", "search-4", "per-regime", "single", "top3-objective",
                         "wtau-objective", "listwise", "z-all", "rank-all", "nested"}
    # search-3 picks logme for a and sfda for b and c (as `bench fit`): held out, a costs
    # 50 + 2, b and c 1 + 2 each, in both builds
    assert rows["search-3"]["objective"] == pytest.approx((52 + 3 + 3) / 3)
    assert rows["search-3"]["picks"] == {"sfda": 2, "logme": 1}
    regret = record["aggregates"]["5-shot"]["search-3"]["top1_regret"]["mean"]
    assert regret == pytest.approx(52 / 3)
    assert record["comparators"] == ["logme", "sfda", "blind:static"]
    text = A.markdown(record, "cmd", "machine", "1 2 3", 1.0)
    assert "| `search-3` | 17.3 [" in text and "## Nested choice of the protocol" in text
    assert "## In-sample bound" in text
