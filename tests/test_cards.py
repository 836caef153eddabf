"""Ranking cards: rendering, writing, and pushing them to a Hub-compatible server."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import yaml
from click.testing import CliRunner

from zoosel import __version__, cards
from zoosel.cli import card_commands as _card_commands  # noqa: F401
from zoosel.cli import cli
from zoosel.cli import commands as _commands  # noqa: F401
from zoosel.errors import (
    HubAuthError,
    HubConnectionError,
    HubServerError,
    HubTimeoutError,
)
from zoosel.formats import render_json
from zoosel.testing.factories import (
    make_image_dataset,
    make_timm_model_dir,
    publish_parquet_dataset,
)
from zoosel.types import CandidateResult, DatasetSummary, Ranking, Skipped

REPO = "cards/mydata"
COMMIT = f"/api/datasets/{REPO}/commit/"
PREUPLOAD = f"/api/datasets/{REPO}/preupload/"
TOKEN = "hf_someFakeTokenThatMustNeverBeShown1234"


def _ranking(seed: int = 7) -> Ranking:
    return Ranking(
        dataset=DatasetSummary(
            name=REPO, split="train", fingerprint="f00d", num_classes=3, num_samples=12,
            per_class=4, seed=seed, class_names=("cat", "dog", "owl"), class_counts=(4, 4, 4),
        ),
        scorers=["lfc", "logme"], primary="lfc",
        results=[
            CandidateResult("hf:org/a@123", "hf", {"lfc": 0.5, "logme": -1.0},
                            num_params=1_500_000, seconds=1.25),
            CandidateResult("local:/m/b@456", "local", {"lfc": 0.25, "logme": float("nan")},
                            num_params=900, seconds=0.5, cached=True),
        ],
        failed=[CandidateResult("hf:org/broken", "hf", error="cannot load it")],
        skipped=[Skipped("hf", "org/sk", "library 'sklearn' is not supported")],
        seconds=3.5, pool_relative=["logme"],
    )


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text[4:text.index("\n---\n", 4)])


# ------------------------------------------------------------------------------ rendering


def test_card_front_matter_has_every_field():
    meta = _front_matter(cards.render_card(_ranking()))
    assert meta["zoosel_version"] == __version__ and meta["seconds"] == 3.5
    assert meta["dataset"] == {
        "id": REPO, "split": "train", "fingerprint": "f00d", "num_classes": 3,
        "classes": ["cat", "dog", "owl"], "num_samples": 12, "per_class": 4, "seed": 7,
        "class_counts": [4, 4, 4],
    }
    assert meta["sort_by"] == "lfc" and meta["recommended"] == "hf:org/a@123"
    first, second = meta["candidates"]
    assert first == {"rank": 1, "id": "hf:org/a@123", "source": "hf", "parameters": 1_500_000,
                     "scores": {"lfc": 0.5, "logme": -1.0}, "score_ranks": {"lfc": 1, "logme": 1},
                     "seconds": 1.25, "cached": False, "notes": []}
    assert second["scores"] == {"lfc": 0.25, "logme": None}
    assert second["score_ranks"] == {"lfc": 2} and second["cached"] is True
    by_name = {s["name"]: s for s in meta["scorers"]}
    assert by_name["logme"]["pool_relative"] and not by_name["lfc"]["pool_relative"]
    assert "Deshpande" in by_name["lfc"]["reference"]
    assert meta["failed"] == [{"id": "hf:org/broken", "source": "hf", "error": "cannot load it"}]
    assert meta["skipped"][0]["id"] == "hf:org/sk"


def test_card_body_is_readable():
    text = cards.render_card(_ranking())
    body = text.split("\n---\n", 1)[1]
    assert f"# Model ranking for {REPO}" in body
    assert "**Recommended: `hf:org/a@123`**" in body
    assert "| 1 | `hf:org/a@123` | hf | 1.5M | 0.5000 (1) | -1.0000 (1) |" in body
    assert "pool-relative" in body and "failed `hf:org/broken`" in body


def test_card_json_equals_the_ranking():
    ranking = _ranking()
    data = cards.card_json(ranking)
    assert data["ranking"] == json.loads(render_json(ranking))
    assert data["ranking"]["ranking"][1]["scores"]["logme"] is None
    meta = _front_matter(cards.render_card(ranking, generated_at=data["generated_at"]))
    assert {k: v for k, v in data.items() if k != "ranking"} == meta
    json.dumps(data, allow_nan=False)


def test_custom_template(tmp_path):
    template = tmp_path / "card.tmpl"
    template.write_text("Best for $dataset: $recommended ($$5 says so)\n$table\n")
    md, _ = cards.write_card(_ranking(), tmp_path / "c.md", template)
    body = md.read_text().split("\n---\n", 1)[1]
    assert body.strip().startswith(f"Best for {REPO}: hf:org/a@123 ($5 says so)")
    assert _front_matter(md.read_text())["recommended"] == "hf:org/a@123"
    with pytest.raises(cards.UsageError, match=r"\$nope"):
        cards.render_card(_ranking(), "oops $nope")


def test_write_card_writes_markdown_and_json(tmp_path):
    md, data = cards.write_card(_ranking(), tmp_path / "sub" / "ranking.md")
    assert md == tmp_path / "sub" / "ranking.md" and data == tmp_path / "sub" / "ranking.json"
    loaded = json.loads(data.read_text())
    assert loaded["generated_at"] == _front_matter(md.read_text())["generated_at"]
    assert sorted(p.name for p in md.parent.iterdir()) == ["ranking.json", "ranking.md"]


def test_tokens_are_redacted(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    ranking = _ranking()
    ranking.failed[0].error = f"401 with Authorization: Bearer {TOKEN}"
    assert TOKEN not in cards.render_card(ranking)
    assert "[redacted]" in cards.redact(f"x {TOKEN} y")


# ------------------------------------------------------------------------------ pushing


@pytest.fixture(scope="module")
def card_hub(hub, tmp_path_factory):
    root = tmp_path_factory.mktemp("cards")
    publish_parquet_dataset(hub, REPO, make_image_dataset(3, 4, size=24))
    zoo = root / "zoo"
    make_timm_model_dir(zoo / "tiny", "test_resnet", 5, seed=0)
    return {"hub": hub, "zoo": zoo}


@pytest.fixture
def env(card_hub, monkeypatch, tmp_path):
    hub = card_hub["hub"]
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(cards, "BACKOFF_SECONDS", 0.0)
    monkeypatch.chdir(tmp_path)
    hub.clear_failures()
    hub.required_token = None
    hub.reset_log()
    yield card_hub
    hub.clear_failures()
    hub.required_token = None


_cards_made = itertools.count(100)


@pytest.fixture
def card_file(tmp_path):
    # Each test's card differs (the seed), so none is byte-identical to one already pushed.
    md, _ = cards.write_card(_ranking(seed=next(_cards_made)), tmp_path / "out" / "card.md")
    return md


def invoke(*args: str, code: int = 0):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    assert TOKEN not in result.output and TOKEN not in (result.stderr or "")
    return result


def test_select_pushes_a_pull_request_to_the_dataset_repo(env, tmp_path):
    hub = env["hub"]
    before = len(hub.pull_requests(REPO))
    out = invoke("select", "--dataset", REPO, "--local-dir", str(env["zoo"]), "-s", "lfc", "-q",
                 "--card", "card.md", "--push-to-hub")
    assert "opened a pull request: " in out.output and "/discussions/" in out.output
    prs = hub.pull_requests(REPO)
    assert len(prs) == before + 1
    pr = prs[-1]
    assert pr["changed"] == ["zoosel/card.json", "zoosel/card.md"]
    assert pr["files"]["zoosel/card.md"] == (tmp_path / "card.md").read_bytes()
    assert pr["files"]["zoosel/card.json"] == (tmp_path / "card.json").read_bytes()
    meta = _front_matter(pr["files"]["zoosel/card.md"].decode())
    assert meta["dataset"]["id"] == REPO and meta["dataset"]["classes"] == [
        "class_0", "class_1", "class_2"]
    assert meta["recommended"].startswith("local:") and math.isfinite(
        meta["candidates"][0]["scores"]["lfc"])
    assert "zoosel/card.md" not in hub.repo_files(REPO, repo_type="dataset")
    for path in (tmp_path / "card.md", tmp_path / "card.json"):
        assert TOKEN not in path.read_text()
    assert hub.unhandled == [] and hub.errors == []


def test_card_push_no_pr_commits_to_main(env, card_file):
    hub = env["hub"]
    before = len(hub.pull_requests(REPO))
    out = invoke("card", "push", str(card_file), "--repo", REPO, "--no-pr")
    assert "committed to main" in out.output
    files = hub.repo_files(REPO, repo_type="dataset")
    assert files["zoosel/card.md"] == card_file.read_bytes()
    assert json.loads(files["zoosel/card.json"]) == json.loads(
        card_file.with_suffix(".json").read_text())
    assert len(hub.pull_requests(REPO)) == before


@pytest.mark.parametrize("no_pr", [False, True])
def test_an_unchanged_card_is_not_committed_again(env, card_file, no_pr):
    hub = env["hub"]
    invoke("card", "push", str(card_file), "--repo", REPO, "--no-pr")
    prs, head = len(hub.pull_requests(REPO)), hub.repo_files(REPO, repo_type="dataset")
    hub.reset_log()
    out = invoke("card", "push", str(card_file), "--repo", REPO, *(["--no-pr"] if no_pr else []))
    assert "nothing to upload" in out.output and "already has these files" in out.output
    assert "opened a pull request" not in out.output and "committed to" not in out.output
    assert not hub.requests("POST", COMMIT)
    assert len(hub.pull_requests(REPO)) == prs
    assert hub.repo_files(REPO, repo_type="dataset") == head


def test_local_paths_in_a_card_are_pointed_out_before_upload(env, tmp_path):
    ranking = _ranking()
    ranking.results[1] = CandidateResult("local:/home/someone/zoo/b@456", "local",
                                         {"lfc": 0.25}, num_params=900)
    md, _ = cards.write_card(ranking, tmp_path / "out" / "card.md")
    out = invoke("card", "push", str(md), "--repo", REPO, "--dry-run")
    assert "note: the card names 1 local path(s) (/home/someone/zoo/b)" in out.output
    plain = tmp_path / "notes.md"
    plain.write_text("# Just notes\n")
    assert cards.plan_upload(plain, REPO).local_paths == ()
    clean = invoke("card", "push", str(plain), "--repo", REPO, "--dry-run")
    assert "local path" not in clean.output
    data = {"dataset": {"id": "/data/set"}, "candidates": [
        {"id": "local:/m/x@1"}, {"id": "hf:org/y@2"}, {"id": "local:C:\\m\\z@3"}],
        "failed": [{"id": "local:/m/x@1"}]}
    assert cards._local_paths(data) == ("/data/set", "/m/x", "C:\\m\\z")
    assert cards._local_paths({"dataset": {"id": "org/data"}, "candidates": []}) == ()


def test_dry_run_uploads_nothing(env, card_file):
    hub = env["hub"]
    out = invoke("card", "push", str(card_file), "--repo", REPO, "--dry-run")
    assert "dry run" in out.output and "nothing uploaded" in out.output
    assert "zoosel/card.md" in out.output and "zoosel/card.json" in out.output
    size = card_file.stat().st_size
    assert f"{size} bytes" in out.output and REPO in out.output
    assert hub.log == []


def test_select_dry_run_uploads_nothing(env):
    hub = env["hub"]
    before = len(hub.pull_requests(REPO))
    out = invoke("select", "--dataset", REPO, "--local-dir", str(env["zoo"]), "-s", "lfc", "-q",
                 "--push-to-hub", "--dry-run")
    assert "dry run" in out.output and "zoosel/ranking-card.md" in out.output
    assert not [p for m, p in hub.log if m == "POST"]
    assert len(hub.pull_requests(REPO)) == before


def test_push_to_hub_needs_a_repository(env, tmp_path):
    out = invoke("select", "--dataset", str(tmp_path), "--local-dir", str(env["zoo"]),
                 "--push-to-hub", code=2)
    assert "--card-repo" in out.output
    out = invoke("select", "--dataset", REPO, "--local-dir", str(env["zoo"]), "--dry-run",
                 code=2)
    assert "--push-to-hub" in out.output


@pytest.mark.parametrize("case, expected", [
    ("no-token", "no Hugging Face token"),
    ("wrong-token", "the Hub rejected the token (401)"),
    ("403", "may not write to dataset cards/mydata (403)"),
    ("404", "no dataset cards/missing on the Hub"),
    ("429", "rate-limiting uploads (429 after 3 retries)"),
    ("500", "failed to accept the upload to dataset cards/mydata (500 after 3 retries)"),
])
def test_failures_keep_local_files_and_explain(env, card_file, monkeypatch, case, expected):
    hub = env["hub"]
    repo = REPO
    if case == "no-token":
        monkeypatch.delenv("HF_TOKEN")
    elif case == "wrong-token":
        hub.required_token = "hf_theRightTokenIsAnotherOne"
    elif case == "403":
        hub.fail_next(PREUPLOAD, 403, message=f"no write access for {TOKEN}")
    elif case == "404":
        repo = "cards/missing"
    else:
        hub.fail_next(COMMIT, int(case), times=None)
    before = len(hub.pull_requests(REPO))
    out = invoke("card", "push", str(card_file), "--repo", repo, code=6)
    assert expected in out.output
    assert "The card is kept locally" in out.output and "zoosel card push" in out.output
    assert "Traceback" not in out.output
    assert card_file.is_file() and card_file.with_suffix(".json").is_file()
    assert len(hub.pull_requests(REPO)) == before
    if case in ("429", "500"):
        assert len(hub.requests("POST", COMMIT)) == cards.RETRIES + 1


def test_select_keeps_the_card_when_the_upload_fails(env, tmp_path):
    env["hub"].fail_next(PREUPLOAD, 403)
    out = invoke("select", "--dataset", REPO, "--local-dir", str(env["zoo"]), "-s", "lfc", "-q",
                 "--card", "mine.md", "--push-to-hub", code=6)
    assert "403" in out.output and "wrote the ranking card to mine.md" in out.output
    assert _front_matter((tmp_path / "mine.md").read_text())["dataset"]["id"] == REPO
    assert (tmp_path / "mine.json").is_file()


def test_a_transient_server_error_is_retried(env, card_file):
    hub = env["hub"]
    hub.fail_next(COMMIT, 503, times=2)
    out = invoke("card", "push", str(card_file), "--repo", REPO)
    assert "opened a pull request" in out.output and "retrying" in out.output
    assert len(hub.requests("POST", COMMIT)) == 3


def test_a_commit_the_hub_applied_but_answered_with_an_error_is_not_repeated(env, card_file):
    hub = env["hub"]
    before = len(hub.pull_requests(REPO))
    hub.fail_next(COMMIT, 502, after=True)
    out = invoke("card", "push", str(card_file), "--repo", REPO)
    assert "retrying" in out.output and "opened a pull request: " in out.output
    assert len(hub.requests("POST", COMMIT)) == 1  # the retry found the pull request
    prs = hub.pull_requests(REPO)
    assert len(prs) == before + 1 and prs[-1]["title"].startswith("Add zoosel model ranking")
    assert out.output.strip().endswith(f"/discussions/{prs[-1]['num']}")

    again = invoke("card", "push", str(card_file), "--repo", REPO)  # the same card again
    assert "a pull request with this card is already open" in again.output
    assert len(hub.pull_requests(REPO)) == before + 1


def test_a_commit_to_main_the_hub_applied_but_failed_to_confirm(env, card_file):
    hub = env["hub"]
    hub.fail_next(COMMIT, 500, after=True)
    out = invoke("card", "push", str(card_file), "--repo", REPO, "--no-pr")
    assert "retrying" in out.output and "committed to main" in out.output
    assert "nothing to upload" not in out.output
    # the retry's preupload finds the files on main, so no second commit is posted
    assert len(hub.requests("POST", PREUPLOAD)) == 2 and len(hub.requests("POST", COMMIT)) == 1
    assert hub.repo_files(REPO, repo_type="dataset")["zoosel/card.md"] == card_file.read_bytes()


def test_network_errors_are_classified(card_file):
    import httpx2

    plan = cards.plan_upload(card_file, REPO)
    request = httpx2.Request("POST", "https://huggingface.co/api")
    timeout = cards.hub_error(httpx2.ReadTimeout("slow", request=request), plan)
    assert isinstance(timeout, HubTimeoutError) and "did not answer in time" in str(timeout)
    offline = cards.hub_error(httpx2.ConnectError("refused", request=request), plan)
    assert isinstance(offline, HubConnectionError) and "cannot reach the Hub" in str(offline)
    assert cards.hub_error(ValueError("a bug"), plan) is None


def test_error_classes_are_zoosel_errors():
    assert issubclass(HubAuthError, PermissionError) and HubServerError.exit_code == 6
