"""The default fitted on several benchmark builds at once (`zoosel bench fit`), checked on
a hand-worked case of two builds with the same three tasks."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from zoosel.bench import joint
from zoosel.cli import bench_commands, cli  # noqa: F401  (registers `bench`)
from zoosel.errors import UsageError

# On task a sfda is right and logme puts m2 first (regret 50 points, 2 trials); on b and
# c logme is right and sfda puts m1 first (regret 1 point, 2 trials).
ACC_A = {"m1": 0.9, "m2": 0.4, "m3": 0.3}
ACC_BC = {"m1": 0.59, "m2": 0.6, "m3": 0.2}
SFDA = {"m1": 3.0, "m2": 2.0, "m3": 1.0}
LOGME = {"m1": 2.0, "m2": 3.0, "m3": 1.0}


def _results(profile: str) -> dict:
    tasks = {task: {"5-shot": {"accuracy": dict(acc), "scores": {"sfda": dict(SFDA),
                                                                  "logme": dict(LOGME)},
                               "cost": {"sfda": 1.0, "logme": 2.0}}}
             for task, acc in (("a", ACC_A), ("b", ACC_BC), ("c", ACC_BC))}
    return {"generalist": "", "tasks": tasks, "meta": {"profile": profile}}


def _write(tmp_path, profile: str) -> str:
    path = tmp_path / profile / "results.json"
    path.parent.mkdir()
    path.write_text(json.dumps(_results(profile)))
    return str(path)


def _agg(record, pool, scope, row, metric):
    return record["pools"][pool]["scopes"][scope]["aggregates"]["5-shot"][row][metric]["mean"]


def test_joint_fit_by_hand():
    builds = [joint.build_from_results(_results(n), n) for n in ("std", "div")]
    record = joint.fit_builds(builds, ["sfda,logme"], n_resamples=50)
    fit = record["pools"]["sfda,logme"]
    # Pairs of both builds are alike; per fold (tasks of both builds held out together):
    # held-out a: on b, c sfda 3, logme 1, both averages (m1 and m2 tie first: regret
    # 0.5, 1.5 trials) 2 -> logme; held-out b or c: on a and the other, sfda (1 + 3) / 2,
    # logme (52 + 1) / 2, the averages (26.5 + 2) / 2 -> sfda. Every pair: sfda.
    assert fit["picks"] == {"a": "logme", "b": "sfda", "c": "sfda"}
    assert fit["single_picks"] == fit["picks"] and fit["fit_all"] == "sfda"
    assert fit["n_candidates"] == 4 and fit["masked"] == {"std": [], "div": []}
    # loto:consensus on std: regret 50 (a), 1 (b), 1 (c); 2 trials each.
    assert _agg(record, "sfda,logme", "std", "loto:consensus", "top1_regret") == \
        pytest.approx(52 / 3)
    assert _agg(record, "sfda,logme", "std", "loto:consensus", "trials_to_best") == 2.0
    # blind:static puts m2 first on a (mean of b, c) and m1 on b and c: regret 50, 1, 1.
    assert _agg(record, "sfda,logme", "std", "blind:static", "top1_regret") == \
        pytest.approx(52 / 3)
    # the in-sample fit (sfda) and the pooled scope, where both builds agree
    assert _agg(record, "sfda,logme", "std", "fit:consensus", "top1_regret") == \
        pytest.approx(2 / 3)
    assert _agg(record, "sfda,logme", joint.ALL, "loto:consensus", "top1_regret") == \
        pytest.approx(52 / 3)
    margins = fit["scopes"]["div"]["verdict"]["margins"]["5-shot"]["top1_regret"]
    assert margins["sfda"]["mean"] == pytest.approx(2 / 3 - 52 / 3)
    assert set(margins) == {"blind:static", "loto:single", "sfda", "logme"}


def test_a_score_masked_on_one_build():
    builds = [joint.build_from_results(_results("std"), "std", exclude=["logme"]),
              joint.build_from_results(_results("div"), "div")]
    record = joint.fit_builds(builds, ["sfda,logme"], n_resamples=50)
    fit = record["pools"]["sfda,logme"]
    assert fit["masked"] == {"std": ["logme"], "div": []}
    assert fit["n_candidates"] == 3  # logme alone cannot rank std's pairs
    # On std an average is sfda alone. Held-out a: std sfda 3 = average 3; div sfda 3,
    # average 2: the average (a tie between z and rank, broken by name). Held-out b, c:
    # std 2 = 2; div sfda 2, average 14.25: sfda.
    assert fit["picks"] == {"a": "rank(sfda + logme)", "b": "sfda", "c": "sfda"}
    # ... which ranks std's a as sfda does (regret 0) and div's a by the tie (25)
    assert _agg(record, "sfda,logme", "std", "loto:consensus", "top1_regret") == \
        pytest.approx(2 / 3)
    assert _agg(record, "sfda,logme", "div", "loto:consensus", "top1_regret") == \
        pytest.approx(27 / 3)
    assert "logme" not in fit["scopes"]["std"]["aggregates"]["5-shot"]
    assert "logme" not in fit["scopes"][joint.ALL]["aggregates"]["5-shot"]
    with pytest.raises(UsageError, match="no score knn"):
        joint.build_from_results(_results("std"), "std", exclude=["knn"])


def _versioned(profile: str, **versions: str) -> dict:
    return {**_results(profile), "scorer_versions": versions}


def _installed(name: str) -> str:
    import zoosel

    return zoosel.list_scorers()[name].version


def test_a_stale_score_is_left_out_as_an_exclusion_would():
    now = _installed("sfda")
    build = joint.build_from_results(_versioned("std", sfda="0", logme=_installed("logme")),
                                     "std")
    assert build.stale == {"sfda": f"results have version 0, installed {now}"}
    assert build.versions_recorded and build.excluded == ()
    assert build.versions_note == f"left out: sfda (results have version 0, installed {now})"
    excluded = joint.build_from_results(_results("std"), "std", exclude=["sfda"])
    assert build.tasks == excluded.tasks
    assert all("sfda" not in e["scores"] for r in build.tasks.values() for e in r.values())
    # explicitly excluded as well: no error, left out once
    both = joint.build_from_results(_versioned("std", sfda="0"), "std", exclude=["sfda"])
    assert both.tasks == excluded.tasks and both.excluded == ("sfda",)
    current = joint.build_from_results(_versioned("std", sfda=now, logme=_installed("logme")),
                                       "std")
    assert current.stale == {} and current.tasks == joint.build_from_results(
        _results("std"), "std").tasks
    assert current.versions_note == "every score at the installed scorer's version"


def test_results_without_versions_keep_every_score():
    build = joint.build_from_results(_results("std"), "std")
    assert not build.versions_recorded and build.stale == {}
    assert build.versions_note == "versions not recorded"
    assert set(build.tasks["a"]["5-shot"]["scores"]) == {"sfda", "logme"}
    # recorded for some scores only: the others are kept and named
    part = joint.build_from_results(_versioned("std", logme=_installed("logme")), "std")
    assert part.stale == {} and set(part.tasks["a"]["5-shot"]["scores"]) == {"sfda", "logme"}
    assert part.versions_note == "version not recorded for sfda"
    # a score no installed scorer has is kept and named
    other = _versioned("std", sfda=_installed("sfda"), logme="1", mine="3")
    other["tasks"]["a"]["5-shot"]["scores"]["mine"] = dict(SFDA)
    assert "not installed here: mine" in joint.build_from_results(other, "std").versions_note


def test_versions_with_options_and_merging():
    import zoosel
    from zoosel.bench.results_file import installed_version, merge_versions

    probe = zoosel.list_scorers()["linear_probe"]
    tagged = probe.with_options({"solver": "logistic"}).version
    assert tagged == f"{probe.version}+solver=logistic"
    assert installed_version(probe, tagged) == tagged  # the same setting: current
    assert installed_version(probe, "0+solver=logistic") == tagged  # stale
    assert installed_version(probe, "0+solver=nope") == probe.version
    assert installed_version(probe, "0") == probe.version
    assert merge_versions([{"a": "1", "b": "2"}, {"a": "1", "b": "2"}]) == {"a": "1", "b": "2"}
    assert merge_versions([{"a": "1", "b": "2"}, {"a": "1"}]) == {"a": "1"}
    assert merge_versions([{"a": "2"}, {"a": "1"}]) == {"a": "mixed: 1, 2"}
    assert merge_versions([{"a": "1"}, None]) == {} and merge_versions([]) == {}


def test_declared_same_values_versions_are_not_stale():
    from dataclasses import replace

    import zoosel
    from zoosel.bench.results_file import check_versions, same_values

    probe = replace(zoosel.list_scorers()["linear_probe"], version="3", same_values_as=("2",))
    assert same_values(probe, "2", "3") and same_values(probe, "3", "3")
    assert not same_values(probe, "1", "3") and not same_values(probe, "0", "3")
    tagged = probe.with_options({"solver": "logistic"})  # options carry the declaration
    assert tagged.same_values_as == ("2",)
    assert same_values(tagged, "2+solver=logistic", tagged.version)
    assert not same_values(tagged, "2", tagged.version)  # another setting's values
    results = _versioned("std", sfda="1", logme="1")
    sfda = replace(zoosel.list_scorers()["sfda"], version="2", same_values_as=("1",))
    logme = replace(zoosel.list_scorers()["logme"], version="2")
    check = check_versions(results, {"sfda": sfda, "logme": logme})
    assert check.stale == {"logme": ("1", "2")}


def test_cli_fit_says_what_it_left_out(tmp_path):
    std = tmp_path / "std.json"
    std.write_text(json.dumps(_versioned("std", sfda="0", logme=_installed("logme"))))
    div = _write(tmp_path, "div")
    out = tmp_path / "joint"
    result = CliRunner().invoke(cli, ["bench", "fit", "--results", f"std={std}", "--results",
                                      div, "--pool", "sfda,logme", "--out", str(out),
                                      "--resamples", "20"])
    assert result.exit_code == 0, result.output
    reason = f"sfda (results have version 0, installed {_installed('sfda')})"
    assert f"std: left out: {reason}" in result.output
    assert ("div: versions not recorded (stale scores cannot be told apart; --exclude "
            "div:SCORE leaves one out)") in result.output
    record = json.loads((out / "fit.json").read_text())
    assert record["builds"][0]["stale"] == {"sfda": reason[6:-1]}
    assert record["builds"][0]["excluded"] == [] and record["builds"][1]["stale"] == {}
    assert record["pools"]["sfda,logme"]["masked"] == {"std": ["sfda"], "div": []}
    text = (out / "report.md").read_text()
    assert f"| {reason} | recorded |" in text and "| none | not recorded |" in text


def test_named_pools_and_errors():
    assert joint.resolve_pool("features")[1] == joint.FEATURE_POOL
    assert joint.resolve_pool("features+grad")[1][-1] == "linft_grad"
    assert "nleep" in joint.FEATURE_POOL and "linft_grad" not in joint.FEATURE_POOL
    assert joint.resolve_pool("sfda, knn") == ("sfda,knn", ("sfda", "knn"))
    with pytest.raises(UsageError, match="unknown pool"):
        joint.resolve_pool("cheap")
    builds = [joint.build_from_results(_results("x"), "x")] * 2
    with pytest.raises(UsageError, match="share a name"):
        joint.fit_builds(builds)
    two = _results("x")
    del two["tasks"]["c"]
    with pytest.raises(UsageError, match="at least 3"):
        joint.fit_builds([joint.build_from_results(two, "x")], ["sfda,logme"])


def test_cli_fit_writes_the_report_and_json(tmp_path):
    std, div = _write(tmp_path, "std"), _write(tmp_path, "div")
    out = tmp_path / "joint"
    result = CliRunner().invoke(cli, ["bench", "fit", "--results", std, "--results",
                                      f"other={div}", "--pool", "sfda,logme", "--out",
                                      str(out), "--resamples", "50"])
    assert result.exit_code == 0, result.output
    assert "sfda,logme: sfda (single score: sfda)" in result.output
    record = json.loads((out / "fit.json").read_text())
    assert [b["name"] for b in record["builds"]] == ["std", "other"]
    assert record["pools"]["sfda,logme"]["picks"] == {"a": "logme", "b": "sfda", "c": "sfda"}
    text = (out / "report.md").read_text()
    assert f"--results std={std} --results other={div}" in record["command"]
    assert record["command"] in text and "| a | `logme` | `logme` |" in text
    for heading in ("### sfda,logme: std", "### sfda,logme: other",
                    f"### sfda,logme: {joint.ALL}"):
        assert heading in text
    printed = CliRunner().invoke(cli, ["bench", "fit", "--results", std, "--results",
                                       f"other={div}", "--pool", "sfda,logme",
                                       "--resamples", "50"])
    assert printed.exit_code == 0 and printed.output.startswith("# Default selector")


@pytest.mark.parametrize(("content", "args", "message"), [
    (None, [], "does not exist"),
    ("{not json", [], "not valid JSON"),
    ("[1, 2]", [], "no 'tasks'"),
    ("ok", ["--exclude", "std"], "expected BUILD:SCORE"),
    ("ok", ["--exclude", "nope:sfda"], "no build named nope"),
    ("ok", ["--exclude", "std:knn"], "no score knn"),
    ("ok", ["--pool", "cheap"], "unknown pool"),
])
def test_cli_fit_bad_input(tmp_path, content, args, message):
    good = _write(tmp_path, "std")
    other = tmp_path / "other.json"
    if content == "ok":
        other = _write(tmp_path, "div")
    elif content is not None:
        other.write_text(content)
    result = CliRunner().invoke(cli, ["bench", "fit", "--results", good, "--results",
                                      str(other), *args])
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output


def test_committed_joint_fit_is_reproduced():
    """benchmarks/results/selection-joint was written from the committed builds with this
    code (rerun its command, in its BUILD.md, when a build's results change)."""
    from pathlib import Path

    root = Path(__file__).parent.parent / "benchmarks/results"
    committed = json.loads((root / "selection-joint/fit.json").read_text())
    builds = joint.load_builds(
        [(b["name"], root.parent.parent / b["source"]) for b in committed["builds"]])
    # NLEEP's values in the standard build predate its fix: the versions recorded there
    # leave it out, as --exclude standard:nleep did
    assert "nleep" in {b.name: b.stale for b in builds}["standard"]
    assert all(b.versions_recorded for b in builds)
    for label, fit in committed["pools"].items():
        again = joint.fit_pool(builds, joint.resolve_pool(label)[1])
        assert again["fit_all"].label == fit["fit_all"]
        assert {t: c.label for t, c in again["picks"].items()} == fit["picks"]
        assert {t: c.label for t, c in again["single_picks"].items()} == fit["single_picks"]


def test_shipped_default_is_the_committed_joint_fit():
    """zoosel's default sort is the joint fit of the feature-only pool on every committed
    build (the constants in zoosel.scorers.consensus follow benchmarks/results/selection-joint)."""
    from pathlib import Path

    from zoosel.bench.combination import Combination
    from zoosel.scorers import consensus

    root = Path(__file__).parent.parent / "benchmarks/results"
    committed = json.loads((root / "selection-joint/fit.json").read_text())
    shipped = Combination(consensus.METHOD, consensus.COMPONENTS).label
    assert committed["pools"]["features"]["fit_all"] == shipped


def test_one_build_fits_as_the_report_does():
    """With one build the joint fit is the single-build fit of `zoosel bench report`."""
    import copy

    from zoosel.bench import combination

    results = _results("std")
    results["tasks"]["b"]["5-shot"]["scores"]["sfda"] = dict(LOGME)  # break the symmetry
    fit = joint.fit_pool([joint.build_from_results(results, "std")], ["sfda", "logme"])
    single = combination.add_combination_rows(copy.deepcopy(results))
    assert {t: c.label for t, c in fit["picks"].items()} == single["picks"]
    assert {t: c.label for t, c in fit["single_picks"].items()} == single["single_picks"]
    assert fit["fit_all"].label == single["fit_all"]


def test_malformed_results_are_refused_with_a_message():
    bad = _results("std")
    bad["tasks"]["a"] = ["5-shot"]
    with pytest.raises(UsageError, match="not a mapping of regimes"):
        joint.build_from_results(bad, "std")
    bad = _results("std")
    del bad["tasks"]["a"]["5-shot"]["accuracy"]
    with pytest.raises(UsageError, match="has no 'accuracy'"):
        joint.build_from_results(bad, "std")
    bad = {**_results("std"), "scorer_versions": ["sfda"]}
    with pytest.raises(UsageError, match="must map score names to version strings"):
        joint.build_from_results(bad, "std")
    odd = _results("std")
    odd["tasks"]["a"]["5-shot"]["scores"]["sfda"]["m3"] = None  # NaN written as null
    build = joint.build_from_results(odd, "std")
    assert build.tasks["a"]["5-shot"]["scores"]["sfda"] == {"m1": 3.0, "m2": 2.0}


def test_merged_targets_and_pooled_reference_rows_by_hand():
    builds = [joint.build_from_results(_results("std"), "std", exclude=["logme"]),
              joint.build_from_results(_results("div"), "div")]
    t = joint.merge(builds, ["sfda", "logme", "knn"])
    assert t.available == ["sfda", "logme"] and t.masked == {"std": {"logme"}, "div": set()}
    assert t.groups["std/a"] == t.groups["div/a"] == "a" and t.builds["div/b"] == "div"
    assert "logme" not in t.tasks["std/a"]["5-shot"]["scores"]
    assert [c.label for c in t.candidates(2)] == ["sfda", "z(sfda + logme)",
                                                  "rank(sfda + logme)"]
    rows = {b.name: joint.reference_rows(b, t.masked[b.name]) for b in builds}
    assert "logme" not in rows["std"]["a"]["5-shot"] and "logme" in rows["div"]["a"]["5-shot"]
    per = joint.pooled_metrics(builds, rows)
    # sfda is right on a (regret 0, 1 trial) and puts m1 first on b (regret 1, 2 trials) in
    # both builds; logme, on div only, puts m2 first on a (regret 50 points)
    assert per["a"]["5-shot"]["sfda"] == pytest.approx({"top1_regret": 0.0,
                                                        "trials_to_best": 1.0})
    assert per["b"]["5-shot"]["sfda"] == pytest.approx({"top1_regret": 1.0,
                                                        "trials_to_best": 2.0})
    assert "logme" not in per["a"]["5-shot"]  # only where every build has the row
    only_div = joint.pooled_metrics(builds[1:], {"div": rows["div"]})
    assert only_div["a"]["5-shot"]["logme"]["top1_regret"] == pytest.approx(50.0)
