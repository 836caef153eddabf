"""Turn a checkpoint folder (Hub layout) or a timm name into a :class:`LoadedModel`.

Shared by every built-in source. Safety rules live here, in one place:
safetensors are preferred, pickled weights are refused unless the user allowed
them (and then read with ``weights_only=True``), and remote code is never run
unless the user asked for it.
"""

from __future__ import annotations

import json
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
        forward=forward,
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


def load_transformers(
    repo_or_dir: str, settings: LoadSettings, *, revision: str | None = None
) -> LoadedModel:
    """Load a transformers image model and its image processor.

    Models with an image-classification head give penultimate features (the
    input of the classifier, captured by a forward hook) and source logits;
    bare backbones give the pooled output, else the CLS token or spatial mean.
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
    archs = getattr(config, "architectures", None) or []
    with_head = any(a.endswith("ForImageClassification") for a in archs)
    auto = tf.AutoModelForImageClassification if with_head else tf.AutoModel
    try:
        model = auto.from_pretrained(
            repo_or_dir, use_safetensors=None if settings.allow_pickle else True, **common
        )
    except Exception as exc:
        hint = ""
        if not settings.allow_pickle and "safetensors" in str(exc).lower():
            hint = " It may only have pickled weights: pass --allow-pickle if you trust it."
        raise CandidateError(f"cannot load {repo_or_dir}: {_short(exc)}.{hint}") from exc
    model.eval().to(settings.device)
    try:
        processor = tf.AutoImageProcessor.from_pretrained(repo_or_dir, **common)
    except Exception as exc:
        raise CandidateError(
            f"{repo_or_dir} has no usable image processor (preprocessor_config.json): "
            f"{_short(exc)}"
        ) from exc

    def transform(img: Any) -> torch.Tensor:
        return processor(images=img.convert("RGB"), return_tensors="pt")["pixel_values"][0]

    classifier = _find_classifier(model, config) if with_head else None
    captured: dict[str, torch.Tensor] = {}
    if classifier is not None:
        classifier.register_forward_pre_hook(lambda _m, args: captured.__setitem__("x", args[0]))

    def forward(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = model(pixel_values=batch)
        if classifier is not None:
            return captured.pop("x").flatten(1), out.logits
        return _pooled(out), None

    id2label = getattr(config, "id2label", None) or {}
    labels = [id2label[k] for k in sorted(id2label, key=int)] if classifier is not None else None
    return LoadedModel(
        module=model,
        transform=transform,
        forward=forward,
        num_params=_count_params(model),
        has_head=classifier is not None,
        source_classes=labels,
        preprocess_key=transformers_key(processor),
    )


def _find_classifier(model: Any, config: Any) -> Any:
    """The last linear layer mapping to the label space (its input is the penultimate)."""
    import torch

    num_labels = getattr(config, "num_labels", None)
    last = None
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module.out_features == num_labels:
            last = module
    return last


def _pooled(out: Any) -> Any:
    pooled = getattr(out, "pooler_output", None)
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
