"""Every transformers image-classification architecture, and the headless checkpoints users
meet on the Hub, loads through zoosel with finite, deterministic features of the right width.

One tiny random model per class of transformers' ``MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES``
is saved with ``save_pretrained`` and loaded as a user's ``local:`` candidate. Its features
and source logits are checked against transformers' own forward pass of the same checkpoint:
the probabilities must equal the model's, and the model's classifier applied to zoosel's
features must give the model's logits (so the features are the classifier's input).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import default_collate

from zoosel.errors import CandidateError
from zoosel.sources.local import LocalSource
from zoosel.testing.factories import make_images
from zoosel.testing.hf_models import image_side, make_hf_model_dir
from zoosel.types import LoadSettings

transformers = pytest.importorskip("transformers")
from transformers.models.auto.modeling_auto import (  # noqa: E402
    MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
)

NUM_LABELS = 7  # no hidden width of the tiny models is 7, so the heads are unambiguous


def _classes() -> list[tuple[str, str]]:
    pairs = []
    for model_type, names in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES.items():
        for name in (names,) if isinstance(names, str) else names:
            pairs.append((model_type, name))
    return pairs


CLASSES = _classes()

# Families that are not image classifiers of images alone: zoosel must say why.
REFUSED = {"ShieldGemma2ForImageClassification": "text prompt"}


@pytest.fixture(scope="session")
def build(tmp_path_factory):
    """Build each tiny checkpoint once per session: ``build(key, class_name, **kwargs)``."""
    root = tmp_path_factory.mktemp("families")
    built: dict[str, Path] = {}

    def make(key: str, class_name: str, **kwargs) -> Path:
        if key not in built:
            try:
                built[key] = make_hf_model_dir(root / key, class_name, num_labels=NUM_LABELS,
                                               **kwargs)
            except ImportError as exc:  # an optional package this architecture needs
                built[key] = exc  # type: ignore[assignment]
        if isinstance(built[key], ImportError):
            pytest.skip(f"{class_name} needs a package that is not installed: "
                        f"{str(built[key]).strip().splitlines()[0]}")
        return built[key]

    return make


def _images(side: int) -> list:
    return [img for img, _ in make_images(num_classes=3, per_class=2, size=side, seed=1)]


def _load(path: Path):
    source = LocalSource()
    return source.load(source.resolve(str(path)), LoadSettings())


def _run(loaded, images):
    batch = default_collate([loaded.transform(img) for img in images])
    with torch.no_grad():
        return loaded.forward(batch)


def _reference(path: Path, class_name: str, images):
    """transformers' own forward pass over the same images, and the model."""
    model = getattr(transformers, class_name).from_pretrained(path).eval()
    processor = transformers.AutoImageProcessor.from_pretrained(path)
    inputs = processor(images=[img.convert("RGB") for img in images], return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs)
    logits = getattr(out, "logits", None)
    return model, (logits if logits is not None else out.last_hidden_state)  # PP-LCNet


def _heads(model) -> list[torch.nn.Linear]:
    return [m for m in model.modules()
            if isinstance(m, torch.nn.Linear) and m.out_features == NUM_LABELS]


def _head_of(model, features: torch.Tensor) -> torch.Tensor:
    """The model's classifier(s) applied to ``features``: distilled models (DeiT, LeViT,
    SwiftFormer) average two heads, on one input or on two concatenated token features."""
    heads = _heads(model)
    if features.shape[1] == heads[0].in_features:
        return torch.stack([h(features) for h in heads]).mean(0)
    parts = torch.split(features, [h.in_features for h in heads], dim=1)
    return torch.stack([h(p) for h, p in zip(heads, parts, strict=True)]).mean(0)


