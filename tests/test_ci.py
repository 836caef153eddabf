"""``zoosel recommend`` and the example GitHub Actions workflow, on the offline example."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from zoosel.ci import (
    EXIT_CODES,
    Verdict,
    evaluate,
    match_candidate,
    read_current_from,
)
from zoosel.cli import cli
from zoosel.cli import commands as _commands  # noqa: F401  (registers the commands)
from zoosel.errors import UsageError
from zoosel.plugins import get_plugin_manager
from zoosel.testing.counting import ForwardCounter
from zoosel.testing.factories import make_timm_model_dir
from zoosel.types import CandidateResult, DatasetSummary, Ranking, Skipped

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / "examples" / "github-actions" / "zoosel.yml"
GITHUB_DEFAULTS = {"RUNNER_TEMP", "GITHUB_WORKSPACE", "GITHUB_STEP_SUMMARY", "GITHUB_OUTPUT",
                   "RUNNER_OS", "HOME"}
PER_CLASS = "6"  # the example has 12 images per class: 6 keeps the tests quick

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", autouse=True)
def recommend_command():
    get_plugin_manager().hook.register_commands(cli=cli)
    assert "recommend" in cli.commands


# --- the workflow --------------------------------------------------------------------------


def _workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def _steps(doc: dict) -> list[dict]:
    return [step for job in doc["jobs"].values() for step in job["steps"]]


def _workflow_env(doc: dict) -> dict[str, str]:
    env = {k: str(v) for k, v in (doc.get("env") or {}).items()}
    for job in doc["jobs"].values():
        env.update({k: str(v) for k, v in (job.get("env") or {}).items()})
    return env


def _zoosel_commands(doc: dict) -> list[list[str]]:
    """The ``zoosel ...`` command lines the workflow runs, tokenised, variables unexpanded."""
    commands = []
    for step in _steps(doc):
        script = step.get("run", "")
        for line in re.sub(r"\\\n\s*", " ", script).splitlines():
            tokens = shlex.split(line)
            if tokens and tokens[0] == "zoosel":
                commands.append(tokens)
    return commands


def _expand(tokens: list[str], env: dict[str, str]) -> list[str]:
    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        assert name in env, f"the workflow's zoosel command uses ${name}, which it never sets"
        return env[name]

    return [re.sub(r"\$\{(\w+)\}|\$(\w+)", value, token) for token in tokens]


def test_workflow_has_the_steps_a_pipeline_needs():
    doc = _workflow()
    assert doc[True if True in doc else "on"]  # PyYAML reads the key `on` as True
    steps = _steps(doc)
    uses = [step.get("uses", "") for step in steps]
    assert any(u.startswith("actions/checkout@") for u in uses)
    assert any(u.startswith("actions/setup-python@") for u in uses)
    caches = [step["with"]["path"] for step in steps
              if step.get("uses", "").startswith("actions/cache@")]
    assert "${{ env.ZOOSEL_CACHE_DIR }}" in caches and "~/.cache/pip" in caches
    assert any("pip install ." in step.get("run", "") for step in steps)
    (recommend,) = [c for c in _zoosel_commands(doc) if c[1] == "recommend"]
    for option, variable in (("--dataset", "$ZOOSEL_DATASET"), ("--local-dir", "$ZOOSEL_ZOO"),
                             ("--current", "$ZOOSEL_CURRENT"), ("--margin", "$ZOOSEL_MARGIN"),
                             ("--cache-dir", "$ZOOSEL_CACHE_DIR")):
        assert recommend[recommend.index(option) + 1] == variable
    env = _workflow_env(doc)
    for command in _zoosel_commands(doc):
        assert "${{" not in " ".join(command)  # shell variables only: the test can run them
        _expand(command, {**env, **dict.fromkeys(GITHUB_DEFAULTS, "x")})


def _checkout(example: tuple[Path, Path], where: Path) -> tuple[Path, Path]:
    """A copy of the example at ``where`` as a fresh checkout has it: new modification
    times (a CI runner checks out to the same path every run)."""
    zoo, data = example
    shutil.rmtree(where, ignore_errors=True)
    shutil.copytree(zoo, where / "zoo", copy_function=shutil.copy)
    shutil.copytree(data, where / "data", copy_function=shutil.copy)
    return where / "zoo", where / "data"


@pytest.fixture(scope="module")
def ci(example, tmp_path_factory):
    """A first CI run of the workflow's command on a fresh checkout (fills the cache)."""
    root = tmp_path_factory.mktemp("ci")
    zoo, data = _checkout(example, root / "checkout")
    env = {"ZOOSEL_DATASET": str(data), "ZOOSEL_ZOO": str(zoo),
           "ZOOSEL_CACHE_DIR": str(root / "cache"), "ZOOSEL_PER_CLASS": PER_CLASS,
           "RUNNER_TEMP": str(root)}

    def workflow_run(current: str, margin: str, **extra_env: str):
        variables = {**_workflow_env(_workflow()), **env, "ZOOSEL_CURRENT": current,
                     "ZOOSEL_MARGIN": margin, **extra_env}
        summary = root / "summary.md"
        results = {}
        for command in _zoosel_commands(_workflow()):
            args = _expand(command, variables)[1:]
            results[args[0]] = CliRunner().invoke(
                cli, args, catch_exceptions=False,
                env={"GITHUB_STEP_SUMMARY": str(summary), "ZOOSEL_DEBUG": None})
        result = results.pop("recommend")
        assert all(other.exit_code == 0 for other in results.values())
        report = json.loads((root / "zoosel-recommendation.json").read_text())
        return result, report, summary

    with pytest.MonkeyPatch.context() as mp:
        counter = ForwardCounter(mp)
        started = time.perf_counter()
        first, report, _ = workflow_run("resnet-a", "0")
        seconds = time.perf_counter() - started
    assert counter.calls > 0
    return {"run": workflow_run, "first": first, "report": report, "seconds": seconds,
            "root": root, "env": env}


