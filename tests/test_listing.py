"""Hub listing at scale: exact filters over several pages, limit after filtering, the
listing cache, ``zoosel list``, and the offline ``hf-cache`` source; all through the real
huggingface_hub client against the session's FakeHub (two items per page)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner

from zoosel.api import list_models
from zoosel.cli import cli
from zoosel.cli import commands as _commands  # noqa: F401  (registers the commands)
from zoosel.errors import UsageError
from zoosel.sources import listing_cache
from zoosel.sources.hub_listing import format_count, parse_count

AUTHOR = "lst"
LISTING = "/api/models?"

# name: (library, pipeline tag, extra tags, license, parameters, downloads, access)
ZOO = {
    "a-timm-small": ("timm", "image-classification", [], "apache-2.0", 300_000, 90, {}),
    "b-timm-big": ("timm", "image-classification", [], "mit", 50_000_000, 80, {}),
    "c-vit": ("transformers", "image-classification", [], "apache-2.0", 5_000_000, 70, {}),
    "d-custom-tag": ("transformers", "feature-extraction", ["image-classification"],
                     "apache-2.0", 2_000_000, 60, {}),
    "e-no-params": ("timm", "image-classification", [], "apache-2.0", None, 50, {}),
    "f-gated": ("timm", "image-classification", [], "apache-2.0", 1_000_000, 40,
                {"gated": True}),
    "g-sklearn": ("sklearn", "image-classification", [], "apache-2.0", None, 30, {}),
    "h-private": ("timm", "image-classification", [], "apache-2.0", 800_000, 20,
                  {"private": True}),
}


def _weights(params: int) -> bytes:
    """A safetensors header declaring ``params`` float32 values (the data is left out:
    listings read only the header)."""
    header = json.dumps({"weight": {"dtype": "F32", "shape": [params],
                                    "data_offsets": [0, 4 * params]}}).encode()
    return struct.pack("<Q", len(header)) + header


def _files(library: str, pipeline: str, tags: list[str], license: str,
           params: int | None) -> dict[str, bytes | str]:
    card = {"library_name": library, "pipeline_tag": pipeline, "license": license}
    if tags:
        card["tags"] = tags
    config = {"architecture": "test_resnet"} if library == "timm" else {"model_type": "vit"}
    files: dict[str, bytes | str] = {
        "README.md": f"---\n{yaml.safe_dump(card)}---\n\n# test model\n",
        "config.json": json.dumps(config),
    }
    if params is not None:
        files["model.safetensors"] = _weights(params)
    elif library != "sklearn":
        files["pytorch_model.bin"] = b"pickled weights"
    return files


@pytest.fixture(scope="module")
def zoo(hub):
    """Eight repositories of one author, spread over four pages; sha by name."""
    shas = {}
    for name, (library, pipeline, tags, lic, params, downloads, access) in ZOO.items():
        shas[name] = hub.add_model(f"{AUTHOR}/{name}", _files(library, pipeline, tags, lic,
                                                              params),
                                   downloads=downloads, **access)
    return shas


def names(items) -> list[str]:
    return [item.ref.split("/", 1)[1] for item in items]


def listing(**kwargs):
    kwargs.setdefault("hub_author", AUTHOR)
    kwargs.setdefault("hub_sort", "downloads")
    kwargs.setdefault("listing_ttl", 0)
    return list_models(**kwargs)


def test_tag_filter_matches_custom_tags_but_pipeline_tag_is_exact(zoo, hub):
    hub.reset_log()
    tagged = listing(hub_filter=["image-classification"])
    assert names(tagged.candidates) == ["a-timm-small", "b-timm-big", "c-vit", "d-custom-tag",
                                        "e-no-params"]
    assert len(hub.requests("GET", LISTING)) == 4  # every page of the listing
    exact = listing(pipeline_tag="image-classification")
    assert names(exact.candidates) == ["a-timm-small", "b-timm-big", "c-vit", "e-no-params"]
    assert {c.extra["pipeline_tag"] for c in exact.candidates} == {"image-classification"}
    # pinned to the listed commit
    assert {c.ref: c.revision for c in exact.candidates}[f"{AUTHOR}/c-vit"] == zoo["c-vit"]


def test_skips_say_why(zoo):
    result = listing()
    reasons = {s.ref.split("/", 1)[1]: s.reason for s in result.skipped}
    assert set(reasons) == {"f-gated", "g-sklearn"}  # the private repo is invisible
    assert "--include-gated" in reasons["f-gated"]
    assert "'sklearn' is not supported" in reasons["g-sklearn"]


def test_library_filter(zoo):
    timm = listing(library="timm")
    assert names(timm.candidates) == ["a-timm-small", "b-timm-big", "e-no-params"]
    assert names(timm.skipped) == ["f-gated"]
    assert {c.library for c in timm.candidates} == {"timm"}
    transformers = listing(library="transformers")
    assert names(transformers.candidates) == ["c-vit", "d-custom-tag"]
    with pytest.raises(UsageError, match="Unknown library 'sklearn'"):
        listing(library="sklearn")


def test_parameter_range_keeps_unknown_counts_with_a_note(zoo):
    result = listing(min_params="1M", max_params="10M")
    assert names(result.candidates) == ["c-vit", "d-custom-tag", "e-no-params"]
    params = {r["ref"].split("/", 1)[1]: r for r in result.rows()}
    assert params["c-vit"]["params"] == 5_000_000 and params["c-vit"]["notes"] == []
    assert params["e-no-params"]["params"] is None
    assert "parameter count unknown" in params["e-no-params"]["notes"][0]
    assert names(listing(max_params="300K").candidates) == ["a-timm-small", "e-no-params"]
    assert names(listing(min_params=40_000_000).candidates) == ["b-timm-big", "e-no-params"]
    with pytest.raises(UsageError, match="larger than --max-params"):
        listing(min_params="2M", max_params="1M")


def test_license_filter(zoo):
    assert names(listing(licenses=["mit"]).candidates) == ["b-timm-big"]
    both = listing(licenses=["MIT", "apache-2.0"], library="timm")
    assert names(both.candidates) == ["a-timm-small", "b-timm-big", "e-no-params"]


def test_gated_and_private_need_a_token(zoo, monkeypatch):
    no_token = listing(include_gated=True)
    (gated,) = no_token.skipped[:1]
    assert gated.ref.endswith("f-gated") and "no token" in gated.reason
    monkeypatch.setenv("HF_TOKEN", "hf_listing_test_token")
    with_token = listing(include_gated=True, library="timm")
    assert names(with_token.candidates) == ["a-timm-small", "b-timm-big", "e-no-params",
                                            "f-gated", "h-private"]
    assert names(listing(library="timm").skipped) == ["f-gated"]


def test_limit_counts_candidates_that_pass_and_stops_paging(zoo, hub):
    hub.reset_log()
    result = listing(min_params="1M", hub_limit=3)  # checked here, not by the Hub
    assert names(result.candidates) == ["b-timm-big", "c-vit", "d-custom-tag"]
    assert len(hub.requests("GET", LISTING)) == 2  # of four pages
    hub.reset_log()
    result = listing(min_params="1M", hub_limit=4)
    assert names(result.candidates) == ["b-timm-big", "c-vit", "d-custom-tag", "e-no-params"]
    assert len(hub.requests("GET", LISTING)) == 3  # e is the fifth model
    result = listing(pipeline_tag="image-classification", hub_limit=3, max_params="10M")
    assert names(result.candidates) == ["a-timm-small", "c-vit", "e-no-params"]
    assert result.skipped == []  # the gated model comes after the third candidate
    result = listing(pipeline_tag="image-classification", hub_limit=4, max_params="10M")
    assert names(result.candidates) == ["a-timm-small", "c-vit", "e-no-params"]
    assert names(result.skipped) == ["f-gated", "g-sklearn"]


def test_listing_cache_hit_makes_no_request_and_expiry_one(zoo, hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_listing_token")
    hub.reset_log()
    first = listing(library="timm", listing_ttl=60, cache_dir=tmp_path)
    pages = len(hub.requests("GET", LISTING))
    assert pages == 3  # five timm models with a token, two per page
    hub.reset_log()
    again = listing(library="timm", listing_ttl=60, cache_dir=tmp_path)
    assert hub.log == [] and again.rows() == first.rows()
    listing(library="transformers", listing_ttl=60, cache_dir=tmp_path)
    assert len(hub.requests("GET", LISTING)) == 1  # other parameters, another entry
    for path in (tmp_path / "listings").iterdir():  # keyed and stored without the token
        assert "hf_secret_listing_token" not in path.read_text()
    now = listing_cache._now()
    monkeypatch.setattr(listing_cache, "_now", lambda: now + 61)
    hub.reset_log()
    expired = listing(library="timm", listing_ttl=60, cache_dir=tmp_path)
    assert len(hub.requests("GET", LISTING)) == pages and expired.rows() == first.rows()
    hub.reset_log()
    listing(library="timm", listing_ttl=0, cache_dir=tmp_path)
    assert len(hub.requests("GET", LISTING)) == pages


def test_default_ttl_comes_from_the_environment(zoo, hub, tmp_path, monkeypatch):
    monkeypatch.delenv("ZOOSEL_LISTING_TTL")
    monkeypatch.setenv("ZOOSEL_CACHE", str(tmp_path))
    kwargs = dict(hub_author=AUTHOR, hub_sort="downloads", library="timm")
    list_models(**kwargs)
    hub.reset_log()
    list_models(**kwargs)
    assert hub.log == []  # an hour by default
    monkeypatch.setenv("ZOOSEL_LISTING_TTL", "soon")
    with pytest.raises(UsageError, match="ZOOSEL_LISTING_TTL"):
        list_models(**kwargs)


def test_parse_and_format_counts():
    assert [parse_count(t) for t in ("5M", "300K", "1.2B", "1_000", "7", " 2.5m ")] == [
        5_000_000, 300_000, 1_200_000_000, 1000, 7, 2_500_000]
    assert [format_count(n) for n in (None, 999, 300_000, 5_000_000, 1_200_000_000)] == [
        "?", "999", "300.0K", "5.0M", "1.2B"]
    with pytest.raises(UsageError, match="300K, 5M or 1.2B"):
        parse_count("five million")


def run(*args: str, code: int = 0):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


def test_list_command_table_and_json(zoo, hub):
    hub.reset_log()
    out = run("list", "--hub-author", AUTHOR, "--hub-sort", "downloads", "--min-params", "1M",
              "--max-params", "10M")
    lines = out.splitlines()
    assert lines[0].split() == ["candidate", "source", "library", "pipeline", "tag", "params",
                                "revision"]
    row = next(line for line in lines if line.startswith(f"hf:{AUTHOR}/c-vit"))
    assert row.split() == [f"hf:{AUTHOR}/c-vit", "hf", "transformers",
                           "image-classification", "5.0M", zoo["c-vit"][:12]]
    assert f"note hf:{AUTHOR}/e-no-params: parameter count unknown" in out
    assert f"skipped hf:{AUTHOR}/f-gated: gated repository" in out
    assert lines[-1] == "3 candidates, 2 skipped, 0 failed"
    # nothing was downloaded or loaded: listing requests only
    assert all(path.startswith(LISTING) for _, path in hub.log)
    doc = json.loads(run("list", "--hub-author", AUTHOR, "--pipeline-tag",
                         "image-classification", "--library", "transformers", "--format",
                         "json"))
    (row,) = doc["candidates"]
    assert row == {"id": f"hf:{AUTHOR}/c-vit@{zoo['c-vit'][:12]}", "source": "hf",
                   "ref": f"{AUTHOR}/c-vit", "library": "transformers",
                   "pipeline_tag": "image-classification", "params": 5_000_000,
                   "revision": zoo["c-vit"], "notes": []}
    assert doc["skipped"] == [] and doc["failed"] == []


def test_list_command_messages(zoo):
    out = run("list", "--hub-author", AUTHOR, "--min-params", "lots", code=2)
    assert "300K, 5M or 1.2B" in out
    out = run("list", code=2)
    assert "no candidates" in out and "--from-cache" in out and "Traceback" not in out


# ---------------------------------------------------------------- the offline hf-cache source


@pytest.fixture()
def hf_cache(zoo, tmp_path, monkeypatch):
    """A fresh Hugging Face cache holding a, c and e in full and only b's config."""
    from huggingface_hub import constants, hf_hub_download, snapshot_download

    cache = tmp_path / "hf-hub-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    for name in ("a-timm-small", "c-vit", "e-no-params"):
        snapshot_download(f"{AUTHOR}/{name}")
    hf_hub_download(f"{AUTHOR}/b-timm-big", "config.json")
    return cache


