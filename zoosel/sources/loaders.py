"""Turn a checkpoint folder (Hub layout) or a timm name into a :class:`LoadedModel`.

Shared by every built-in source. Safety rules live here, in one place:
safetensors are preferred, pickled weights are refused unless the user allowed
them (and then read with ``weights_only=True``), and remote code is never run
unless the user asked for it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from zoosel.engine.preprocess import timm_key, transformers_key
from zoosel.errors import CandidateError
from zoosel.types import LoadedModel, LoadSettings

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
SAFE_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.md"]
PICKLE_PATTERNS = ["*.bin", "*.pt", "*.pth"]


def allow_patterns(settings: LoadSettings) -> list[str]:
    """File patterns a source may download for a candidate, under ``settings``."""
    return (SAFE_PATTERNS + (PICKLE_PATTERNS if settings.allow_pickle else [])
            + (["*.py"] if settings.trust_remote_code else []))


def detect_library(path: Path) -> str:
    """``"timm"`` or ``"transformers"`` from a Hub-layout folder's config.json."""
    config = read_config(path)
    if config.get("model_type") == "timm_wrapper":  # a timm model inside transformers
        return "transformers"
    if "architecture" in config:
        return "timm"
    if "model_type" in config:
        return "transformers"
    raise CandidateError(
        f"{path}/config.json is neither a timm config (no 'architecture') nor a "
        "transformers config (no 'model_type'). Save the model with timm's "
        "save_for_hf or transformers' save_pretrained."
    )


def read_config(path: Path) -> dict[str, Any]:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CandidateError(f"{path} has no config.json; a checkpoint folder needs one.")
    try:
        return json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CandidateError(f"{config_file} is not valid JSON: {exc}") from exc


def available_memory() -> int | None:
    """Bytes of memory the system can still give (Linux ``MemAvailable``), or None."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


# Loading holds the file's tensors and the model's at once, plus activations.
MEMORY_FACTOR = 2.5


def check_memory(weight_files: list[Path], name: str) -> None:
    """Refuse a checkpoint that cannot fit in the memory left, before loading it."""
    need = MEMORY_FACTOR * sum(p.stat().st_size for p in weight_files)
    have = available_memory()
    if have is not None and need > have:
        raise CandidateError(
            f"{name} needs about {need / 2**30:.1f} GiB to load but only "
            f"{have / 2**30:.1f} GiB of memory is available; free memory or skip this model."
        )


def check_weight_files(path: Path, settings: LoadSettings) -> None:
    """Refuse pickled-only weights (unless allowed) and weights too big for memory."""
    files = [p for p in path.iterdir() if p.is_file()]
    safe = [p for p in files if p.suffix == ".safetensors"]
    if safe:
        check_memory(safe, str(path))
        return
    pickled = [p.name for p in files if p.suffix in PICKLE_SUFFIXES]
    if pickled and not settings.allow_pickle:
        raise CandidateError(
            f"{path} holds only pickled weights ({', '.join(sorted(pickled))}); loading a "
            "pickle can run arbitrary code. Convert it to safetensors, or pass "
            "--allow-pickle if you trust its author."
        )
    if not pickled:
        raise CandidateError(f"{path} holds no weights (*.safetensors).")
    check_memory([path / name for name in pickled], str(path))


def _count_params(module: Any) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def load_timm(name: str, settings: LoadSettings, *, checkpoint: Path | None = None) -> LoadedModel:
    """Load a timm model: ``name`` is a registry name, or ``local-dir:PATH``.

    ``checkpoint`` overrides the pretrained weights file (a single safetensors file).
    """
    import timm
    import torch

    kwargs: dict[str, Any] = {}
    if checkpoint is not None:
        kwargs["pretrained_cfg_overlay"] = {"file": str(checkpoint)}
        kwargs["num_classes"] = _head_size(name, checkpoint)
    try:
        model = timm.create_model(name, pretrained=True, **kwargs)
    except Exception as exc:
        raise CandidateError(f"timm could not create {name!r}: {_short(exc)}") from exc
    model.eval().to(settings.device)
    data_cfg = timm.data.resolve_model_data_config(model)
    transform = timm.data.create_transform(**data_cfg, is_training=False)
    has_head = getattr(model, "num_classes", 0) > 0

    def forward(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = model.forward_features(batch)
        feats = model.forward_head(x, pre_logits=True)
        logits = model.forward_head(x) if has_head else None
        return feats.flatten(1), logits

    labels = getattr(model, "pretrained_cfg", {}).get("label_names")
    return LoadedModel(
        module=model,
        transform=lambda img: transform(img.convert("RGB")),
        forward=_deterministic(forward, name),
        num_params=_count_params(model),
        has_head=has_head,
        source_classes=list(labels) if labels else None,
        preprocess_key=timm_key(data_cfg),
    )


def _head_size(arch: str, checkpoint: Path) -> int:
    """Number of classes of the head stored in a timm safetensors file (0 if none)."""
    import timm
    from safetensors import safe_open

    try:
        classifier = timm.create_model(arch, pretrained=False).pretrained_cfg.get("classifier")
        with safe_open(str(checkpoint), framework="pt") as fh:
            key = f"{classifier}.weight"
            return fh.get_slice(key).get_shape()[0] if key in fh.keys() else 0  # noqa: SIM118
    except Exception as exc:
        raise CandidateError(f"cannot read {checkpoint} as {arch!r}: {_short(exc)}") from exc


def load_timm_dir(path: Path, settings: LoadSettings) -> LoadedModel:
    """Load a timm checkpoint folder (config.json + weights) through ``local-dir:``."""
    check_weight_files(path, settings)
    return load_timm(f"local-dir:{path}", settings)


# Architectures transformers files under image classification that classify an image
# together with a text prompt: there are no image-only features or classes to rank.
_TEXT_PROMPTED = {
    "ShieldGemma2ForImageClassification": "a ShieldGemma2 safety classifier, which scores an "
    "image against a text prompt (a policy) through a language model",
}
# Model types whose forward pass masks patches at random unless given fixed noise.
_MASKED_PRETRAINING = {"vit_mae"}


def _image_classifier_names(model_type: str | None) -> tuple[str, ...]:
    """The classes transformers' ``AutoModelForImageClassification`` maps ``model_type`` to."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
    )

    names = MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES.get(model_type or "", ())
    return (names,) if isinstance(names, str) else tuple(names)


