"""``zoosel select`` end to end on local checkpoints: output, cache, failures."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from zoosel.cli import cli
from zoosel.cli import commands as _commands  # noqa: F401  (registers the commands)
from zoosel.testing.counting import ForwardCounter
from zoosel.testing.factories import (
    make_timm_model_dir,
    make_transformers_vit_dir,
    write_image_folder,
)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    make_timm_model_dir(root / "resnet", arch="test_resnet", num_classes=6, seed=0)
    make_timm_model_dir(root / "vit", arch="test_vit", num_classes=4, seed=1)
    make_transformers_vit_dir(root / "hfvit", num_labels=3, seed=2)
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("data") / "images", num_classes=3,
                              per_class=5, size=24)


def run(*args: str, code: int = 0):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


def test_ranks_timm_and_transformers_folders_and_json_matches(zoo, data, tmp_path):
    out = tmp_path / "r.json"
    run("select", "--dataset", str(data), "--local-dir", str(zoo), "-q",
        "--cache-dir", str(tmp_path / "cache"), "--output", str(out))
    ranking = json.loads(out.read_text())
    assert ranking["dataset"]["num_classes"] == 3 and ranking["dataset"]["num_samples"] == 15
    assert len(ranking["ranking"]) == 3 and not ranking["failed"]
    assert ranking["primary"] == "consensus"  # the default sort
    primary = [r["scores"]["consensus"] for r in ranking["ranking"]]
    assert primary == sorted(primary, reverse=True)
    for row in ranking["ranking"]:
        assert set(row["scores"]) == {"consensus", "lfc", "logme", "leep", "nce"}
        assert all(math.isfinite(v) for v in row["scores"].values())
        assert row["num_params"] > 1000


def test_table_csv_markdown(zoo, data, tmp_path):
    common = ["select", "--dataset", str(data), "--local-dir", str(zoo), "-q",
              "--cache-dir", str(tmp_path / "cache"), "-s", "logme", "-s", "lfc"]
    table = run(*common).output
    assert table.splitlines()[0].split() == ["rank", "candidate", "logme", "lfc", "P(best)",
                                             "rank(90%)", "params", "time"]
    assert "recommended: local:" in table
    rows = list(csv.DictReader(io.StringIO(run(*common, "--format", "csv").output)))
    assert [r["rank"] for r in rows] == ["1", "2", "3"]
    logme = [float(r["logme"]) for r in rows]
    assert logme == sorted(logme, reverse=True)
    md = run(*common, "--format", "markdown").output
    assert md.startswith("| rank | candidate | logme | lfc |")


def test_second_run_adding_a_scorer_runs_no_model(zoo, data, tmp_path, monkeypatch):
    counter = ForwardCounter(monkeypatch)
    common = ["select", "--dataset", str(data), "--local-dir", str(zoo), "-q",
              "--cache-dir", str(tmp_path / "cache"), "--format", "json"]
    first = json.loads(run(*common, "-s", "lfc").output)
    assert counter.calls > 0
    assert all(r["forward_batches"] > 0 and not r["cached"] for r in first["ranking"])
    counter.calls = 0
    second = json.loads(run(*common, "-s", "lfc", "-s", "leep", "-s", "logme").output)
    assert counter.calls == 0
    assert all(r["cached"] and r["forward_batches"] == 0 for r in second["ranking"])
    by_name = {r["candidate"]: r["scores"]["lfc"] for r in first["ranking"]}
    for r in second["ranking"]:
        assert r["scores"]["lfc"] == pytest.approx(by_name[r["candidate"]], rel=1e-12)
        assert "leep" in r["scores"]


def test_single_safetensors_file_with_architecture(tmp_path, data):
    folder = make_timm_model_dir(tmp_path / "m", arch="test_resnet", num_classes=6, seed=3)
    weights = folder / "model.safetensors"
    out = run("select", "--dataset", str(data), "-q", "--no-cache", "--format", "json",
              "--model", f"local:{weights}@test_resnet").output
    (row,) = json.loads(out)["ranking"]
    assert row["candidate"].startswith("local:") and "leep" in row["scores"]
    missing_arch = run("select", "--dataset", str(data), "-q", "--no-cache",
                       "--model", f"local:{weights}", code=1)
    assert "name the timm architecture" in missing_arch.output


def test_failures_are_recorded_and_the_run_goes_on(zoo, data, tmp_path):
    bad = tmp_path / "bad"
    make_timm_model_dir(bad / "mismatch", arch="test_resnet", num_classes=6)
    save_file({"nonsense": torch.zeros(3)}, str(bad / "mismatch" / "model.safetensors"))
    pickled = make_timm_model_dir(bad / "pickled", arch="test_resnet", num_classes=6)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    results = tmp_path / "results.jsonl"
    out = run("select", "--dataset", str(data), "-q", "--no-cache", "--format", "json",
              "--local-dir", str(bad), "--model", f"local:{zoo / 'resnet'}",
              "--results", str(results)).output
    ranking = json.loads(out)
    assert len(ranking["ranking"]) == 1
    errors = {r["candidate"].split("/")[-1].split("@")[0]: r["error"] for r in ranking["failed"]}
    assert "pickled weights" in errors["pickled"] and "--allow-pickle" in errors["pickled"]
    assert "timm could not create" in errors["mismatch"]
    assert len(results.read_text().splitlines()) == 3


def test_nothing_scored_exits_non_zero(tmp_path, data):
    bad = make_timm_model_dir(tmp_path / "bad", num_classes=6)
    save_file({"nonsense": torch.zeros(3)}, str(bad / "model.safetensors"))
    result = run("select", "--dataset", str(data), "-q", "--no-cache", "--model",
                 f"local:{bad}", code=1)
    assert "no candidate could be scored" in result.output
    assert "Traceback" not in result.output


def test_bad_input_gets_a_message(data, tmp_path):
    assert "Did you mean 'logme'" in run("select", "--dataset", str(data), "-m", "x",
                                         "-s", "logmee", code=2).output
    assert "Did you mean 'timm'" in run("select", "--dataset", str(data),
                                        "-m", "tim:resnet18", code=2).output
    assert "no candidates" in run("select", "--dataset", str(data), code=2).output
    out = run("select", "--dataset", str(tmp_path / "nope"), "-m", "timm:x", code=2).output
    assert "does not exist" in out and "Traceback" not in out


def test_scorer_option_reaches_the_probe_and_keys_the_cache(zoo, data, tmp_path, monkeypatch):
    from zoosel.scorers import linear_probe as probe_mod

    solvers: list[str] = []
    original = probe_mod.linear_probe_accuracy

    def spy(*args, solver: str = probe_mod.DEFAULT_SOLVER, **kwargs):
        solvers.append(solver)
        return original(*args, solver=solver, **kwargs)

    monkeypatch.setattr(probe_mod, "linear_probe_accuracy", spy)
    common = ["select", "--dataset", str(data), "--local-dir", str(zoo), "-q",
              "--cache-dir", str(tmp_path / "cache"), "--format", "json", "-s", "linear_probe",
              "--confidence", "0"]
    logistic = ["--scorer-option", "linear_probe.solver=logistic"]

    def probe_values(*extra: str) -> tuple[dict[str, float], dict]:
        ranking = json.loads(run(*common, *extra).output)
        return {r["candidate"]: r["scores"]["linear_probe"] for r in ranking["ranking"]}, ranking

    ridge_values, ridge = probe_values()
    assert solvers == ["ridge"] * 3 and ridge["scorer_options"] == {}
    solvers.clear()
    # the cache holds ridge values for these features: the logistic probe is computed anew
    logistic_values, ranking = probe_values(*logistic)
    assert solvers == ["logistic"] * 3
    assert ranking["scorer_options"] == {"linear_probe": {"solver": "logistic"}}
    solvers.clear()
    # each setting's values are then served from the cache under its own key
    assert probe_values(*logistic)[0] == logistic_values and solvers == []
    assert probe_values()[0] == ridge_values and solvers == []
    # naming the default changes nothing, not even the cache key
    assert probe_values("--scorer-option", "linear_probe.solver=ridge")[0] == ridge_values
    assert solvers == []
    # the resamples of --confidence re-score with the same setting
    probe_values(*logistic, "--confidence", "4")
    assert solvers == ["logistic"] * 12
    # the table and the card say which setting ran
    table = run(*[a for a in common if a not in ("--format", "json")], *logistic).output
    assert "scorer options: linear_probe.solver=logistic" in table
    from zoosel.api import rank
    from zoosel.cards import render_card

    card = render_card(rank(str(data), local_dirs=[str(zoo)], scorers=["linear_probe"],
                            scorer_options={"linear_probe": {"solver": "logistic"}},
                            cache_dir=tmp_path / "cache", progress=False, confidence=0))
    assert "- `linear_probe` (solver=logistic)" in card
    assert "options:\n    solver: logistic" in card  # the YAML front matter


@pytest.mark.parametrize(("option", "message"), [
    ("linear_probe.solver=sgd", "linear_probe.solver must be one of ridge, logistic; got 'sgd'"),
    ("linear_probe.l2=1", "scorer 'linear_probe' has no option 'l2' (its options: solver)"),
    ("lfc.solver=ridge", "scorer 'lfc' has no option 'solver' (its options: none)"),
    ("linear_prob.solver=ridge", "Did you mean 'linear_probe'"),
    ("logme.solver=ridge", "scorer 'logme', which is not among the chosen ones (lfc)"),
    ("linear_probe=logistic", "write SCORER.OPTION=VALUE, e.g. linear_probe.solver=logistic"),
])
def test_scorer_option_errors_name_the_choices(option, message, data):
    scorers = ["-s", "lfc"] if option.startswith(("lfc", "logme")) else ["-s", "linear_probe"]
    out = run("select", "--dataset", str(data), "-m", "timm:x", *scorers,
              "--scorer-option", option, code=2).output
    assert message in out and "Traceback" not in out


def test_score_command_with_a_scorer_option(tmp_path):
    from zoosel.scorers.linear_probe import linear_probe_accuracy

    gen = torch.Generator().manual_seed(1)
    labels = torch.arange(40) % 4
    feats = torch.randn(40, 6, generator=gen) + 1.5 * torch.nn.functional.one_hot(labels, 6)
    np.savez(tmp_path / "f.npz", features=feats.numpy(), labels=labels.numpy())
    command = ["score", "--features", str(tmp_path / "f.npz"), "-s", "linear_probe",
               "--format", "json"]
    for solver in ("ridge", "logistic"):
        out = json.loads(run(*command, "--scorer-option", f"linear_probe.solver={solver}").output)
        assert out == {"linear_probe": linear_probe_accuracy(feats, labels, solver=solver)}


def test_score_command_on_saved_features(tmp_path):
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(30) % 3
    feats = torch.randn(30, 8, generator=gen) + 3 * torch.nn.functional.one_hot(labels, 8)
    np.savez(tmp_path / "f.npz", features=feats.numpy(), labels=labels.numpy())
    out = json.loads(run("score", "--features", str(tmp_path / "f.npz"), "-s", "lfc",
                         "-s", "logme", "--format", "json").output)
    from zoosel.scorers.lfc import label_feature_correlation as lfc

    assert out["lfc"] == pytest.approx(lfc(feats, labels), rel=1e-9)
    assert set(out) == {"lfc", "logme"}


def test_library_api_returns_a_typed_ranking(zoo, data, tmp_path):
    import zoosel
    from zoosel.types import CandidateResult, Ranking

    seen: list[CandidateResult] = []
    ranking = zoosel.rank(str(data), local_dirs=[str(zoo)], scorers=["logme", "lfc"],
                          per_class=3, seed=5, cache_dir=tmp_path, progress=False,
                          on_result=seen.append)
    assert isinstance(ranking, Ranking) and ranking.primary == "logme"
    assert ranking.dataset.num_samples == 9 and ranking.dataset.per_class == 3
    assert ranking.best is ranking.results[0]
    assert sorted(r.candidate for r in seen) == sorted(r.candidate for r in ranking)
    assert [r.scores["logme"] for r in ranking] == sorted(
        (r.scores["logme"] for r in ranking), reverse=True)


def test_rsa_probe_and_domain_similarity_from_source_data(zoo, data, tmp_path, monkeypatch):
    source = write_image_folder(tmp_path / "source", num_classes=4, per_class=3, size=24, seed=9)
    common = ["select", "--dataset", str(data), "--local-dir", str(zoo), "-q", "--format",
              "json", "--cache-dir", str(tmp_path / "cache"), "-s", "rsa", "-s", "domain_sim"]
    ranking = json.loads(run(*common, "--source-data", f"*resnet*={source}").output)
    rows = {r["candidate"].split("/")[-1].split("@")[0]: r for r in ranking["ranking"]}
    assert set(rows) == {"resnet", "vit", "hfvit"}
    assert all(-1 <= r["scores"]["rsa"] <= 1 for r in rows.values())
    assert 0 < rows["resnet"]["scores"]["domain_sim"] <= 1
    assert "domain_sim" not in rows["vit"]["scores"]  # no source data matched it
    # probe features and source-domain features are cached: a rerun runs no model
    counter = ForwardCounter(monkeypatch)
    again = json.loads(run(*common, "--source-data", f"*resnet*={source}").output)
    assert counter.calls == 0
    assert {r["candidate"]: r["scores"] for r in again["ranking"]} == \
        {r["candidate"]: r["scores"] for r in ranking["ranking"]}


def test_moved_checkpoints_and_copied_data_still_hit_the_cache(zoo, data, tmp_path, monkeypatch):
    import shutil

    cache = str(tmp_path / "cache")
    run("select", "--dataset", str(data), "--local-dir", str(zoo), "-q", "--cache-dir", cache,
        "-s", "lfc")
    shutil.copytree(zoo, tmp_path / "moved-zoo")
    shutil.copytree(data, tmp_path / "copied-data")  # new paths, new modification times
    counter = ForwardCounter(monkeypatch)
    out = run("select", "--dataset", str(tmp_path / "copied-data"), "--local-dir",
              str(tmp_path / "moved-zoo"), "-q", "--cache-dir", cache, "-s", "lfc",
              "--format", "json").output
    assert counter.calls == 0
    assert all(r["cached"] for r in json.loads(out)["ranking"])


def test_lgc_and_linft_through_the_engine(zoo, data, tmp_path, monkeypatch):
    cache = str(tmp_path / "cache")
    common = ["select", "--dataset", str(data), "--local-dir", str(zoo), "-q", "--format",
              "json", "--cache-dir", cache, "-s", "lgc", "-s", "linft", "-s", "linft_grad",
              "--sketch-dim", "512"]
    ranking = json.loads(run(*common).output)
    assert len(ranking["ranking"]) == 3 and not ranking["failed"]
    for row in ranking["ranking"]:
        assert -1 <= row["scores"]["lgc"] <= 1
        assert 0 <= row["scores"]["linft"] <= 1 and 0 <= row["scores"]["linft_grad"] <= 1
    counter = ForwardCounter(monkeypatch)  # sketches are cached like features
    again = json.loads(run(*common).output)
    assert counter.calls == 0
    assert [r["scores"] for r in again["ranking"]] == [r["scores"] for r in ranking["ranking"]]
    other = json.loads(run(*common[:-1], "256").output)  # another sketch size: recomputed
    assert all(not r["cached"] for r in other["ranking"])