def test_workflow_commands_pass_and_fail(ci):
    report = ci["report"]
    rows = report["ranking"]["ranking"]
    assert report["score"] == "lfc" and len(rows) == 5
    best, worst = rows[0]["candidate"], rows[-1]["candidate"]
    assert report["recommended"] == best
    assert rows[0]["scores"]["lfc"] > rows[-1]["scores"]["lfc"]
    best_name = best.split("@")[0].rsplit("/", 1)[-1]
    worst_name = worst.split("@")[0].rsplit("/", 1)[-1]

    failing, failing_report, summary = ci["run"](worst_name, "0")
    assert failing.exit_code == 1, failing.output
    assert failing.stdout == f"{best}\n"
    assert "FAIL" in failing.stderr and worst in failing.stderr
    assert failing_report["status"] == "fail" and failing_report["current"] == worst
    assert failing_report["gap"] == pytest.approx(
        rows[0]["scores"]["lfc"] - rows[-1]["scores"]["lfc"])
    assert failing_report["current_rank"] == 5

    passing, passing_report, summary = ci["run"](best_name, "0")
    assert passing.exit_code == 0, passing.output
    assert passing.stdout == f"{best}\n"
    assert "PASS" in passing.stderr
    assert passing_report["status"] == "pass" and passing_report["gap"] == 0.0

    gap = failing_report["gap"]
    within, _, _ = ci["run"](worst_name, f"{gap * 1.01:.6f}")
    assert within.exit_code == 0, within.output
    beyond, _, _ = ci["run"](worst_name, f"{gap * 0.99:.6f}")
    assert beyond.exit_code == 1, beyond.output

    text = summary.read_text()  # appended to, run after run, as GitHub expects
    assert text.count("## zoosel recommend") >= 5
    assert "## zoosel recommend: FAIL" in text and "## zoosel recommend: PASS" in text
    assert f"`{best}`" in text and "| rank | candidate | consensus | lfc |" in text


def test_rerun_on_a_fresh_checkout_runs_no_model(ci, example, monkeypatch):
    zoo, data = _checkout(example, ci["root"] / "checkout")
    assert str(data) == ci["env"]["ZOOSEL_DATASET"]
    counter = ForwardCounter(monkeypatch)
    started = time.perf_counter()
    again, report, _ = ci["run"]("resnet-a", "0")
    seconds = time.perf_counter() - started
    assert counter.calls == 0
    assert again.exit_code == ci["first"].exit_code
    rows = report["ranking"]["ranking"]
    assert all(r["cached"] and r["forward_batches"] == 0 for r in rows)
    assert report["recommended"] == ci["report"]["recommended"]
    assert seconds < ci["seconds"]


