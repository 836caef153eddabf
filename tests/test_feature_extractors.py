"""Image-feature-extraction checkpoints from the Hub rank on their features and say why the
head-based scores are absent; random weights and random forward passes are refused."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

import zoosel
from zoosel.api import list_models
from zoosel.cli import cli
from zoosel.cli import commands as _commands  # noqa: F401  (registers the commands)
from zoosel.errors import CandidateError, NoResultsError
from zoosel.sources.local import LocalSource
from zoosel.testing.factories import write_image_folder
from zoosel.testing.hf_models import make_hf_model_dir
from zoosel.types import LoadSettings

AUTHOR = "fx"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("d") / "img", num_classes=3,
                              per_class=4, size=32)


@pytest.fixture(scope="module")
def hub_zoo(hub, tmp_path_factory):
    """A DINOv2 backbone (image-feature-extraction), a full SigLIP (zero-shot), a ViT
    classifier (image-classification) and a depth model, on the FakeHub."""
    root = tmp_path_factory.mktemp("hubzoo")
    models = {
        "dino": ("Dinov2Model", "dinov2", "image-feature-extraction"),
        "siglip": ("SiglipModel", "siglip", "zero-shot-image-classification"),
        "vit": ("ViTForImageClassification", "vit", "image-classification"),
        "depth": ("ViTModel", "vit", "depth-estimation"),
    }
    for name, (cls, model_type, pipeline) in models.items():
        folder = make_hf_model_dir(root / name, cls, model_type=model_type, num_labels=5)
        hub.add_model_from_dir(f"{AUTHOR}/{name}", folder, library_name="transformers",
                               pipeline_tag=pipeline)
    return models


def test_pipeline_tag_is_repeatable_and_lists_any_of_them(hub_zoo):
    listing = list_models(
        hub_author=AUTHOR, listing_ttl=0,
        pipeline_tag=["image-classification", "image-feature-extraction"])
    assert sorted(c.ref for c in listing.candidates) == [f"{AUTHOR}/dino", f"{AUTHOR}/vit"]
    one = list_models(hub_author=AUTHOR, listing_ttl=0,
                             pipeline_tag="zero-shot-image-classification")
    assert [c.ref for c in one.candidates] == [f"{AUTHOR}/siglip"]


def test_feature_extractors_rank_and_say_why_leep_and_nce_are_absent(hub_zoo, data, tmp_path):
    card = tmp_path / "card.md"
    result = CliRunner().invoke(cli, [
        "select", "--dataset", str(data), "--hub-author", AUTHOR, "--listing-ttl", "0",
        "--pipeline-tag", "image-feature-extraction", "--pipeline-tag",
        "zero-shot-image-classification", "--pipeline-tag", "image-classification",
        "-s", "lfc", "-s", "leep", "-s", "nce", "-s", "domain_sim", "-q", "--no-cache",
        "--output", str(tmp_path / "r.json"), "--card", str(card)])
    assert result.exit_code == 0, result.output
    ranking = json.loads((tmp_path / "r.json").read_text())
    rows = {r["candidate"].split("@")[0]: r for r in ranking["ranking"]}
    assert set(rows) == {f"hf:{AUTHOR}/dino", f"hf:{AUTHOR}/siglip", f"hf:{AUTHOR}/vit"}
    assert not ranking["failed"]
    for name in ("dino", "siglip"):
        row = rows[f"hf:{AUTHOR}/{name}"]
        assert row["scores"]["lfc"] is not None and "leep" not in row["scores"]
        notes = " | ".join(row["notes"])
        assert "leep: the model has no classification head" in notes
        assert "nce: the model has no classification head" in notes
        assert "domain_sim: no source-domain data" in notes
    assert "vision tower of this SiglipModel" in " ".join(rows[f"hf:{AUTHOR}/siglip"]["notes"])
    vit = rows[f"hf:{AUTHOR}/vit"]
    assert vit["scores"]["leep"] is not None and vit["scores"]["nce"] is not None
    text = card.read_text()
    assert "## Notes" in text and "leep: the model has no classification head" in text


def test_missing_weights_are_refused_not_randomised(tmp_path):
    def without_classifier(model, out):
        weights = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier")}
        model.save_pretrained(out, state_dict=weights)

    path = make_hf_model_dir(tmp_path / "m", "ViTForImageClassification", model_type="vit",
                             save=without_classifier)
    source = LocalSource()
    with pytest.raises(CandidateError, match=r"2 weights .* are not in the checkpoint "
                                             r"\(classifier.bias, classifier.weight\)"):
        source.load(source.resolve(str(path)), LoadSettings())


def test_vit_without_pooler_says_its_features_are_the_cls_token(tmp_path):
    def without_pooler(model, out):
        weights = {k: v for k, v in model.state_dict().items() if "pooler" not in k}
        model.save_pretrained(out, state_dict=weights)

    path = make_hf_model_dir(tmp_path / "m", "ViTModel", model_type="vit", save=without_pooler)
    source = LocalSource()
    loaded = source.load(source.resolve(str(path)), LoadSettings())
    assert loaded.notes == ["no pooler weights in the checkpoint: features are the CLS token"]


def test_random_forward_pass_is_refused_and_not_cached(tmp_path, data, monkeypatch):
    """Dropout left on at inference (simulated on every nn.Dropout) makes two passes differ."""
    path = make_hf_model_dir(tmp_path / "m", "ViTModel", model_type="vit",
                             hidden_dropout_prob=0.3)
    monkeypatch.setattr(torch.nn.Dropout, "forward",
                        lambda self, x: torch.nn.functional.dropout(x, self.p, training=True))
    cache = tmp_path / "cache"
    with pytest.raises(NoResultsError) as info:
        zoosel.rank(str(data), models=[f"local:{path}"], scorers=["lfc"], cache_dir=cache,
                    progress=False)
    (failed,) = info.value.ranking.failed
    assert "different features on two passes over the same images" in failed.error
    assert not list(cache.rglob("*.npz")) and not list(cache.rglob("*.npy"))


def test_headless_timm_ranks_on_features_with_a_note(tmp_path, data):
    from zoosel.api import rank
    from zoosel.testing.factories import make_timm_model_dir

    path = make_timm_model_dir(tmp_path / "headless", arch="test_vit", num_classes=0)
    ranking = rank(str(data), models=[f"local:{path}"], scorers=["lfc", "leep"],
                   use_cache=False, progress=False)
    (row,) = ranking.results
    assert set(row.scores) == {"lfc"}
    assert row.notes == ["leep: the model has no classification head (a feature extractor), "
                         "so there are no source-class probabilities"]
