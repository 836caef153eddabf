"""The ranking's summary in the repository card's YAML metadata (``--card-metadata``)."""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from click.testing import CliRunner

from zoosel import __version__, cards
from zoosel.cli import card_commands as _card_commands  # noqa: F401
from zoosel.cli import cli
from zoosel.cli import commands as _commands  # noqa: F401
from zoosel.errors import UsageError
from zoosel.testing.factories import (
    make_image_dataset,
    make_timm_model_dir,
    publish_parquet_dataset,
)
from zoosel.types import CandidateResult, DatasetSummary, Ranking

TOKEN = "hf_anotherFakeTokenThatMustNeverBeShown99"

FRONT = """\
---
# maintained by hand
license: cc-by-4.0
tags:
- image-classification
- 'birds'   # quoted on purpose
configs:
  - config_name: default
    data_files:
      - split: train
        path: data/train-*
pretty_name: "Birds: a \\"small\\" set"
my_team:
  owner: someone
  reviewed: 2024-05-01
  notes: [a, b]
---"""
BODY = """
# Birds

Some *markdown* with a table:

| a | b |
|---|---|
| 1 | 2 |

--- not front matter ---
"""
README = FRONT + BODY


def _ranking(best: str = "hf:org/a@123") -> Ranking:
    return Ranking(
        dataset=DatasetSummary(
            name="meta/whatever", split="train", fingerprint="f00d", num_classes=3,
            num_samples=12, per_class=4, seed=7, class_names=("cat", "dog", "owl"),
        ),
        scorers=["lfc", "logme"], primary="lfc",
        results=[
            CandidateResult(best, "hf", {"lfc": 0.5, "logme": -1.0}, num_params=10),
            CandidateResult("local:/m/b@456", "local", {"lfc": 0.25, "logme": float("nan")}),
            CandidateResult("timm:resnet18", "timm", {"lfc": float("nan"), "logme": 0.0}),
        ],
        failed=[], skipped=[], seconds=3.5, pool_relative=["logme"],
    )


def _split(text: str) -> tuple[dict, str, str]:
    """(metadata, front matter text, body) of a README, as huggingface_hub finds them."""
    from huggingface_hub.repocard import REGEX_YAML_BLOCK

    match = REGEX_YAML_BLOCK.search(text)
    assert match is not None
    return yaml.safe_load(match.group(2)), text[:match.end()], text[match.end():]


