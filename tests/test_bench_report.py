"""The benchmark report on a small synthetic results dict."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from zoosel.bench import metrics as M
from zoosel.bench import report as R
from zoosel.errors import UsageError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MODELS = [f"m{i}" for i in range(6)]
SELECTORS = ["leep", "lfc", "linft", "random"]
REGIMES = ["full", "5-shot", "20-shot"]  # deliberately out of order
TASKS = ["pets", "cars", "flowers"]


def _results() -> dict:
    rng = np.random.default_rng(0)
    tasks: dict = {}
    for t, task in enumerate(TASKS):
        tasks[task] = {}
        for regime in REGIMES:
            acc = {m: float(rng.uniform(0.2, 0.9)) for m in MODELS}
            noise = {"lfc": 0.05, "leep": 0.3, "linft": 0.1, "random": 10.0}
            scores = {
                s: {m: acc[m] + float(rng.normal(0, noise[s])) for m in MODELS} for s in SELECTORS
            }
            scores["leep"]["m5"] = float("nan")  # a failure
            del scores["random"]["m4"]  # a missing model
            tasks[task][regime] = {
                "accuracy": acc,
                "seed_accuracies": {
                    "m0": [acc["m0"] - 0.005, acc["m0"] + 0.005],
                    "m1": [acc["m1"], acc["m1"] + 0.01, acc["m1"] - 0.01],
                },
                "scores": scores,
                "cost": {s: 1.0 + t for s in SELECTORS},
                "finetune_seconds": 20.0,
                "predicted": {"linft": {m: scores["linft"][m] for m in MODELS}},
            }
    zoo = [
        {
            "id": m,
            "arch": "resnet" if i % 2 else "convnext",
            "source_domain": ["imagenet", "food", "birds"][i % 3],
            "init": "scratch" if i < 3 else "imagenet",
            "source_accuracy": 0.5 + 0.05 * i,
            "build_seconds": 100.0 + i,
        }
        for i, m in enumerate(MODELS)
    ]
    return {
        "generalist": "m0",
        "tasks": tasks,
        "zoo": zoo,
        "build": {"zoo": 600.0, "finetune": 1200.0},
        "meta": {"zoo": "synthetic"},
    }


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return out, R.write_report(_results(), out)


def test_files_exist(written):
    out, paths = written
    assert paths["report.md"] == out / "report.md" and paths["report.md"].is_file()
    assert paths["results.json"].is_file()
    pngs = [p for name, p in paths.items() if name.endswith(".png")]
    names = {p.name for p in pngs}
    assert {"scatter_5-shot.png", "scatter_20-shot.png", "scatter_full.png"} <= names
    assert {"bar_spearman.png", "bar_top3_gain.png", "bar_trials_to_best.png"} <= names
    for p in pngs:
        assert p.read_bytes()[:8] == PNG_MAGIC
        assert p.stat().st_size > 1000
    assert list(paths) == sorted(paths)


def test_markdown_has_headline_and_sections(written):
    out, _ = written
    md = (out / "report.md").read_text()
    for s in SELECTORS:
        assert f"\n| {s} | " in md
    head = R.headline_markdown(json.loads((out / "results.json").read_text()))
    assert head in md
    header = head.splitlines()[0]
    # Regimes in the headline order, whatever the input order.
    assert header.index("Spearman, 5-shot") < header.index("Spearman, 20-shot")
    assert header.index("Spearman, 20-shot") < header.index("Spearman, full")
    rows = head.splitlines()
    assert [r.split(" | ")[0] for r in rows[2:6]] == [f"| {s}" for s in sorted(SELECTORS)]
    derived = json.loads((out / "results.json").read_text())["derived_scores"]
    assert [r.split(" | ")[0] for r in rows[6:6 + len(derived)]] == [f"| {s}" for s in derived]
    assert rows[6 + len(derived)].startswith("| *oracle* |")
    assert len(rows[2].split(" | ")) == 1 + 3 * 4
    for section in ("## Metrics per regime", "## Per task", "## Validity", "## linft", "## Zoo"):
        assert section in md
    assert "#### pets / 5-shot" in md and "top-1 regret" in md and "relative cost" in md
    assert "| convnext |" in md or "convnext" in md
    assert "![bar_spearman](figures/bar_spearman.png)" in md


def test_headline_cells_match_aggregates(written):
    out, _ = written
    data = json.loads((out / "results.json").read_text())
    cell = data["aggregates"]["5-shot"]["lfc"]["spearman"]
    text = f"{cell['mean']:.2f} [{cell['ci_low']:.2f}, {cell['ci_high']:.2f}]"
    row = next(r for r in R.headline_markdown(data).splitlines() if r.startswith("| lfc |"))
    assert row.split(" | ")[1] == text
    assert re.fullmatch(r"-?\d+\.\d\d \[-?\d+\.\d\d, -?\d+\.\d\d\]", text)


def test_json_round_trips(written, tmp_path):
    out, _ = written
    text = (out / "results.json").read_text()
    data = json.loads(text)
    assert json.dumps(data, indent=1, sort_keys=True, allow_nan=False) + "\n" == text
    assert data["aggregates"]["full"]["lfc"]["spearman"]["n_tasks"] == 3
    assert data["tasks"]["pets"]["5-shot"]["metrics"]["leep"]["n_finite"] == 5
    assert "validity" in data and "prediction_aggregates" in data
    # NaN is stored as null, and the stored results can be reported again unchanged.
    assert "NaN" not in text
    again = R.write_report(data, tmp_path / "again")
    assert again["results.json"].read_text() == text
    assert again["report.md"].read_text() == (out / "report.md").read_text()


def _before_figures(path: Path) -> str:
    return path.read_text().split("## Figures")[0]


def test_deterministic(written, tmp_path, monkeypatch):
    out, _ = written
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # the figures are drawn once, above
    R.write_report(_results(), tmp_path)
    assert _before_figures(tmp_path / "report.md") == _before_figures(out / "report.md")
    assert (tmp_path / "results.json").read_text() == (out / "results.json").read_text()


def test_numbers_agree_with_metrics_module(written):
    out, _ = written
    data = json.loads((out / "results.json").read_text())
    entry = _results()["tasks"]["cars"]["full"]  # cars: cost 2 s
    direct = M.scorer_metrics(
        entry["accuracy"], entry["scores"]["lfc"], "m0", cost=2.0, finetune_seconds=20.0
    )
    stored = data["tasks"]["cars"]["full"]["metrics"]["lfc"]
    for k, v in direct.items():
        assert stored[k] == pytest.approx(v)


def test_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    paths = R.write_report(_results(), tmp_path)
    assert set(paths) == {"report.md", "results.json"}
    md = paths["report.md"].read_text()
    assert "matplotlib is not installed" in md
    assert not (tmp_path / "figures").exists()


def test_bad_results():
    with pytest.raises(UsageError):
        R.write_report({"no": "tasks"}, Path("/nonexistent-never-written"))
    with pytest.raises(UsageError):
        R.headline_markdown([])  # type: ignore[arg-type]


def test_no_generalist_and_odd_metadata(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # markdown only, for speed
    res = _results()
    res["generalist"] = ""
    res["zoo"][0]["source_accuracy"] = float("nan")
    res["build"]["nested"] = {"a": 1}
    md = R.write_report(res, tmp_path)["report.md"].read_text()
    assert "| *oracle* | " in md and "n/a" in md
    assert "| m0 | convnext | imagenet | scratch |  |" in md


def test_stale_scores_are_marked_and_versions_kept(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import zoosel
    from zoosel.cli import bench_commands, cli  # noqa: F401  (registers `bench`)

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # markdown only, for speed
    installed = {s: zoosel.list_scorers()[s].version for s in SELECTORS}
    md = R.write_report(_results(), tmp_path / "none")["report.md"].read_text()
    assert "- scorer versions: not recorded (" in md and "(stale)" not in md
    current = R.write_report({**_results(), "scorer_versions": installed}, tmp_path / "now")
    assert ("- scorer versions: recorded; every score at the installed scorer's version"
            in current["report.md"].read_text())
    res = {**_results(), "scorer_versions": {**installed, "leep": "0"}}
    first = R.write_report(res, tmp_path / "old")
    md = first["report.md"].read_text()
    reason = f"leep (results have version 0, installed {installed['leep']})"
    assert f"- scorer versions: recorded; **stale**: {reason}. A stale score" in md
    head = R.headline_markdown(json.loads(first["results.json"].read_text()))
    assert [r.split(" | ")[0] for r in head.splitlines()[2:6]] == [
        "| leep (stale)", "| lfc", "| linft", "| random"]
    assert "\n| leep (stale) | " in md.split("\n### 5-shot\n")[1]  # the regime table too
    out = tmp_path / "again"
    result = CliRunner().invoke(cli, ["bench", "report", "--from-results",
                                      str(first["results.json"]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    again = json.loads((out / "results.json").read_text())
    assert again["scorer_versions"] == res["scorer_versions"]
    assert reason in (out / "report.md").read_text()


def test_nan_formatting():
    assert R._fmt_ci({"mean": None, "ci_low": None, "ci_high": None}, "spearman") == "n/a"
    cell = {"mean": 0.5, "ci_low": 0.25, "ci_high": 0.75, "n_tasks": 2, "n_total": 3}
    assert R._fmt_ci(cell, "spearman") == "0.50 [0.25, 0.75] (2/3)"
    assert R._fmt_ci(cell, "top3_gain") == "0.5 [0.2, 0.8] (2/3)"
    assert R._fmt(math.nan) == "n/a"


def test_within_architecture_section_when_the_zoo_mixes_families():
    results = _results()
    assert "## Within one architecture" not in R.render_markdown(results)  # 3 + 3 members
    names = [f"m{i}" for i in range(8)]
    for regimes in results["tasks"].values():
        for entry in regimes.values():
            entry["accuracy"] = {m: 0.1 * (i + 1) for i, m in enumerate(names)}
            entry["scores"] = {"lfc": {m: float(i % 4) for i, m in enumerate(names)}}
            for key in ("seed_accuracies", "predicted"):
                entry.pop(key, None)
            entry["cost"] = {"lfc": 1.0}
    results["zoo"] = [{"id": m, "arch": "resnet" if i < 4 else "vit"}
                      for i, m in enumerate(names)]
    text = R.render_markdown(results)
    section = text.split("## Within one architecture", 1)[1].split("\n## ", 1)[0]
    assert "| Selector | Spearman, resnet, 5-shot |" in section
    assert "Spearman, vit, full |" in section
    assert "| lfc | 1.00 [1.00, 1.00] |" in section