# --- exit codes and inputs -----------------------------------------------------------------


def _recommend(ci, *args: str, code: int, **env: str):
    base = ["recommend", "--dataset", ci["env"]["ZOOSEL_DATASET"], "--local-dir",
            ci["env"]["ZOOSEL_ZOO"], "--cache-dir", ci["env"]["ZOOSEL_CACHE_DIR"],
            "--per-class", PER_CLASS, "-q"]
    if "--score" not in args:  # the workflow's score (the default sort is consensus)
        base += ["--score", "lfc"]
    result = CliRunner().invoke(cli, [*base, *args], catch_exceptions=False,
                                env={"GITHUB_STEP_SUMMARY": None, **env})
    assert result.exit_code == code, result.output
    return result


def test_exit_codes_are_distinct_and_documented(ci, tmp_path, monkeypatch):
    assert sorted(EXIT_CODES) == [0, 1, 2, 3, 4, 5]
    best = ci["report"]["recommended"]
    # 0: no current model, nothing to check
    assert _recommend(ci, code=0).stdout == f"{best}\n"
    # 2: usage and input errors
    assert "ambiguous" in _recommend(ci, "--current", "resnet", code=2).stderr
    assert "not both" in _recommend(ci, "--current", "vit", "--current-from",
                                    str(tmp_path / "x.yaml"), code=2).stderr
    assert "--margin" in _recommend(ci, "--current", "vit", "--margin", "-1", code=2).stderr
    assert "Unknown scorer" in _recommend(ci, "--score", "nope", code=2).stderr
    # 4: the current model is not a candidate
    missing = _recommend(ci, "--current", "no-such-model", code=4)
    assert missing.stdout == f"{best}\n" and "--model" in missing.stderr
    # 3: an internal error
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("zoosel.ci.evaluate", broken)
    assert "Internal error" in _recommend(ci, "--current", "vit", code=3).stderr