def offline(monkeypatch) -> None:
    """``HF_HUB_OFFLINE=1`` as huggingface_hub read it at import. (Not in the environment:
    a library first imported now would stay offline for the session, so import datasets,
    which copies the setting, first.)"""
    import datasets  # noqa: F401
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_offline_mode_lists_the_local_cache(hf_cache, zoo, hub, monkeypatch):
    offline(monkeypatch)
    hub.reset_log()
    result = list_models(hub_author=AUTHOR, hub_filter=["image-classification"])
    assert hub.log == []
    assert {c.source for c in result.candidates} == {"hf-cache"}
    assert {c.ref.split("/")[1]: c.revision for c in result.candidates} == {
        name: zoo[name] for name in ("a-timm-small", "c-vit", "e-no-params")}
    (skipped,) = result.skipped
    assert skipped.ref.endswith("b-timm-big") and "only its configuration" in skipped.reason
    assert names(list_models(hub_author=AUTHOR, library="transformers").candidates) == ["c-vit"]
    assert names(list_models(hub_author=AUTHOR, max_params="1M").candidates) == [
        "a-timm-small", "e-no-params"]
    assert names(list_models(hub_author=AUTHOR, licenses=["mit"]).candidates) == []
    assert names(list_models(hub_author=AUTHOR, hub_limit=1).candidates) == ["a-timm-small"]
    assert hub.log == []


