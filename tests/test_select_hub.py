"""The mission's command against a Hub-compatible server, through the real clients."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from zoosel.cli import cli
from zoosel.cli import commands as _commands  # noqa: F401
from zoosel.testing.factories import (
    make_image_dataset,
    make_timm_model_dir,
    make_transformers_vit_dir,
    publish_parquet_dataset,
)


@pytest.fixture(scope="module")
def published(hub, tmp_path_factory):
    """A small zoo and a dataset published on the session's FakeHub.

    The mission's listing sees every image-classification model on the hub, so this
    module starts from an empty hub.
    """
    hub.clear()
    root = tmp_path_factory.mktemp("hubzoo")
    shas = {
        "zoo/tiny-resnet": hub.add_model_from_dir(
            "zoo/tiny-resnet", make_timm_model_dir(root / "r", "test_resnet", 7, seed=0),
            downloads=30),
        "zoo/tiny-convnext": hub.add_model_from_dir(
            "zoo/tiny-convnext", make_timm_model_dir(root / "c", "test_convnext", 5, seed=1),
            downloads=20),
        "zoo/tiny-vit-hf": hub.add_model_from_dir(
            "zoo/tiny-vit-hf", make_transformers_vit_dir(root / "v", 4, seed=2), downloads=10),
    }
    hub.add_model("zoo/sk-classifier", {"model.skops": b"not a torch model"},
                  library_name="sklearn", pipeline_tag="image-classification")
    hub.add_model("zoo/text-bert", {"config.json": "{}"}, library_name="transformers",
                  pipeline_tag="text-classification")
    shas["timm/test_resnet.r160_in1k"] = hub.add_model_from_dir(
        "timm/test_resnet.r160_in1k", make_timm_model_dir(root / "t", "test_resnet", 1000, seed=4))
    publish_parquet_dataset(hub, "user/mydata", make_image_dataset(3, 6, size=24))
    return shas


def run(*args: str, code: int = 0):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


def test_mission_command_ranks_every_listed_model(published, hub):
    out = run("select", "--hub-filter", "image-classification", "--dataset", "user/mydata",
              "--format", "json", "-q").output
    ranking = json.loads(out)
    ranked = {r["candidate"].split("@")[0]: r for r in ranking["ranking"]}
    assert set(ranked) == {f"hf:{repo}" for repo in published}
    for row in ranked.values():
        assert set(row["scores"]) == {"consensus", "lfc", "logme", "leep", "nce"}
        assert all(math.isfinite(v) for v in row["scores"].values())
    (skipped,) = ranking["skipped"]
    assert skipped["ref"] == "zoo/sk-classifier" and "'sklearn' is not supported" in \
        skipped["reason"]
    assert ranking["dataset"]["num_classes"] == 3 and ranking["dataset"]["num_samples"] == 18
    # every candidate was pinned to the commit the listing returned
    for repo, sha in published.items():
        assert ranked[f"hf:{repo}"]["candidate"].endswith("@" + sha[:12])
        assert any(f"/{repo}/resolve/{sha}/" in path for _, path in hub.log), repo


def test_table_output_shows_skips_and_recommendation(published):
    out = run("select", "--hub-filter", "image-classification", "--dataset", "user/mydata",
              "-q", "-s", "logme").output
    assert "skipped hf:zoo/sk-classifier" in out
    assert "recommended: hf:" in out


def test_listing_options_and_explicit_models(published):
    out = run("select", "--hub-author", "zoo", "--hub-search", "tiny", "--hub-sort",
              "downloads", "--hub-limit", "2", "--dataset", "user/mydata", "-q",
              "--format", "json", "-s", "lfc").output
    names = {r["candidate"].split("@")[0] for r in json.loads(out)["ranking"]}
    assert names == {"hf:zoo/tiny-resnet", "hf:zoo/tiny-convnext"}
    sha = published["zoo/tiny-vit-hf"]
    out = run("select", "--model", f"hf:zoo/tiny-vit-hf@{sha}", "--model",
              "timm:test_resnet.r160_in1k", "--dataset", "user/mydata", "-q", "--format",
              "json", "-s", "lfc", "-s", "leep").output
    rows = {r["source"]: r for r in json.loads(out)["ranking"]}
    assert rows["hf"]["candidate"] == f"hf:zoo/tiny-vit-hf@{sha[:12]}"
    assert rows["timm"]["candidate"].startswith("timm:test_resnet.r160_in1k")
    assert "leep" in rows["timm"]["scores"]


def test_unknown_hub_model_is_a_recorded_failure(published):
    out = run("select", "--model", "hf:zoo/does-not-exist", "--model", "hf:zoo/tiny-resnet",
              "--dataset", "user/mydata", "-q", "--format", "json", "-s", "lfc").output
    ranking = json.loads(out)
    assert len(ranking["ranking"]) == 1
    (failed,) = ranking["failed"]
    assert failed["candidate"] == "hf:zoo/does-not-exist" and "cannot find" in failed["error"]


def test_unknown_dataset_gets_a_message(published):
    out = run("select", "--hub-filter", "image-classification", "--dataset", "user/nothing",
              "-q", code=2).output
    assert "user/nothing" in out and "Traceback" not in out


def test_timm_pattern_lists_registry_models_with_hub_weights(published):
    out = run("select", "--timm-pattern", "test_resnet*", "--dataset", "user/mydata", "-q",
              "--format", "json", "-s", "lfc").output
    (row,) = json.loads(out)["ranking"]
    assert row["candidate"].startswith("timm:test_resnet.r160_in1k")


def test_offline_mode_uses_the_caches(published, hub, tmp_path):
    """With HF_HUB_OFFLINE=1 a cached dataset and cached Hub model still rank, and no
    request reaches the server."""
    import os
    import subprocess
    import sys

    cache = tmp_path / "zoosel-cache"
    sha = published["zoo/tiny-resnet"]
    args = [sys.executable, "-m", "zoosel", "select", "--dataset", "user/mydata", "--model",
            f"hf:zoo/tiny-resnet@{sha}", "-q", "--format", "json", "-s", "lfc",
            "--cache-dir", str(cache)]
    online = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert online.returncode == 0, online.stderr
    hub.reset_log()
    offline = subprocess.run(args + ["--no-cache"], capture_output=True, text=True, timeout=300,
                             env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 0, offline.stderr
    assert hub.log == []
    first = json.loads(online.stdout)["ranking"][0]["scores"]["lfc"]
    assert json.loads(offline.stdout)["ranking"][0]["scores"]["lfc"] == pytest.approx(first)
