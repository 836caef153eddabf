"""Batched, no-grad forward passes over the sample: features and source probabilities."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from zoosel.engine.preprocess import Pipeline, batch_length, to_device
from zoosel.errors import CandidateError
from zoosel.types import LoadedModel

PRECISIONS = ("fp32", "bf16", "fp16")


def autocast_dtype(precision: str) -> Any:
    """The torch dtype of an extraction ``precision`` (``fp32``, ``bf16``, ``fp16``)."""
    import torch

    if precision not in PRECISIONS:
        from zoosel.errors import UsageError

        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}.")
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


class _Images:
    """A map-style dataset applying one candidate's preprocessing to sample rows."""

    def __init__(self, get_image: Callable[[int], Any], rows: Sequence[int],
                 transform: Callable[[Any], Any]) -> None:
        self.get_image, self.rows, self.transform = get_image, rows, transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Any:
        return self.transform(self.get_image(int(self.rows[i])))


def resolve_device(device: str) -> str:
    """``auto`` becomes ``cuda`` when a GPU is visible, else ``cpu``."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _batches(model: LoadedModel, get_image: Callable[[int], Any], rows: Sequence[int],
             batch_size: int, workers: int, pipeline: Pipeline | None, key: Any) -> Iterable[Any]:
    """The sample's batches: through the shared ``pipeline``, or (None) a DataLoader that
    decodes and transforms every image again (``workers`` processes, 0: this one)."""
    import torch

    if pipeline is not None:
        full_key = (model.preprocess_key, key) if model.preprocess_key and key else None
        return pipeline.batches(model.transform, get_image, rows, batch_size, full_key)
    return torch.utils.data.DataLoader(
        _Images(get_image, rows, model.transform), batch_size=batch_size,
        num_workers=workers, shuffle=False,
    )


def extract(
    model: LoadedModel,
    get_image: Callable[[int], Any],
    rows: Sequence[int],
    *,
    device: str = "cpu",
    batch_size: int = 32,
    workers: int = 0,
    progress: Callable[[int], None] | None = None,
    precision: str = "fp32",
    pipeline: Pipeline | None = None,
    key: Any = None,
    channels_last: bool = False,
) -> tuple[dict[str, np.ndarray], int]:
    """Run ``model`` over ``rows`` and return its arrays and the number of batches.

    Arrays: ``features`` (N, D) float32 always; ``source_probs`` (N, Cs) float32
    when the model has a source head (free in the same forward pass).
    ``precision`` (``fp32``, ``bf16``, ``fp16``) sets autocast for the forward pass;
    arrays are always returned in float32. Images come through ``pipeline`` (shared
    between candidates under ``key``, which identifies the images), else through a
    DataLoader with ``workers`` processes. ``channels_last`` lays out 4-d inputs NHWC
    (for a module already converted).
    Raises :class:`CandidateError` when the model fails or gives non-finite values,
    and lets ``torch.cuda.OutOfMemoryError`` through so the caller can retry.
    """
    import torch

    loader = _batches(model, get_image, rows, batch_size, workers, pipeline, key)
    feats: list[torch.Tensor] = []
    probs: list[torch.Tensor] = []
    batches = 0
    device_type = torch.device(device).type
    autocast = torch.autocast(device_type, dtype=autocast_dtype(precision),
                              enabled=precision != "fp32")
    with torch.inference_mode(), autocast:
        for batch in loader:
            try:
                f, logits = model.forward(to_device(batch, device, channels_last))
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as exc:
                text = str(exc).strip().splitlines()
                raise CandidateError(
                    f"forward pass failed: {text[0] if text else type(exc).__name__}"
                ) from exc
            batches += 1
            feats.append(f.float().cpu())
            if logits is not None:
                probs.append(torch.softmax(logits.double(), dim=-1).float().cpu())
            if progress is not None:
                progress(batch_length(batch))
    arrays = {"features": torch.cat(feats).numpy()}
    if probs:
        arrays["source_probs"] = torch.cat(probs).numpy()
    for name, array in arrays.items():
        if not np.isfinite(array).all():
            raise CandidateError(f"the model produced non-finite {name.replace('_', ' ')}")
    return arrays, batches


def extract_sketch(
    model: LoadedModel,
    get_image: Callable[[int], Any],
    rows: Sequence[int],
    labels: Sequence[int],
    num_classes: int,
    options: Mapping[str, Any],
    *,
    device: str = "cpu",
    batch_size: int = 32,
    workers: int = 0,
    progress: Callable[[int], None] | None = None,
    pipeline: Pipeline | None = None,
    key: Any = None,
    channels_last: bool = False,
) -> tuple[np.ndarray, int]:
    """Gradient sketches (N, k) of ``model`` over ``rows``, and the number of batches.

    ``options`` are the fields of :class:`zoosel.engine.sketch.SketchConfig`; images
    come as in :func:`extract`.
    """
    import torch

    from zoosel.engine.sketch import GradientSketcher, SketchConfig

    config = SketchConfig(**{k: tuple(v) if k == "layers" else v for k, v in options.items()})
    loader = _batches(model, get_image, rows, batch_size, workers, pipeline, key)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    parts: list[torch.Tensor] = []
    with GradientSketcher(model, config, num_classes, device=device) as sketcher:
        for start, batch in zip(range(0, len(rows), batch_size), loader, strict=False):
            size = batch_length(batch)
            try:
                parts.append(sketcher(to_device(batch, device, channels_last),
                                      y[start:start + size].to(device)).float().cpu())
            except CandidateError:
                raise
            except Exception as exc:
                text = str(exc).strip().splitlines()
                raise CandidateError(
                    f"gradient sketch failed: {text[0] if text else type(exc).__name__}"
                ) from exc
            if progress is not None:
                progress(size)
    sketch = torch.cat(parts).numpy()
    if not np.isfinite(sketch).all():
        raise CandidateError("the model produced non-finite gradients")
    return sketch, len(parts)