@pytest.mark.parametrize(("model_type", "class_name"), CLASSES, ids=[c for _, c in CLASSES])
def test_image_classifier_ranks_with_its_head(build, model_type, class_name):
    path = build(class_name, class_name, model_type=model_type)
    images = _images(image_side(model_type))
    if class_name in REFUSED:
        with pytest.raises(CandidateError, match=REFUSED[class_name]):
            _run(_load(path), images)
        return
    first, second = _load(path), _load(path)
    feats, logits = _run(first, images)
    again, logits_again = _run(second, images)
    assert torch.isfinite(feats).all()
    assert torch.equal(feats, again) and torch.equal(logits, logits_again)
    model, ref_logits = _reference(path, class_name, images)
    heads = _heads(model)
    assert first.has_head and first.source_classes == [f"label_{i}" for i in range(NUM_LABELS)]
    widths = {h.in_features for h in heads}
    assert feats.shape == (len(images), sum(h.in_features for h in heads)) or (
        len(widths) == 1 and feats.shape == (len(images), widths.pop()))
    torch.testing.assert_close(logits.softmax(-1), ref_logits.softmax(-1), atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(_head_of(model, feats), ref_logits, atol=1e-4, rtol=1e-4)


def _without_pooler(model, out: Path) -> None:
    weights = {k: v for k, v in model.state_dict().items() if "pooler" not in k}
    model.save_pretrained(out, state_dict=weights)


# Checkpoints without a classification head, as published on the Hub: (class, model type,
# builder keywords, what zoosel's features must equal in transformers' own output).
HEADLESS = {
    "vit": ("ViTModel", "vit", {}, "pooler_output"),
    "vit-no-pooler": ("ViTModel", "vit", {"save": _without_pooler}, "cls"),
    "dinov2": ("Dinov2Model", "dinov2", {}, "pooler_output"),
    "convnext": ("ConvNextModel", "convnext", {}, "pooler_output"),
    "clip-vision": ("CLIPVisionModel", "clip", {}, "pooler_output"),
    "siglip-vision": ("SiglipVisionModel", "siglip", {}, "pooler_output"),
    "clip-full": ("CLIPModel", "clip", {}, "vision_pooler"),
    "siglip-full": ("SiglipModel", "siglip", {}, "vision_pooler"),
    "siglip2-full": ("Siglip2Model", "siglip2", {}, "vision_pooler"),
    "vit-mae": ("ViTMAEModel", "vit_mae", {}, "mae_unmasked_cls"),
}


def _headless_reference(path: Path, class_name: str, kind: str, images) -> torch.Tensor:
    extra = {"mask_ratio": 0.0} if kind == "mae_unmasked_cls" else {}
    model = getattr(transformers, class_name).from_pretrained(path, **extra).eval()
    processor = transformers.AutoImageProcessor.from_pretrained(path)
    inputs = processor(images=[img.convert("RGB") for img in images], return_tensors="pt")
    with torch.no_grad():
        if kind == "vision_pooler":
            return model.vision_model(**inputs).pooler_output
        if kind == "mae_unmasked_cls":  # no patch masked, patches in their own order
            noise = torch.arange(model.embeddings.patch_embeddings.num_patches, dtype=torch.float)
            out = model(**inputs, noise=noise.expand(len(images), -1))
            return out.last_hidden_state[:, 0]
        out = model(**inputs)
        if kind == "cls":
            return out.last_hidden_state[:, 0]
        return out.pooler_output.flatten(1)


@pytest.mark.parametrize("key", list(HEADLESS))
def test_headless_checkpoint_ranks_on_features(build, key):
    class_name, model_type, kwargs, kind = HEADLESS[key]
    path = build(key, class_name, model_type=model_type, **kwargs)
    images = _images(image_side(model_type))
    first, second = _load(path), _load(path)
    feats, logits = _run(first, images)
    again, _ = _run(second, images)
    assert logits is None and not first.has_head and first.source_classes is None
    assert torch.isfinite(feats).all()
    assert torch.equal(feats, again)
    expected = _headless_reference(path, class_name, kind, images)
    assert feats.shape == expected.shape
    torch.testing.assert_close(feats, expected, atol=1e-5, rtol=1e-4)