def _model_class(config: Any, name: str) -> tuple[Any, str]:
    """The class to load ``config`` with, and its kind: ``head`` (an image classifier),
    ``tower`` (the vision tower of an image-text model) or ``backbone``."""
    import transformers as tf

    archs = list(getattr(config, "architectures", None) or [])
    for arch in archs:
        if arch in _TEXT_PROMPTED:
            raise CandidateError(f"{name} is {_TEXT_PROMPTED[arch]}; zoosel ranks models that "
                                 "take images alone, so it cannot rank this one.")
    classifiers = _image_classifier_names(getattr(config, "model_type", None))
    for arch in archs:
        if arch in classifiers and hasattr(tf, arch):
            return getattr(tf, arch), "head"
    if getattr(config, "vision_config", None) is not None:
        return tf.AutoModel, "tower"
    return tf.AutoModel, "backbone"


def load_transformers(
    repo_or_dir: str, settings: LoadSettings, *, revision: str | None = None
) -> LoadedModel:
    """Load a transformers image model and its image processor.

    The class comes from the checkpoint's ``architectures`` and transformers' own
    image-classification mapping. Image classifiers give the input of their
    classification layer (found in the model: the linear layer(s) whose output is
    the logits) and the source logits; image-text models (CLIP, SigLIP) their vision
    tower's pooled output; bare backbones the pooled output, else the CLS token or
    spatial mean. Weights missing from the checkpoint (which transformers would
    initialise at random) and forward passes that differ between two runs are refused.
    """
    import torch
    import transformers as tf

    common: dict[str, Any] = dict(
        revision=revision,
        trust_remote_code=settings.trust_remote_code,
        local_files_only=settings.local_files_only,
    )
    try:
        config = tf.AutoConfig.from_pretrained(repo_or_dir, **common)
    except Exception as exc:
        raise CandidateError(f"cannot read the config of {repo_or_dir}: {_short(exc)}") from exc
    if getattr(config, "auto_map", None) and not settings.trust_remote_code:
        raise CandidateError(
            f"{repo_or_dir} needs custom code from its repository; zoosel does not run "
            "it unless you pass --trust-remote-code."
        )
    model_class, kind = _model_class(config, repo_or_dir)
    overrides: dict[str, Any] = {}
    if getattr(config, "mask_ratio", None):  # masked-image pretraining: see every patch
        overrides["mask_ratio"] = 0.0
    try:
        model, info = model_class.from_pretrained(
            repo_or_dir, use_safetensors=None if settings.allow_pickle else True,
            output_loading_info=True, **overrides, **common,
        )
    except Exception as exc:
        hint = ""
        if not settings.allow_pickle and "safetensors" in str(exc).lower():
            hint = " It may only have pickled weights: pass --allow-pickle if you trust it."
        raise CandidateError(f"cannot load {repo_or_dir}: {_short(exc)}.{hint}") from exc
    model.eval().to(settings.device)
    notes: list[str] = []
    module = model
    missing = sorted(info.get("missing_keys") or [])
    if kind == "tower":
        module = getattr(model, "vision_model", None)
        if module is None:
            raise CandidateError(
                f"{repo_or_dir} is a {type(model).__name__}, whose vision part zoosel cannot "
                "find (no vision_model); it ranks image classifiers, image backbones and the "
                "vision towers of CLIP-like models."
            )
        missing = [k for k in missing if k.startswith("vision_model.")]
        notes.append(f"features of the vision tower of this {type(model).__name__}")
    use_pooler = not any("pooler" in k for k in missing)
    if kind != "head" and not use_pooler:
        notes.append("no pooler weights in the checkpoint: features are the CLS token")
        missing = [k for k in missing if "pooler" not in k]
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise CandidateError(
            f"{repo_or_dir}: {len(missing)} weights of {type(model).__name__} are not in the "
            f"checkpoint ({shown}) and would be random, so its scores would be meaningless "
            "and change from run to run. Save the model with the class it was trained as."
        )
    try:
        processor = tf.AutoImageProcessor.from_pretrained(repo_or_dir, **common)
    except Exception as exc:
        raise CandidateError(
            f"{repo_or_dir} has no usable image processor (preprocessor_config.json): "
            f"{_short(exc)}"
        ) from exc

    def transform(img: Any) -> Any:
        inputs = processor(images=img.convert("RGB"), return_tensors="pt")
        items = {k: v[0] for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        return items["pixel_values"] if list(items) == ["pixel_values"] else items

    extra: dict[str, Any] = {}
    if getattr(config, "model_type", None) in _MASKED_PRETRAINING:
        # fixed noise: every patch kept, in order
        num_patches = module.embeddings.patch_embeddings.num_patches
        extra["noise"] = torch.arange(num_patches, dtype=torch.float)

    def run(batch: Any) -> Any:
        inputs = dict(batch) if isinstance(batch, Mapping) else {"pixel_values": batch}
        if "noise" in extra:
            first = next(iter(inputs.values()))
            inputs["noise"] = extra["noise"].to(first.device).expand(len(first), -1)
        return module(**inputs)

    if kind == "head":
        forward = _head_forward(model, run, config, repo_or_dir)
    else:
        def forward(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
            return _pooled(run(batch), use_pooler), None

    id2label = getattr(config, "id2label", None) or {}
    labels = [id2label[k] for k in sorted(id2label, key=int)] if kind == "head" else None
    return LoadedModel(
        module=module,
        transform=transform,
        forward=_deterministic(forward, repo_or_dir),
        num_params=_count_params(module),
        has_head=kind == "head",
        source_classes=labels,
        notes=notes,
        preprocess_key=transformers_key(processor),
    )


def _logits_of(out: Any, num_labels: int) -> Any:
    """The logits of a classifier's output (PP-LCNet returns them as last_hidden_state)."""
    logits = getattr(out, "logits", None)
    if logits is None:
        hidden = getattr(out, "last_hidden_state", None)
        if hidden is not None and hidden.ndim == 2 and hidden.shape[-1] == num_labels:
            logits = hidden
    return logits


def _head_forward(model: Any, run: Callable[[Any], Any], config: Any, name: str) -> Callable:
    """``forward`` of an image classifier: the input of its classification layer(s), found
    in the model (the linear layers mapping to the labels whose outputs make the logits),
    and the logits. Distilled models (DeiT, LeViT, SwiftFormer) average two heads: their
    inputs are concatenated when they differ."""
    import torch

    num_labels = len(getattr(config, "id2label", None) or {}) or config.num_labels
    linears = [m for m in model.modules()
               if isinstance(m, torch.nn.Linear) and m.out_features == num_labels]
    chosen: list[int] = []

    def forward(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        calls: list[tuple[torch.Tensor, torch.Tensor]] = []
        hooks = [linear.register_forward_hook(
            lambda _m, args, out: calls.append((args[0], out))) for linear in linears]
        try:  # hooks live for one call only: gradient sketches add and check their own
            out = run(batch)
        finally:
            for hook in hooks:
                hook.remove()
        logits = _logits_of(out, num_labels)
        if logits is None:
            raise CandidateError(f"{name}: the model returned no logits.")
        if not chosen:
            chosen.extend(_heads_making(calls, logits, name))
        inputs = [calls[i][0] for i in chosen]
        if all(x is inputs[0] for x in inputs):  # several heads on one input (LeViT)
            return inputs[0].flatten(1), logits
        return torch.cat([x.flatten(1) for x in inputs], dim=1), logits

    return forward


def _heads_making(calls: list, logits: Any, name: str) -> list[int]:
    """Indices of the hooked linear calls whose outputs are the logits (or average to them)."""
    import torch

    def close(outputs: list) -> bool:  # (B, 1, C) outputs count as (B, C) (Perceiver)
        if not outputs or any(o.numel() != logits.numel() for o in outputs):
            return False
        mean = torch.stack([o.float().reshape(logits.shape) for o in outputs]).mean(0)
        return torch.allclose(mean, logits.float(), rtol=1e-3, atol=1e-4)

    if calls and close([calls[-1][1]]):
        return [len(calls) - 1]
    if close([out for _, out in calls]):
        return list(range(len(calls)))
    raise CandidateError(
        f"cannot find the classification layer of {name}: no linear layer maps its features "
        f"to its {logits.shape[-1]} logits, so zoosel cannot tell its features apart."
    )


# Two passes over the same images may differ by rounding (other kernels for another batch
# size, reduced precision); random masking or dropout changes features far more.
_REPEAT_TOLERANCE = 1e-2


def _deterministic(forward: Callable, name: str) -> Callable:
    """``forward``, checked once to give the same features when run again on the first
    images of the first batch (one extra forward pass over two images)."""
    import torch

    checked: list[bool] = []

    def once(batch: Any) -> Any:
        if checked or torch.is_grad_enabled():  # checked during extraction, without grad
            return forward(batch)
        result = forward(batch)
        first = result[0][:2].float()
        again = forward(_first_rows(batch, len(first)))[0].float()
        if torch.isfinite(first).all():  # NaN features are reported as such later
            change = float((again - first).norm() / first.norm().clamp_min(1e-12))
            if change > _REPEAT_TOLERANCE:
                raise CandidateError(
                    f"{name} gives different features on two passes over the same images "
                    f"(relative change {change:.2g}: random masking or dropout left on at "
                    "inference), so its scores would change from run to run; zoosel does "
                    "not rank it."
                )
        checked.append(True)
        return result

    return once


def _first_rows(batch: Any, n: int) -> Any:
    if isinstance(batch, Mapping):
        return {k: v[:n] for k, v in batch.items()}
    return batch[:n]


def _pooled(out: Any, use_pooler: bool = True) -> Any:
    pooled = getattr(out, "pooler_output", None) if use_pooler else None
    if pooled is not None:
        return pooled.flatten(1)
    hidden = out.last_hidden_state
    if hidden.ndim == 3:  # tokens: the CLS token
        return hidden[:, 0]
    return hidden.flatten(2).mean(-1)  # feature maps: spatial mean


def load_dir(path: Path, settings: LoadSettings) -> LoadedModel:
    """Load a Hub-layout checkpoint folder of either library."""
    library = detect_library(path)
    if library == "timm":
        return load_timm_dir(path, settings)
    check_weight_files(path, settings)
    return load_transformers(str(path), settings)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