@pytest.fixture
def env(hub, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(cards, "BACKOFF_SECONDS", 0.0)
    monkeypatch.chdir(tmp_path)
    hub.clear_failures()
    hub.reset_log()
    yield hub
    hub.clear_failures()


def _repo(hub, name: str, readme: str | None = README) -> str:
    repo = f"meta/{name}"
    hub.delete_repo(repo, repo_type="dataset")
    files = {"data/train.csv": "a,b\n1,2\n"}
    if readme is not None:
        files["README.md"] = readme
    hub.add_dataset(repo, files)
    return repo


def _card(tmp_path, ranking: Ranking | None = None, name: str = "card.md"):
    md, _ = cards.write_card(ranking or _ranking(), tmp_path / "out" / name)
    return md


def invoke(*args: str, code: int = 0):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    assert TOKEN not in result.output
    return result


# ------------------------------------------------------------------------------ library


def test_card_metadata_summarises_the_ranking(tmp_path):
    md = _card(tmp_path)
    summary = cards.plan_upload(md, "meta/x", metadata=True).metadata
    assert summary == {
        "version": __version__,
        "generated_at": summary["generated_at"],
        "card": "zoosel/card.md",
        "recommended": "hf:org/a@123",
        "sort_by": "lfc",
        "scorers": [{"name": "lfc", "reference": summary["scorers"][0]["reference"]},
                    {"name": "logme", "reference": summary["scorers"][1]["reference"]}],
        "dataset": {"split": "train", "per_class": 4, "seed": 7, "fingerprint": "f00d"},
        "num_candidates": 3,
        "candidates": [
            {"rank": 1, "id": "hf:org/a@123", "revision": "123", "score": 0.5},
            {"rank": 2, "id": "local:/m/b@456", "revision": "456", "score": 0.25},
            {"rank": 3, "id": "timm:resnet18", "revision": None, "score": None},
        ],
    }
    assert "Deshpande" in summary["scorers"][0]["reference"]
    # Without its JSON, the card's front matter gives the same summary.
    md.with_suffix(".json").unlink()
    assert cards.plan_upload(md, "meta/x", metadata=True).metadata == summary


def test_card_metadata_lists_ten_candidates_at_most():
    ranking = _ranking()
    ranking.results = [dataclasses.replace(ranking.results[0], candidate=f"hf:org/m{i}@r{i}",
                                           scores={"lfc": 1.0 - i / 100, "logme": 0.0})
                       for i in range(14)]
    summary = cards.card_metadata(cards.card_json(ranking))
    assert summary["num_candidates"] == 14 and len(summary["candidates"]) == 10
    assert [c["rank"] for c in summary["candidates"]] == list(range(1, 11))
    assert summary["candidates"][9] == {"rank": 10, "id": "hf:org/m9@r9", "revision": "r9",
                                        "score": 0.91}


def test_merged_readme_keeps_every_other_byte():
    new = cards.merged_readme(README, {"zoosel": {"recommended": "m"}})
    meta, front, body = _split(new)
    assert body == _split(README)[2] and new.endswith(BODY)
    assert front.startswith(FRONT[:-len("---")])
    assert meta == {**_split(README)[0], "zoosel": {"recommended": "m"}}
    again = cards.merged_readme(new, {"zoosel": {"recommended": "n", "more": [1, 2]}})
    assert again == new.replace("  recommended: m\n",
                                "  recommended: n\n  more:\n  - 1\n  - 2\n")


@pytest.mark.parametrize("before, after", [
    # replaced in place, with its list at the key's own indentation and a blank line after
    ("---\na: 1\nzoosel:\n- x\n- y\n\nb: 2 # c\n---\nbody\n",
     "---\na: 1\nzoosel:\n  k: v\n\nb: 2 # c\n---\nbody\n"),
    # line endings kept
    ("---\r\na: 1\r\nzoosel: old\r\n---\r\nbody\r\n",
     "---\r\na: 1\r\nzoosel:\r\n  k: v\r\n---\r\nbody\r\n"),
    # no front matter, or an empty one
    ("# Title\n\ntext\n", "---\nzoosel:\n  k: v\n---\n# Title\n\ntext\n"),
    ("---\n---\nbody\n", "---\nzoosel:\n  k: v\n---\nbody\n"),
    # an anchor shared with the replaced key: dumped again, same values
    ("---\nzoosel: &x 1\nb: *x\n---\nbody\n", "---\nzoosel:\n  k: v\nb: 1\n---\nbody\n"),
])
def test_merged_readme_edge_cases(before, after):
    assert cards.merged_readme(before, {"zoosel": {"k": "v"}}) == after


def test_merged_readme_refuses_broken_metadata():
    with pytest.raises(UsageError, match="does not parse"):
        cards.merged_readme("---\na: [\n---\nbody\n", {"zoosel": {}})
    with pytest.raises(UsageError, match="not a mapping"):
        cards.merged_readme("---\n- a\n---\nbody\n", {"zoosel": {}})


# ------------------------------------------------------------------------------ pushing


def test_card_push_puts_the_summary_in_the_same_pull_request(env, tmp_path):
    repo = _repo(env, "with-readme")
    md = _card(tmp_path)
    out = invoke("card", "push", str(md), "--repo", repo, "--card-metadata")
    assert "opened a pull request" in out.output and "README.md" in out.output
    prs = env.pull_requests(repo)
    assert len(prs) == 1
    pr = prs[0]
    assert pr["changed"] == ["README.md", "zoosel/card.json", "zoosel/card.md"]
    assert pr["files"]["zoosel/card.md"] == md.read_bytes()
    readme = pr["files"]["README.md"].decode()
    meta, front, body = _split(readme)
    old_meta = _split(README)[0]
    assert {k: v for k, v in meta.items() if k != "zoosel"} == old_meta
    assert list(meta)[:-1] == list(old_meta)
    assert body == _split(README)[2] and readme.endswith(BODY)
    assert front.startswith(FRONT[:-len("---")])
    assert meta["zoosel"]["recommended"] == "hf:org/a@123"
    assert meta["zoosel"]["card"] == "zoosel/card.md"
    assert meta["zoosel"]["candidates"][0]["revision"] == "123"
    assert "README.md" in pr["description"]
    assert env.repo_files(repo, repo_type="dataset")["README.md"] == README.encode()
    assert env.unhandled == [] and env.errors == []


def test_a_second_push_replaces_the_summary(env, tmp_path):
    repo = _repo(env, "twice")
    invoke("card", "push", str(_card(tmp_path)), "--repo", repo, "--card-metadata", "--no-pr")
    first = env.repo_files(repo, repo_type="dataset")["README.md"].decode()
    assert _split(first)[0]["zoosel"]["recommended"] == "hf:org/a@123"
    md = _card(tmp_path, _ranking(best="hf:org/c@789"), name="other.md")
    invoke("card", "push", str(md), "--repo", repo, "--card-metadata")
    readme = env.pull_requests(repo)[-1]["files"]["README.md"].decode()
    meta, _, body = _split(readme)
    assert readme.count("\nzoosel:") == 1
    assert meta["zoosel"]["recommended"] == "hf:org/c@789"
    assert meta["zoosel"]["card"] == "zoosel/other.md"
    assert {k: v for k, v in meta.items() if k != "zoosel"} == _split(README)[0]
    assert body == _split(README)[2] and readme.endswith(BODY)


def test_a_repo_without_readme_gets_one(env, tmp_path):
    repo = _repo(env, "no-readme", readme=None)
    invoke("card", "push", str(_card(tmp_path)), "--repo", repo, "--card-metadata")
    pr = env.pull_requests(repo)[-1]
    assert pr["changed"] == ["README.md", "zoosel/card.json", "zoosel/card.md"]
    meta, _, body = _split(pr["files"]["README.md"].decode())
    assert list(meta) == ["zoosel"] and meta["zoosel"]["recommended"] == "hf:org/a@123"
    assert "zoosel/" in body


def test_dry_run_shows_the_summary_and_uploads_nothing(env, tmp_path):
    repo = _repo(env, "dry")
    env.reset_log()
    out = invoke("card", "push", str(_card(tmp_path)), "--repo", repo, "--card-metadata",
                 "--dry-run")
    assert "nothing uploaded" in out.output and "README.md" in out.output
    assert "metadata key 'zoosel'" in out.output and "recommended: hf:org/a@123" in out.output
    assert env.log == []
    assert env.pull_requests(repo) == []


@pytest.mark.parametrize("where", ["reading", "committing"])
def test_a_403_explains_and_keeps_the_card(env, tmp_path, where):
    repo = _repo(env, f"forbidden-{where}")
    if where == "reading":
        env.fail_next(f"/api/datasets/{repo}/revision/", 403, method="GET",
                      message=f"no access for {TOKEN}")
    else:
        env.fail_next(f"/api/datasets/{repo}/preupload/", 403)
    md = _card(tmp_path)
    out = invoke("card", "push", str(md), "--repo", repo, "--card-metadata", code=6)
    assert f"may not write to dataset {repo} (403)" in out.output
    assert "The card is kept locally" in out.output and "zoosel card push" in out.output
    assert "Traceback" not in out.output
    assert md.is_file() and md.with_suffix(".json").is_file()
    assert env.pull_requests(repo) == []
    assert bool(env.requests("POST", f"/api/datasets/{repo}/preupload/")) == (
        where == "committing")


def test_reading_the_readme_is_retried(env, tmp_path):
    repo = _repo(env, "flaky")
    env.fail_next(f"/api/datasets/{repo}/revision/", 503, method="GET")
    out = invoke("card", "push", str(_card(tmp_path)), "--repo", repo, "--card-metadata")
    assert "retrying" in out.output and "opened a pull request" in out.output
    assert "README.md" in env.pull_requests(repo)[-1]["changed"]


def test_select_card_metadata_keeps_the_dataset_card(env, tmp_path):
    repo = "meta/parquet"
    env.delete_repo(repo, repo_type="dataset")
    publish_parquet_dataset(env, repo, make_image_dataset(3, 4, size=24))
    original = env.repo_files(repo, repo_type="dataset")["README.md"].decode()
    zoo = tmp_path / "zoo"
    make_timm_model_dir(zoo / "tiny", "test_resnet", 5, seed=0)
    invoke("select", "--dataset", repo, "--local-dir", str(zoo), "-s", "lfc", "-q",
           "--card", "card.md", "--push-to-hub", "--card-metadata")
    pr = env.pull_requests(repo)[-1]
    assert pr["changed"] == ["README.md", "zoosel/card.json", "zoosel/card.md"]
    meta, _, body = _split(pr["files"]["README.md"].decode())
    old_meta, _, old_body = _split(original)
    assert {k: v for k, v in meta.items() if k != "zoosel"} == old_meta
    assert "configs" in meta and "dataset_info" in meta and body == old_body
    card_meta = _split((tmp_path / "card.md").read_text())[0]
    assert meta["zoosel"]["recommended"] == card_meta["recommended"]
    assert meta["zoosel"]["recommended"].startswith("local:")


def test_card_metadata_needs_push_to_hub(env, tmp_path):
    out = invoke("select", "--dataset", str(tmp_path), "--card", "c.md", "--card-metadata",
                 code=2)
    assert "--card-metadata" in out.output and "--push-to-hub" in out.output


def test_metadata_the_hub_rejects_is_explained(env, tmp_path):
    repo = _repo(env, "rejected")
    env.fail_next("/api/validate-yaml", 400, message="license: must be a known license")
    md = _card(tmp_path)
    out = invoke("card", "push", str(md), "--repo", repo, "--card-metadata", code=6)
    assert "the Hub rejected the metadata of README.md" in out.output
    assert "without --card-metadata" in out.output and "Traceback" not in out.output
    assert env.pull_requests(repo) == [] and md.is_file()


def test_a_repository_readme_that_does_not_parse_is_explained(env, tmp_path):
    repo = _repo(env, "broken", readme="---\nlicense: [mit\n---\n# Broken\n")
    md = _card(tmp_path)
    out = invoke("card", "push", str(md), "--repo", repo, "--card-metadata", code=6)
    assert f"dataset {repo}: the YAML metadata of the repository's README.md" in out.output
    assert "without --card-metadata" in out.output and "kept locally" in out.output
    assert "Traceback" not in out.output
    assert env.pull_requests(repo) == [] and md.is_file() and md.with_suffix(".json").is_file()


def test_a_readme_changed_meanwhile_is_not_overwritten(env, tmp_path, monkeypatch):
    repo = _repo(env, "raced")
    read = cards._read_readme

    def read_then_someone_commits(api, plan):
        found = read(api, plan)
        env.add_dataset(repo, {"README.md": README + "\nedited meanwhile\n"})
        return found

    monkeypatch.setattr(cards, "_read_readme", read_then_someone_commits)
    out = invoke("card", "push", str(_card(tmp_path)), "--repo", repo, "--card-metadata",
                 "--no-pr", code=6)
    assert "changed while the card was being uploaded (412)" in out.output
    readme = env.repo_files(repo, repo_type="dataset")["README.md"].decode()
    assert readme.endswith("edited meanwhile\n") and "zoosel:" not in readme