def test_offline_sort_by_last_modified_and_a_note_for_the_others(hf_cache, zoo, hub):
    import os

    from huggingface_hub import scan_cache_dir

    stamps = {"a-timm-small": 1_000_000, "c-vit": 3_000_000, "e-no-params": 2_000_000}
    for repo in scan_cache_dir(hf_cache).repos:
        for revision in repo.revisions:
            for file in revision.files:
                when = stamps.get(repo.repo_id.split("/")[1], 0)
                os.utime(file.blob_path, (when, when))
    newest = list_models(from_cache=True, hub_author=AUTHOR, hub_sort="last_modified")
    assert names(newest.candidates) == ["c-vit", "e-no-params", "a-timm-small"]
    assert not any(c.extra["notes"] for c in newest.candidates)
    assert names(list_models(from_cache=True, hub_author=AUTHOR, hub_sort="last_modified",
                             hub_limit=1).candidates) == ["c-vit"]
    by_downloads = list_models(from_cache=True, hub_author=AUTHOR, hub_sort="downloads")
    assert names(by_downloads.candidates) == ["a-timm-small", "c-vit", "e-no-params"]
    assert all("--hub-sort downloads is not known offline" in " ".join(c.extra["notes"])
               for c in by_downloads.candidates)


def test_from_cache_online_and_hf_cache_models(hf_cache, zoo, hub):
    hub.reset_log()
    result = list_models(from_cache=True, hub_search="vit")
    assert [c.id for c in result.candidates] == [f"hf-cache:{AUTHOR}/c-vit@{zoo['c-vit'][:12]}"]
    named = list_models(models=[f"hf-cache:{AUTHOR}/a-timm-small"])
    assert named.candidates[0].revision == zoo["a-timm-small"]
    missing = list_models(models=[f"hf-cache:{AUTHOR}/g-sklearn"])
    assert "not in the local Hugging Face cache" in missing.failed[0].error
    assert hub.log == []


