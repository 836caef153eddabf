"""What ``zoosel select`` says when there is nothing to rank or the input cannot work: measured
cases, each answered before the dataset is loaded, with what to do."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from zoosel.cli import cli
from zoosel.cli import commands as _commands  # noqa: F401  (registers the commands)
from zoosel.testing.factories import make_images, make_timm_model_dir, write_image_folder


@pytest.fixture()
def data(tmp_path):
    return write_image_folder(tmp_path / "imgs", num_classes=2, per_class=2, size=16)


@pytest.fixture()
def no_dataset_loading(monkeypatch):
    """Fail the test if the dataset is loaded: these messages must come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("the dataset was loaded before the input was checked")

    monkeypatch.setattr("zoosel.api.load_target", refuse)


def select(*args: str):
    result = CliRunner().invoke(cli, ["select", "-q", "--no-cache", *args])
    assert "Traceback" not in result.output
    return result


def test_offline_with_an_empty_cache_says_the_cache_was_listed(hub, data, tmp_path, monkeypatch,
                                                               no_dataset_loading):
    import datasets  # noqa: F401  (reads the offline setting at import)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    result = select("--dataset", str(data), "--hub-filter", "image-classification")
    assert result.exit_code == 1
    assert "offline mode (HF_HUB_OFFLINE=1)" in result.output
    assert "local Hugging Face cache" in result.output and "instead of the Hub" in result.output
    assert "is empty" in result.output


def test_empty_local_dir_says_it_has_no_checkpoint_folders(data, tmp_path, no_dataset_loading):
    (tmp_path / "zoo").mkdir()
    result = select("--dataset", str(data), "--local-dir", str(tmp_path / "zoo"))
    assert result.exit_code == 1
    assert f"--local-dir {tmp_path / 'zoo'}: no checkpoint sub-folders in it" in result.output


def test_mistyped_local_folder_is_not_sent_to_the_hub(hub, data, tmp_path, monkeypatch,
                                                      no_dataset_loading):
    model = make_timm_model_dir(tmp_path / "m", num_classes=3)
    monkeypatch.chdir(tmp_path)
    hub.reset_log()
    result = select("--dataset", "imgz", "--model", f"local:{model}")
    assert result.exit_code == 2
    assert "there is no folder 'imgz'" in result.output and "Did you mean imgs?" in result.output
    assert "Retrying" not in result.output and hub.log == []


def test_images_directly_in_the_dataset_folder(tmp_path, no_dataset_loading):
    folder = tmp_path / "flat"
    folder.mkdir()
    for i, (image, _) in enumerate(make_images(num_classes=2, per_class=2, size=8)):
        image.save(folder / f"{i}.png")
    model = make_timm_model_dir(tmp_path / "m", num_classes=3)
    result = select("--dataset", str(folder), "--model", f"local:{model}")
    assert result.exit_code == 2
    assert "holds 4 images directly" in result.output
    assert "one sub-folder per class" in result.output
    assert str(folder / "<class name>" / "0.png") in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "nosuch:foo"], "Unknown model source 'nosuch'"),
    (["--model", "timm:test_resnet", "--per-class", "0"], "--per-class must be at least 1"),
    (["--model", "local:/no/such/checkpoint"], "does not exist"),
])
def test_bad_arguments_are_reported_before_the_dataset_loads(data, args, message,
                                                             no_dataset_loading):
    result = select("--dataset", str(data), *args)
    assert result.exit_code in (1, 2) and message in result.output


def test_list_command_says_why_it_found_nothing(tmp_path):
    (tmp_path / "zoo").mkdir()
    result = CliRunner().invoke(cli, ["list", "--local-dir", str(tmp_path / "zoo")])
    assert result.exit_code == 0
    assert "0 candidates" in result.output and "no checkpoint sub-folders" in result.output



@pytest.mark.parametrize("command", ["select", "list", "recommend"])
def test_help_lists_options_in_sections(command):
    from zoosel.ci import recommend_cmd

    cli.add_command(recommend_cmd)
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    headings = [line[:-1] for line in lines if line.endswith(":") and not line.startswith(" ")]
    assert "Options" not in headings and headings[-1] == "Other options"
    command_obj = cli.get_command(None, command)
    untitled = [p.name for p in command_obj.params if not getattr(p, "help_section", None)]
    if command != "recommend":  # its own policy options stay under "Other options"
        assert untitled == []  # only --help (added by click) is left to "Other options"
    for param in command_obj.params:  # every option is shown exactly once
        name = max(param.opts, key=len)
        shown = [line for line in lines
                 if re.match(rf" {{2}}(-\w, )?{re.escape(name)}( |$)", line)]
        assert len(shown) == 1, name
    if command == "select":
        assert headings == ["Dataset", "Candidates", "Hub listing", "Scoring", "Output",
                            "Device and batching", "Cache, resume and safety",
                            "Gradient sketches and source data", "Ranking card",
                            "Other options"]


def test_hub_listing_with_no_match_says_so(hub, data, no_dataset_loading):
    result = select("--dataset", str(data), "--hub-author", "nobody-has-this-name",
                    "--listing-ttl", "0")
    assert result.exit_code == 1
    assert "the Hub listed no model matching them" in result.output