def test_current_model_that_cannot_be_scored_and_nothing_scored(ci, tmp_path):
    bad = make_timm_model_dir(tmp_path / "bad", arch="test_resnet", num_classes=3)
    (bad / "model.safetensors").write_bytes(b"not safetensors")
    not_scored = _recommend(ci, "--model", f"local:{bad}", "--current", str(bad), code=4)
    assert not_scored.stdout == f"{ci['report']['recommended']}\n"
    assert "could not be scored" in not_scored.stderr
    summary = tmp_path / "summary.md"
    nothing = CliRunner().invoke(cli, [
        "recommend", "--dataset", ci["env"]["ZOOSEL_DATASET"], "--model", f"local:{bad}",
        "--no-cache", "-q", "--json", str(tmp_path / "r.json")],
        env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert nothing.exit_code == 5, nothing.output
    assert nothing.stdout == "" and "no candidate could be scored" in nothing.stderr
    assert json.loads((tmp_path / "r.json").read_text())["status"] == "no-results"
    assert "no-results" in summary.read_text()


def test_current_from_a_config_file_and_a_policy_score(ci, tmp_path):
    best = ci["report"]["recommended"]
    name = best.split("@")[0].rsplit("/", 1)[-1]
    (tmp_path / "train.yaml").write_text(f"model:\n  backbone: {name}\n  lr: 0.1\n")
    (tmp_path / "train.toml").write_text(f'backbone = "{name}"\n')
    (tmp_path / "train.json").write_text(json.dumps({"backbone": best}))
    _recommend(ci, "--current-from", str(tmp_path / "train.yaml"), "--current-key",
               "model.backbone", code=0)
    _recommend(ci, "--current-from", str(tmp_path / "train.toml"), code=0)
    _recommend(ci, "--current-from", str(tmp_path / "train.json"), code=0)
    missing_key = _recommend(ci, "--current-from", str(tmp_path / "train.yaml"), code=2)
    assert "'backbone'" in missing_key.stderr
    # the policy score joins the scorers and orders the ranking
    by_logme = _recommend(ci, "-s", "lfc", "--score", "logme", "--json",
                          str(tmp_path / "r.json"), code=0)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["score"] == "logme" and report["ranking"]["primary"] == "logme"
    values = {r["candidate"]: r["scores"]["logme"] for r in report["ranking"]["ranking"]}
    assert by_logme.stdout == f"{max(values, key=values.get)}\n"


# --- the typed functions -------------------------------------------------------------------


IDS = [
    "local:/zoo/resnet-a@0123456789ab",
    "local:/zoo/resnet-b@ba9876543210",
    "hf:org/vit-small@3f1c9a2b4d5e",
    "timm:resnet18.a1_in1k@timm-1.0.15",
]


def test_matching_rules():
    assert match_candidate("hf:org/vit-small@3f1c9a2b4d5e", IDS) == IDS[2]
    assert match_candidate("hf:org/vit-small", IDS) == IDS[2]
    assert match_candidate("org/vit-small", IDS) == IDS[2]
    assert match_candidate("org/vit-small@3f1c9a2b4d5e77fa00", IDS) == IDS[2]  # full sha
    assert match_candidate("org/vit-small@ffff", IDS) is None  # another revision
    assert match_candidate("vit-small", IDS) == IDS[2]
    assert match_candidate("/zoo/resnet-a", IDS) == IDS[0]
    assert match_candidate("resnet-b", IDS) == IDS[1]
    assert match_candidate("timm:resnet18.a1_in1k", IDS) == IDS[3]
    assert match_candidate("vit", IDS) == IDS[2]  # unique substring
    with pytest.raises(UsageError, match="ambiguous"):
        match_candidate("resnet", IDS)
    assert match_candidate("convnext", IDS) is None


def _ranking(scores: dict[str, float], failed=(), skipped=()) -> Ranking:
    results = [CandidateResult(candidate=c, source="local", scores={"lfc": v})
               for c, v in sorted(scores.items(), key=lambda kv: -kv[1])]
    return Ranking(
        dataset=DatasetSummary("d", "all", "f", 2, 4, 2, 0, ("a", "b")), scorers=["lfc"],
        primary="lfc", results=results,
        failed=[CandidateResult(candidate=c, source="local", error="broken") for c in failed],
        skipped=[Skipped("hf", ref, "not a vision model") for ref in skipped])


def test_evaluate_applies_the_margin():
    ranking = _ranking({"local:/z/a@1": 0.5, "local:/z/b@2": 0.4, "local:/z/c@3": 0.1},
                       failed=["local:/z/d@4"], skipped=["org/text"])
    verdict = evaluate(ranking, "lfc", 0.15, "b")
    assert isinstance(verdict, Verdict)
    assert (verdict.status, verdict.exit_code, verdict.current_rank) == ("pass", 0, 2)
    assert verdict.gap == pytest.approx(0.1) and verdict.recommended == "local:/z/a@1"
    assert evaluate(ranking, "lfc", 0.05, "b").exit_code == 1
    assert evaluate(ranking, "lfc", 0.0, "a").exit_code == 0
    assert evaluate(ranking, "lfc", 0.0, None).status == "pass"
    assert evaluate(ranking, "lfc", 0.0, "d").status == "current-not-scored"
    assert evaluate(ranking, "lfc", 0.0, "org/text").exit_code == 4
    assert evaluate(ranking, "lfc", 0.0, "zzz").status == "current-not-found"
    assert evaluate(ranking, "leep", 0.0, "a").exit_code == 5  # nobody has that score


def test_read_current_from(tmp_path):
    (tmp_path / "c.yml").write_text("backbone: hf:org/vit-small\n")
    assert read_current_from(tmp_path / "c.yml") == "hf:org/vit-small"
    (tmp_path / "c.json").write_text('{"backbone": 3}')
    with pytest.raises(UsageError, match="not a model name"):
        read_current_from(tmp_path / "c.json")
    (tmp_path / "c.toml").write_text("backbone = [")
    with pytest.raises(UsageError, match="not valid TOML"):
        read_current_from(tmp_path / "c.toml")
