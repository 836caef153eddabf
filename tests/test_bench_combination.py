"""The default selector, the dataset-blind baselines and the leave-one-target-out fit,
checked on hand-worked cases."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from zoosel.bench import baselines as B
from zoosel.bench import combination as C
from zoosel.bench import metrics as M
from zoosel.bench import report as R
from zoosel.cli import bench_commands, cli  # noqa: F401  (registers `bench`)
from zoosel.scorers import consensus

MODELS = ("m0", "m1", "m2", "m3")
ACC = {"m0": 0.9, "m1": 0.8, "m2": 0.7, "m3": 0.6}
PERFECT = {"m0": 4.0, "m1": 3.0, "m2": 2.0, "m3": 1.0}  # top pick m0: regret 0, 1 trial
REVERSED = {"m0": 1.0, "m1": 2.0, "m2": 3.0, "m3": 4.0}  # m3 first: regret 30, 4 trials
M1_FIRST = {"m0": 2.0, "m1": 4.0, "m2": 3.0, "m3": 1.0}  # m1, m2, m0: regret 10, 3 trials
M1_THEN_M0 = {"m0": 3.0, "m1": 4.0, "m2": 2.0, "m3": 1.0}  # m1, m0: regret 10, 2 trials


# --------------------------------------------------------------------------- the combination


def test_combine_z_and_rank_by_hand():
    pool = {"a": {"s1": 1.0, "s2": 10.0}, "b": {"s1": 2.0, "s2": 30.0},
            "c": {"s1": 3.0, "s2": 20.0}}
    # s1: mean 2, population std sqrt(2/3); s2: mean 20, std sqrt(200/3).
    z1 = 1 / math.sqrt(2 / 3)
    z = consensus.combine(pool, "z")
    assert z == pytest.approx({"a": -z1, "b": z1 / 2, "c": z1 / 2})
    # rank positions: s1 -> 0, 0.5, 1; s2 -> 0, 1, 0.5
    assert consensus.combine(pool, "rank") == pytest.approx({"a": 0.0, "b": 0.75, "c": 0.75})
    # only the components asked for
    assert consensus.combine(pool, "rank", ("s2",)) == pytest.approx(
        {"a": 0.0, "b": 1.0, "c": 0.5})


def test_combine_missing_tied_and_constant_components():
    pool = {"a": {"s1": 1.0, "s2": math.nan}, "b": {"s1": 1.0, "s2": 5.0},
            "c": {"s1": 3.0, "s2": 5.0}, "d": {}}
    ranks = consensus.combine(pool, "rank")
    # s1: a and b tie on the lowest two ranks (positions 0 and 0.5 -> 0.25 each), c 1;
    # s2: b and c equal over the two that have it -> 0.5 each; a has no s2; d nothing.
    assert ranks == pytest.approx({"a": 0.25, "b": (0.25 + 0.5) / 2, "c": (1.0 + 0.5) / 2})
    zs = consensus.combine(pool, "z")
    assert zs["b"] == pytest.approx(zs["a"] / 2) and "d" not in zs  # s2 constant: z 0
    assert consensus.combine({"only": {"s1": 2.0}}, "rank") == {"only": 1.0}
    assert consensus.combine({"only": {"s1": 2.0}}, "z") == {"only": 0.0}


def test_consensus_is_the_registered_default():
    import zoosel
    from zoosel.api import DEFAULT_SCORERS, select_scorers

    scorer = zoosel.list_scorers()[consensus.NAME]
    assert scorer.pool_normalize is not None and DEFAULT_SCORERS[0] == consensus.NAME
    assert next(iter(select_scorers(None))) == consensus.NAME  # the default sort
    assert set(consensus.COMPONENTS) <= set(C.POOL)


def test_consensus_scorer_ranks_a_pool_as_its_components_say():
    """The scorer's pool step on real features equals the z-scores of the component
    scores computed one by one."""
    import zoosel
    from zoosel.types import ScoreInputs

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 8)
    pool, expected = {}, {}
    for i, strength in enumerate((0.0, 0.8, 2.0)):
        means = rng.normal(size=(3, 12))
        features = rng.normal(size=(24, 12)) + strength * means[labels]
        inputs = ScoreInputs(labels=_tensor(labels), num_classes=3, features=_tensor(features))
        pool[f"m{i}"] = consensus.components(inputs)
        expected[f"m{i}"] = zoosel.score(features, labels, scorers=list(consensus.COMPONENTS))
    final = consensus.aggregate(pool)
    for name in consensus.COMPONENTS:
        column = np.array([expected[m][name] for m in sorted(expected)])
        assert [pool[m][name] for m in sorted(pool)] == pytest.approx(list(column))
    want = np.mean([(np.array([expected[m][n] for m in sorted(expected)])
                     - np.mean([expected[m][n] for m in expected]))
                    / np.std([expected[m][n] for m in expected])
                    for n in consensus.COMPONENTS], axis=0)
    assert [final[m] for m in sorted(final)] == pytest.approx(list(want))
    assert max(final, key=final.get) == "m2"  # the most separable features


def _counting_registry(monkeypatch, calls):
    """The registry with every consensus component wrapped to count its calls."""
    import dataclasses

    import zoosel.api

    registry = dict(zoosel.api.list_scorers())

    def counted(name, fn):
        def wrapper(inputs):
            calls[name] = calls.get(name, 0) + 1
            return fn(inputs)
        return wrapper

    for name in consensus.COMPONENTS:
        registry[name] = dataclasses.replace(registry[name],
                                             fn=counted(name, registry[name].fn))
    monkeypatch.setattr(zoosel.api, "list_scorers", lambda: registry)
    return registry


@pytest.mark.parametrize("order", [("consensus", "logme", "linft"),
                                   ("logme", "linft", "consensus")])
def test_components_are_computed_once_with_their_standalone_scores(monkeypatch, order):
    """In one scoring call, consensus and the standalone scores share each component's
    value: every component runs once, whatever the order, and the values are those of a
    call that scores each on its own."""
    from zoosel.engine.runner import score_arrays

    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), 10)
    features = rng.normal(size=(30, 16)) + 1.5 * rng.normal(size=(3, 16))[labels]
    calls: dict[str, int] = {}
    registry = _counting_registry(monkeypatch, calls)
    values, parts, _ = score_arrays({"features": features}, labels, 3,
                                    {name: registry[name] for name in order})
    assert calls == dict.fromkeys(consensus.COMPONENTS, 1)
    alone = {}
    for name in consensus.COMPONENTS:
        alone.update(score_arrays({"features": features}, labels, 3,
                                  {name: registry[name]})[0])
    assert parts["consensus"] == pytest.approx(alone)
    assert {k: values[k] for k in ("logme", "linft")} == pytest.approx(
        {k: alone[k] for k in ("logme", "linft")})


def test_scoring_one_feature_set_leaves_out_pool_relative_scores():
    import zoosel
    from zoosel.errors import UsageError

    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(2), 6)
    features = rng.normal(size=(12, 5))
    values = zoosel.score(features, labels)
    assert consensus.NAME not in values and "logme" in values
    assert consensus.NAME not in zoosel.score(features, labels, scorers=["all"])
    with pytest.raises(UsageError, match="zoosel select"):
        zoosel.score(features, labels, scorers=[consensus.NAME])


def _tensor(x):
    import torch

    return torch.as_tensor(x)


# --------------------------------------------------------------------------- the fit


def _task(sfda, logme, acc=ACC):
    return {"5-shot": {"accuracy": dict(acc), "scores": {"sfda": dict(sfda),
                                                          "logme": dict(logme)}}}


def _tasks():
    # sfda is right on A and B and reversed on C; logme the other way round.
    return {"A": _task(PERFECT, M1_FIRST), "B": _task(PERFECT, M1_THEN_M0),
            "C": _task(REVERSED, PERFECT)}


def test_loss_by_hand():
    entry = _tasks()["A"]["5-shot"]
    assert C.loss(entry, PERFECT) == 1.0
    assert C.loss(entry, REVERSED) == pytest.approx(30.0 + 4)
    assert C.loss(entry, M1_FIRST) == pytest.approx(10.0 + 3)
    assert C.loss(entry, M1_THEN_M0) == pytest.approx(10.0 + 2)


def test_leave_one_target_out_fit_by_hand():
    sfda, logme = C.Combination("z", ("sfda",)), C.Combination("z", ("logme",))
    picks, fitted = C.fit_loto(_tasks(), ["5-shot"], [sfda, logme])
    # held-out A: on B and C, sfda (1 + 34) / 2 = 17.5, logme (12 + 1) / 2 = 6.5
    # held-out B: on A and C, sfda 17.5, logme (13 + 1) / 2 = 7
    # held-out C: on A and B, sfda 1, logme (13 + 12) / 2 = 12.5
    assert picks == {"A": logme, "B": logme, "C": sfda}  # a fit that saw C: logme for C
    # every task: sfda (1 + 1 + 34) / 3 = 12, logme (13 + 12 + 1) / 3 = 8.67
    assert fitted == logme


def test_a_held_out_task_never_influences_its_own_pick():
    tasks = _tasks()
    picks, _ = C.fit_loto(tasks, ["5-shot"], C.combinations(["sfda", "logme"]))
    for held in tasks:
        changed = copy.deepcopy(tasks)
        entry = changed[held]["5-shot"]
        entry["accuracy"] = {m: 1.5 - a for m, a in ACC.items()}  # the reverse truth
        again, _ = C.fit_loto(changed, ["5-shot"], C.combinations(["sfda", "logme"]))
        assert again[held] == picks[held]


def test_combinations_and_labels():
    every = C.combinations(["a", "b", "c"], max_size=2, methods=("z", "rank"))
    labels = [c.label for c in every]
    assert labels == ["a", "b", "c", "z(a + b)", "z(a + c)", "z(b + c)", "rank(a + b)",
                      "rank(a + c)", "rank(b + c)"]


def test_combined_cost_counts_the_extraction_once():
    cost = {"sfda": 1.0, "logme": 2.5, "random": 0.9, "lfc": 1.1}
    # extraction = 0.9 (the cheapest); 1.0 + 2.5 - 0.9
    assert C.combined_cost(cost, ("sfda", "logme")) == pytest.approx(2.6)
    assert C.combined_cost(cost, ("sfda",)) == 1.0
    assert math.isnan(C.combined_cost(cost, ("knn",)))


def test_rows_added_with_the_fold_picks():
    results = {"generalist": "", "tasks": _tasks()}
    fit = C.add_combination_rows(results)
    assert fit["rows"] == [C.LOTO, C.LOTO_SINGLE]  # no shipped row: its components are missing
    assert set(fit["picks"]) == {"A", "B", "C"} and fit["single_picks"] == {
        "A": "logme", "B": "logme", "C": "sfda"}
    for task, label in fit["single_picks"].items():
        entry = results["tasks"][task]["5-shot"]
        assert entry["scores"][C.LOTO_SINGLE] == pytest.approx(
            consensus.z_scores(entry["scores"][label]))
    assert C.add_combination_rows({"tasks": dict(list(_tasks().items())[:2])}) == {}


# --------------------------------------------------------------------------- baselines


def _blind_results():
    tasks = {
        "A": {"5-shot": {"accuracy": {"x": 0.5, "y": 0.7}, "scores": {}, "cost": {}}},
        "B": {"5-shot": {"accuracy": {"x": 0.9, "y": 0.1}, "scores": {}}},
        "C": {"5-shot": {"accuracy": {"x": 0.2, "y": 0.4}, "scores": {}}},
    }
    zoo = [{"id": "x", "source_accuracy": 0.3, "params": 10},
           {"id": "y", "source_accuracy": 0.8, "params": None}]
    return {"tasks": tasks, "zoo": zoo}


def test_static_baseline_is_the_mean_on_the_other_tasks():
    results = _blind_results()
    names = B.add_blind_rows(results)
    assert names == [B.STATIC, B.SOURCE_ACCURACY, B.PARAMS]
    a = results["tasks"]["A"]["5-shot"]
    assert a["scores"][B.STATIC] == pytest.approx({"x": (0.9 + 0.2) / 2, "y": (0.1 + 0.4) / 2})
    assert results["tasks"]["C"]["5-shot"]["scores"][B.STATIC] == pytest.approx(
        {"x": 0.7, "y": 0.4})
    assert a["scores"][B.SOURCE_ACCURACY] == {"x": 0.3, "y": 0.8}
    assert a["scores"][B.PARAMS] == {"x": 10.0}  # y has no count
    assert a["cost"][B.STATIC] == 0.0 and "cost" not in results["tasks"]["B"]["5-shot"]


def test_margins_are_positive_when_better_than_the_reference():
    per_task = {
        "A": {"r": {"ref": {"spearman": 0.5, "trials_to_best": 4.0},
                    "s": {"spearman": 0.7, "trials_to_best": 1.0}}},
        "B": {"r": {"ref": {"spearman": 0.6, "trials_to_best": 2.0},
                    "s": {"spearman": 0.5, "trials_to_best": 3.0}}},
    }
    out = M.margins(per_task, "ref", metrics=("spearman", "trials_to_best"), n_resamples=50)
    assert set(out["r"]) == {"s"}
    assert out["r"]["s"]["spearman"]["mean"] == pytest.approx((0.2 - 0.1) / 2)
    assert out["r"]["s"]["trials_to_best"]["mean"] == pytest.approx((3.0 - 1.0) / 2)


def _per_task(static, good, regimes=("5-shot",)):
    return {t: {r: {B.STATIC: {"top1_regret": static[i], "trials_to_best": static[i]},
                    "good": {"top1_regret": good[i], "trials_to_best": good[i]}}
                for r in regimes} for i, t in enumerate("ABCD")}


def test_static_check_passes_only_when_a_leader_is_clearly_better():
    per_task = _per_task([5, 6, 7, 8], [1, 1, 2, 1])
    agg = M.aggregate(per_task, metrics=("top1_regret", "trials_to_best"), n_resamples=200)
    margin = M.margins(per_task, B.STATIC, metrics=("top1_regret", "trials_to_best"),
                       n_resamples=200)
    check = M.check_static_beaten(margin, agg, ["good"])
    assert check["passed"] is True and check["n_targets"] == 2
    assert check["per_target"]["5-shot/trials_to_best"]["leaders"] == ["good"]
    per_task = _per_task([1, 1, 2, 1], [5, 0, 7, 0])
    agg = M.aggregate(per_task, metrics=("top1_regret", "trials_to_best"), n_resamples=200)
    margin = M.margins(per_task, B.STATIC, metrics=("top1_regret", "trials_to_best"),
                       n_resamples=200)
    assert M.check_static_beaten(margin, agg, ["good"])["passed"] is False
    full = _per_task([5, 6, 7, 8], [1, 1, 2, 1], regimes=("full",))
    margin = M.margins(full, B.STATIC, metrics=("top1_regret",), n_resamples=20)
    assert M.check_static_beaten(margin, {}, ["good"])["passed"] is None  # no few-shot


def test_default_verdict_by_hand():
    per_task = _per_task([5, 6, 7, 8], [1, 1, 2, 1], regimes=("5-shot", "20-shot"))
    for regimes in per_task.values():
        for cells in regimes.values():
            cells["cand"] = {"top1_regret": 0.0, "trials_to_best": 1.0}
    verdict = M.default_verdict(per_task, "cand", ["good", B.STATIC], n_resamples=100)
    # trials: cand 1 vs good 1, 1, 2, 1 -> margin 0.25 on the mean, not above 0 on all tasks
    assert verdict["margins"]["5-shot"]["trials_to_best"]["good"]["mean"] == pytest.approx(0.25)
    assert verdict["beats_all"] is True and verdict["beats_all_clearly"] is False
    assert verdict["not_beaten"] == []
    verdict = M.default_verdict(per_task, "good", ["cand", B.STATIC], n_resamples=100)
    assert verdict["beats_all"] is False
    assert "5-shot/top1_regret/cand" in verdict["not_beaten"]


# --------------------------------------------------------------------------- the report


def _bench_results():
    rng = np.random.default_rng(1)
    tasks = {}
    models = [f"m{i}" for i in range(6)]
    for task in ("t1", "t2", "t3", "t4"):
        tasks[task] = {}
        for regime in ("5-shot", "20-shot"):
            acc = {m: float(rng.uniform(0.2, 0.9)) for m in models}
            scores = {s: {m: acc[m] + float(rng.normal(0, noise)) for m in models}
                      for s, noise in (("sfda", 0.05), ("logme", 0.1), ("lfc", 0.3))}
            tasks[task][regime] = {"accuracy": acc, "scores": scores,
                                   "cost": dict.fromkeys(scores, 1.0),
                                   "finetune_seconds": 2.0}
    zoo = [{"id": m, "arch": "resnet", "source_accuracy": 0.5 + 0.01 * i, "params": 100 + i}
           for i, m in enumerate(models)]
    return {"generalist": "m0", "tasks": tasks, "zoo": zoo}


def test_report_has_the_blind_rows_margins_and_fit(tmp_path):
    out = M.evaluate_benchmark(_bench_results(), n_resamples=100)
    assert out["derived_scores"] == [B.STATIC, B.SOURCE_ACCURACY, B.PARAMS, C.LOTO,
                                     C.LOTO_SINGLE]
    assert set(out["aggregates"]["5-shot"]) >= set(out["derived_scores"])
    assert B.STATIC not in out["margins"]["5-shot"] and "sfda" in out["margins"]["5-shot"]
    assert out["combination"]["verdict"]["regimes"] == ["5-shot", "20-shot"]
    text = R.blind_markdown(out)
    assert "## Dataset-blind baselines and the default selector" in text
    assert "| blind:static |" not in text.split("### The default")[0]  # not its own margin
    for row in ("| blind:params |", "| loto:consensus |", "| sfda |"):
        assert row in text
    head = R.headline_markdown(out)
    assert [line.split(" | ")[0] for line in head.splitlines()[2:10]] == [
        "| lfc", "| logme", "| sfda", *(f"| {s}" for s in out["derived_scores"])]
    cell = out["aggregates"]["5-shot"][B.STATIC]["trials_to_best"]
    assert f"{cell['mean']:.1f} [{cell['ci_low']:.1f}, {cell['ci_high']:.1f}]" in head


def test_report_again_from_results_json(tmp_path):
    first = R.write_report(M.evaluate_benchmark(_bench_results(), n_resamples=100),
                           tmp_path / "one")
    text = first["results.json"].read_text()
    result = CliRunner().invoke(cli, ["bench", "report", "--from-results",
                                      str(first["results.json"]), "--out",
                                      str(tmp_path / "two")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "two" / "results.json").read_text() == text  # same rows, no doubles
    assert (tmp_path / "two" / "report.md").read_text() == first["report.md"].read_text()
    assert json.loads(text)["settings"]["n_resamples"] == 100
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    result = CliRunner().invoke(cli, ["bench", "report", "--from-results", str(bad)])
    assert result.exit_code != 0 and "no 'tasks'" in result.output


def test_committed_benchmark_fit_is_reproduced():
    """The committed report was written with this code and names the default zoosel ships
    (rerun `zoosel bench report --from-results` when either moves; the default itself is
    the fit over every build: tests/test_bench_joint.py)."""
    from pathlib import Path

    path = Path(__file__).parent.parent / "benchmarks/results/selection/results.json"
    committed = json.loads(path.read_text())
    settings = committed["settings"]
    again = R._jsonable(M.evaluate_benchmark(committed, n_resamples=settings["n_resamples"],
                                             seed=settings["seed"], tol=settings["tol"]))
    assert again["combination"] == committed["combination"]
    assert again["derived_scores"] == committed["derived_scores"]
    fit = committed["combination"]
    assert fit["shipped"] == C.Combination(consensus.METHOD, consensus.COMPONENTS).label
    assert again["aggregates"]["5-shot"][C.LOTO] == committed["aggregates"]["5-shot"][C.LOTO]


# --------------------------------------------------------------------------- several builds

# Three members; on task a sfda is right and logme puts m2 first (regret 50, 2 trials:
# loss 52); on tasks b and c logme is right and sfda puts m1 first (regret 1, 2 trials:
# loss 3). A right pick costs 1 (no regret, 1 trial).
ACC_A = {"m1": 0.9, "m2": 0.4, "m3": 0.3}
ACC_BC = {"m1": 0.59, "m2": 0.6, "m3": 0.2}
M1_M2_M3 = {"m1": 3.0, "m2": 2.0, "m3": 1.0}
M2_M1_M3 = {"m1": 2.0, "m2": 3.0, "m3": 1.0}


def _two_builds():
    """Builds std and div with the same tasks a, b, c (one regime each)."""
    tasks, groups, builds = {}, {}, {}
    for build in ("std", "div"):
        for task, acc in (("a", ACC_A), ("b", ACC_BC), ("c", ACC_BC)):
            name = f"{build}/{task}"
            tasks[name] = {"5-shot": {"accuracy": dict(acc), "scores": {
                "sfda": dict(M1_M2_M3), "logme": dict(M2_M1_M3)}}}
            groups[name], builds[name] = task, build
    return tasks, groups, builds


def test_grouped_folds_hold_a_task_out_of_every_build_by_hand():
    tasks, groups, builds = _two_builds()
    sfda, logme = C.Combination("z", ("sfda",)), C.Combination("z", ("logme",))
    assert C.loss(tasks["std/a"]["5-shot"], M2_M1_M3) == pytest.approx(52.0)
    assert C.loss(tasks["std/b"]["5-shot"], M1_M2_M3) == pytest.approx(3.0)
    picks, fitted = C.fit_loto(tasks, ["5-shot"], [sfda, logme], groups=groups, builds=builds)
    # held-out a: trained on b, c of both builds: sfda 3, logme 1
    # held-out b: on a, c: sfda (1 + 3) / 2 = 2 in each build, logme (52 + 1) / 2 = 26.5
    # held-out c: the same as b
    assert picks == {"a": logme, "b": sfda, "c": sfda}
    # every task: sfda (1 + 3 + 3) / 3 = 2.33 in each build, logme (52 + 1 + 1) / 3 = 18
    assert fitted == sfda
    # A fold per target would leak: holding out div/a only, the fit still sees std/a:
    # sfda (7/3 + 3) / 2 = 2.67, logme (18 + 1) / 2 = 9.5, so div/a would get sfda.
    leaky, _ = C.fit_loto(tasks, ["5-shot"], [sfda, logme], builds=builds)
    assert leaky["div/a"] == sfda != picks["a"]


def test_builds_weigh_equally_whatever_their_number_of_targets():
    one, two = C.Combination("z", ("one",)), C.Combination("z", ("two",))
    # build X: three pairs where one costs 1 and two 2; build Y: one pair, 4 against 2.
    table = {(c, t, r): v for c, t, r, v in [
        (one, "X/a", "r1", 1.0), (one, "X/a", "r2", 1.0), (one, "X/a", "r3", 1.0),
        (one, "Y/a", "r1", 4.0),
        (two, "X/a", "r1", 2.0), (two, "X/a", "r2", 2.0), (two, "X/a", "r3", 2.0),
        (two, "Y/a", "r1", 2.0)]}
    # per pair: one (1 + 1 + 1 + 4) / 4 = 1.75 < two 2; per build: one (1 + 4) / 2 = 2.5
    # > two (2 + 2) / 2 = 2
    assert C.choose(table, [one, two], ["X/a", "Y/a"]) == one
    assert C.choose(table, [one, two], ["X/a", "Y/a"], {"X/a": "X", "Y/a": "Y"}) == two


def test_build_mean_weighs_builds_equally_by_hand():
    values = [("X/a", 1.0), ("X/b", 3.0), ("Y/a", 10.0)]
    builds = {"X/a": "X", "X/b": "X", "Y/a": "Y"}
    assert C.build_mean(values, builds) == pytest.approx((2.0 + 10.0) / 2)
    assert C.build_mean(values) == pytest.approx(14.0 / 3)
    assert math.isnan(C.build_mean([], builds))


def test_loss_table_with_another_objective():
    tasks = _tasks()
    sfda = C.Combination("z", ("sfda",))
    # top-1 regret alone: sfda is right on A and B, puts the worst first on C (30 points)
    table = C.loss_table(tasks, ["5-shot"], [sfda],
                         objective=lambda e, s, tol: C.loss(e, s, tol)
                         - C.expected_trials_to_best(e["accuracy"], s, tol))
    assert table == pytest.approx({(sfda, "A", "5-shot"): 0.0, (sfda, "B", "5-shot"): 0.0,
                                   (sfda, "C", "5-shot"): 30.0})


def test_weighted_z_average_by_hand():
    entry = {"accuracy": {"m1": 0.1, "m2": 0.2, "m3": 0.3},
             "scores": {"a": {"m1": 1.0, "m2": 2.0, "m3": 3.0},
                        "b": {"m1": 3.0, "m2": 1.0}}}
    # a: mean 2, population std sqrt(2/3): z = -1.2247, 0, 1.2247; b over m1, m2: +1, -1
    # (m3 lacks b: the pool mean, 0)
    w = C.Weighted((("a", 1.0), ("b", 2.0)))
    z = math.sqrt(1.5)
    assert w.scores(entry) == pytest.approx({"m1": -z + 2.0, "m2": -2.0, "m3": z})
    assert w.label == "z(0.33 a + 0.67 b)" and w.components == ("a", "b")
    only_b = C.Weighted((("a", 0.0), ("b", 1.0)))
    assert only_b.scores(entry) == pytest.approx({"m1": 1.0, "m2": -1.0})
    assert only_b.components == ("b",)
    # equal weights and no missing value: the order of the z-average
    full = {**entry, "scores": {**entry["scores"], "b": {"m1": 3.0, "m2": 1.0, "m3": 2.0}}}
    equal = C.Weighted((("a", 0.5), ("b", 0.5))).scores(full)
    mean = C.Combination("z", ("a", "b")).scores(full)
    assert equal == pytest.approx(mean)


def test_a_stale_measured_default_is_recomputed_and_stale_scores_decide_nothing():
    import zoosel

    tasks = {}
    for name, (sfda, logme, linft) in {"A": (PERFECT, M1_FIRST, M1_THEN_M0),
                                       "B": (M1_FIRST, PERFECT, PERFECT),
                                       "C": (REVERSED, PERFECT, M1_FIRST)}.items():
        scores = {"sfda": dict(sfda), "logme": dict(logme), "linft": dict(linft),
                  C.FITTED: dict(REVERSED),  # an earlier default's column
                  "lfc": dict(PERFECT)}  # the best row, but stale below
        tasks[name] = {"5-shot": {"accuracy": dict(ACC), "scores": scores}}
    installed = {s: zoosel.list_scorers()[s].version for s in ("sfda", "logme", "linft")}
    results = {"generalist": "", "tasks": tasks,
               "scorer_versions": {**installed, C.FITTED: "1", "lfc": "0"}}
    out = M.evaluate_benchmark(results, n_resamples=50)
    assert out["replaced_stale"] == [C.FITTED] and C.FITTED in out["derived_scores"]
    shipped = C.Combination(consensus.METHOD, consensus.COMPONENTS)
    for regimes in out["tasks"].values():
        entry = regimes["5-shot"]
        by_hand = consensus.combine(
            {m: {c: entry["scores"][c][m] for c in consensus.COMPONENTS} for m in ACC},
            consensus.METHOD)
        assert entry["scores"][C.FITTED] == pytest.approx(by_hand)
        assert entry["scores"][C.FITTED] == pytest.approx(shipped.scores(entry))
    verdict = out["combination"]["verdict"]
    compared = {n for cells in verdict["margins"].values() for per in cells.values()
                for n in per}
    assert "lfc" not in compared and "sfda" in compared  # a stale row is not a comparator
    assert results["tasks"]["A"]["5-shot"]["scores"][C.FITTED] == REVERSED  # input untouched