def test_zoosel_list_offline_in_a_fresh_process(hf_cache, zoo, hub):
    hub.reset_log()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hf_cache)}
    done = subprocess.run(
        [sys.executable, "-m", "zoosel", "list", "--hub-author", AUTHOR, "--format", "json"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert [r["ref"] for r in doc["candidates"]] == [
        f"{AUTHOR}/{name}" for name in ("a-timm-small", "c-vit", "e-no-params")]
    assert {r["source"] for r in doc["candidates"]} == {"hf-cache"}
    assert hub.log == []


def test_rank_offline_from_the_cache_loads_the_cached_snapshot(hub, tmp_path, monkeypatch):
    from huggingface_hub import constants, snapshot_download

    from zoosel.api import rank
    from zoosel.testing.factories import make_timm_model_dir, write_image_folder

    sha = hub.add_model_from_dir("lst-real/tiny-resnet",
                                 make_timm_model_dir(tmp_path / "m", "test_resnet", 3, seed=5))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-hub-cache"))
    snapshot_download("lst-real/tiny-resnet")
    data = write_image_folder(tmp_path / "images", num_classes=2, per_class=3, size=24)
    offline(monkeypatch)
    hub.reset_log()
    ranking = rank(str(data), hub_author="lst-real", scorers=["lfc"], device="cpu",
                   use_cache=False, progress=False)
    (result,) = ranking.results
    assert result.candidate == f"hf-cache:lst-real/tiny-resnet@{sha[:12]}" and result.ok
    assert hub.log == []


def test_models_that_need_remote_code_are_skipped_unless_trusted(hub, tmp_path, monkeypatch):
    from huggingface_hub import constants, snapshot_download

    for name, downloads in (("custom", 20), ("plain", 10)):
        files = _files("transformers", "image-classification", [], "mit", 1000)
        if name == "custom":
            files["config.json"] = json.dumps({"model_type": "vit", "auto_map": {
                "AutoModel": "modeling_x.XModel"}})
            files["modeling_x.py"] = "raise SystemExit('must never run')\n"
        hub.add_model(f"rc/{name}", files, downloads=downloads,
                      tags=["custom_code"] if name == "custom" else None)
    result = listing(hub_author="rc")
    assert names(result.candidates) == ["plain"]
    (skipped,) = result.skipped
    assert skipped.ref == "rc/custom" and "--trust-remote-code" in skipped.reason
    assert names(listing(hub_author="rc", hub_limit=1).candidates) == ["plain"]
    trusted = listing(hub_author="rc", trust_remote_code=True)
    assert names(trusted.candidates) == ["custom", "plain"] and not trusted.skipped
    assert trusted.candidates[0].extra["custom_code"]

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    for name in ("custom", "plain"):
        snapshot_download(f"rc/{name}")
    cached = list_models(from_cache=True, hub_author="rc")
    assert names(cached.candidates) == ["plain"]
    assert [s.ref for s in cached.skipped] == ["rc/custom"]
    assert "--trust-remote-code" in cached.skipped[0].reason
    assert names(list_models(from_cache=True, hub_author="rc", trust_remote_code=True)
                 .candidates) == ["custom", "plain"]
