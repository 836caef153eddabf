"""Input validation shared by the scorers: float64 matrices, labels, probabilities."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from zoosel.errors import ScoringError

if TYPE_CHECKING:

    import torch

_ROW_SUM_TOL = 1e-3
_BLOCK_BYTES = 2**19  # float64 row blocks of this size stay in a core's cache


def as_float64(x: torch.Tensor, name: str) -> torch.Tensor:
    """``x`` as a finite float64 matrix (MPS has no float64: such tensors go to the CPU)."""
    import torch

    if not isinstance(x, torch.Tensor):
        raise ScoringError(f"{name} must be a torch.Tensor, got {type(x).__name__}.")
    if x.ndim != 2:
        raise ScoringError(f"{name} must be 2-D (N, D), got shape {tuple(x.shape)}.")
    if x.device.type == "mps":
        x = x.cpu()
    x = x.detach().to(torch.float64)
    # A finite sum means finite entries (inf or NaN would make it inf or NaN): one fast
    # reduction; the entries are checked one by one only when the sum is not finite.
    if not math.isfinite(float(x.sum())) and not bool(torch.isfinite(x).all()):
        raise ScoringError(f"{name} contain non-finite values (NaN or inf).")
    return x


def check_labels(labels: torch.Tensor, n: int, num_classes: int | None) -> torch.Tensor:
    """Validated int64 labels with at least two distinct classes present."""
    import torch

    if not isinstance(labels, torch.Tensor) or labels.ndim != 1:
        raise ScoringError("labels must be a 1-D integer torch.Tensor.")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ScoringError(f"labels must have an integer dtype, got {labels.dtype}.")
    if labels.shape[0] != n:
        raise ScoringError(f"labels have {labels.shape[0]} entries but the inputs have {n} rows.")
    if n < 2:
        raise ScoringError(f"need at least 2 samples, got {n}.")
    labels = labels.to(torch.int64)
    lo, hi = (int(v) for v in torch.aminmax(labels))
    if lo < 0 or (num_classes is not None and hi >= num_classes):
        raise ScoringError(f"labels must lie in 0..{(num_classes or hi + 1) - 1}, got {lo}..{hi}.")
    if lo == hi:
        raise ScoringError("need at least 2 distinct classes among the labels.")
    return labels


def check_probabilities(probs: torch.Tensor) -> torch.Tensor:
    """``probs`` as float64 (N, Cs) rows that sum to 1; ScoringError for logits or NaN."""
    import torch

    if not isinstance(probs, torch.Tensor) or probs.ndim != 2 or probs.shape[1] < 1:
        raise ScoringError("source_probs must be a 2-D (N, Cs) torch.Tensor.")
    if probs.device.type == "mps":  # no float64 on MPS
        probs = probs.cpu()
    p = probs.detach().to(torch.float64)
    if not bool(torch.isfinite(p).all()):
        raise ScoringError("source_probs contain non-finite values (NaN or inf).")
    sums = p.sum(dim=1)
    if bool((p < 0).any()) or bool(((sums - 1).abs() > _ROW_SUM_TOL).any()):
        raise ScoringError(
            "source_probs must be probabilities (non-negative rows summing to 1); "
            "were logits passed? Apply softmax first."
        )
    return p / sums[:, None]


def probability_matrix(probs: torch.Tensor) -> torch.Tensor:
    """``probs`` as a floating (N, Cs) tensor on a float64-capable device, not copied.

    Only the type and shape are checked here; :func:`check_probability_rows` checks the
    values from per-block minima and float64 row sums (see :func:`row_blocks`).
    """
    import torch

    if not isinstance(probs, torch.Tensor) or probs.ndim != 2 or probs.shape[1] < 1:
        raise ScoringError("source_probs must be a 2-D (N, Cs) torch.Tensor.")
    if not probs.dtype.is_floating_point:
        raise ScoringError(f"source_probs must have a floating dtype, got {probs.dtype}.")
    if probs.device.type == "mps":  # no float64 on MPS
        probs = probs.cpu()
    return probs.detach()


def row_blocks(n: int, row_bytes: int, device_type: str = "cpu") -> list[tuple[int, int]]:
    """``(start, stop)`` row ranges of blocks that stay in a CPU core's cache (512 KiB of
    rows of ``row_bytes`` each); on an accelerator, blocks of up to 256 MiB."""
    budget = _BLOCK_BYTES if device_type == "cpu" else 2**28
    rows = max(1, budget // max(row_bytes, 1))
    return [(start, min(start + rows, n)) for start in range(0, n, rows)]


def check_probability_rows(low: torch.Tensor, sums: torch.Tensor, probs: torch.Tensor) -> None:
    """ScoringError unless ``probs`` are probabilities, from its float64 row ``sums`` and
    the minima ``low`` of its row blocks.

    Finite row sums imply finite entries (an inf or NaN entry makes its row's sum inf or
    NaN), so one sum per row and one minimum per block check everything.
    """
    import torch

    if not bool(torch.isfinite(sums).all()) and not bool(torch.isfinite(probs).all()):
        raise ScoringError("source_probs contain non-finite values (NaN or inf).")
    if not float(low.min()) >= 0 or not float((sums - 1).abs().max()) <= _ROW_SUM_TOL:
        raise ScoringError(
            "source_probs must be probabilities (non-negative rows summing to 1); "
            "were logits passed? Apply softmax first."
        )
