"""Training loops of the benchmark: source training and the fine-tuning protocol.

The paper's fine-tuning protocol scaled down: SGD with Nesterov momentum 0.9, weight
decay 1e-4, batch 32, the learning rate divided by 10 at half and at five sixths of
the epochs (epochs 15 and 25 of 30 in the paper).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from zoosel.bench.nets import to_input

if TYPE_CHECKING:
    import torch

MILESTONES = (0.5, 5 / 6)


@dataclass(frozen=True)
class Schedule:
    """How one training run goes."""

    epochs: int
    lr: float
    batch_size: int = 32
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: Sequence[float] = MILESTONES
    augment: bool = False
    """Random translations by up to 1/8 of the image (source training only)."""
    optimizer: str = "sgd"
    """``sgd`` (Nesterov momentum; the fine-tuning protocol) or ``adamw`` (source training of
    architectures without batch norm, which plain SGD leaves near chance at this size)."""
    decay: str = "step"
    """``step`` (divided by 10 at the milestones; the fine-tuning protocol) or ``cosine``."""
    warmup: float = 0.0
    """Fraction of the steps over which the learning rate rises linearly from zero."""


def _shift(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image translated by its own random offset (zero padding): a cheap augmentation."""
    import torch

    n, c, h, w = x.shape
    pad = max(1, h // 8)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n, 1, 1, 1), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n, 1, 1, 1), generator=generator)
    rows = (dy + torch.arange(h).view(1, 1, h, 1)).expand(n, c, h, w + 2 * pad)
    cols = (dx + torch.arange(w).view(1, 1, 1, w)).expand(n, c, h, w)
    return padded.gather(2, rows).gather(3, cols)


def fit(
    model: torch.nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    schedule: Schedule,
    *,
    seed: int = 0,
    parameters: Sequence[torch.nn.Parameter] | None = None,
    before_step: Callable[[int], torch.nn.Module] | None = None,
    domains: np.ndarray | None = None,
    device: str = "cpu",
) -> float:
    """Train ``model`` on uint8 ``images`` and int ``labels``; returns the seconds it took.

    ``domains`` (an int per image) with ``before_step`` trains a Multi-BN network: each
    batch holds images of one domain and ``before_step(domain)`` returns the network
    with that domain's parameters swapped in (already on ``device``).

    The model is moved to ``device``; batches are drawn and augmented on the CPU with the
    same random stream on every device, then moved.
    """
    import torch

    began = time.perf_counter()
    model.to(device)
    generator = torch.Generator().manual_seed(seed)
    x_all = to_input(images)
    y_all = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    params = list(parameters) if parameters is not None else list(model.parameters())
    if schedule.optimizer == "adamw":
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(
            params, lr=schedule.lr, weight_decay=schedule.weight_decay)
    else:
        optimizer = torch.optim.SGD(params, lr=schedule.lr, momentum=schedule.momentum,
                                    nesterov=schedule.momentum > 0,
                                    weight_decay=schedule.weight_decay)
    steps_per_epoch = _batches_per_epoch(len(y_all), domains, schedule.batch_size)
    total = schedule.epochs * steps_per_epoch
    if schedule.decay == "step" and not schedule.warmup:
        # Kept as MultiStepLR so the fine-tuning runs stay bit-identical to earlier builds.
        drops = sorted({round(m * total) for m in schedule.milestones})
        scheduler: torch.optim.lr_scheduler.LRScheduler = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, drops, gamma=0.1)
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(schedule, total))
    model.train()
    for _ in range(schedule.epochs):
        for rows, domain in _batches(len(y_all), domains, schedule.batch_size, generator):
            net = before_step(domain) if before_step is not None else model
            x = x_all[rows]
            if schedule.augment:
                x = _shift(x, generator)
            x, y = x.to(device, non_blocking=True), y_all[rows].to(device, non_blocking=True)
            loss = torch.nn.functional.cross_entropy(net(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    model.eval()
    return time.perf_counter() - began


def resolve_device(device: str) -> str:
    """``auto`` as ``cuda`` when a GPU is visible, else ``cpu``; other names checked."""
    import torch

    from zoosel.errors import UsageError

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        raise UsageError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N.") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: no CUDA device is visible; use --device cpu "
                         "(or auto).")
    if kind not in ("cpu", "cuda"):
        raise UsageError(f"--device {device}: the benchmark runs on cpu or cuda.")
    return device


def lr_factor(schedule: Schedule, total: int) -> Callable[[int], float]:
    """The learning rate at step ``t`` of ``total``, as a factor on ``schedule.lr``."""
    if schedule.decay not in ("step", "cosine"):
        raise ValueError(f"unknown learning-rate decay {schedule.decay!r}")
    warm = round(schedule.warmup * total)
    drops = sorted({round(m * total) for m in schedule.milestones})

    def factor(t: int) -> float:
        if t < warm:
            return (t + 1) / warm
        if schedule.decay == "cosine":
            done = (t - warm) / max(1, total - warm)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, done)))
        return 0.1 ** sum(t >= d for d in drops)

    return factor


def _batches_per_epoch(n: int, domains: np.ndarray | None, batch_size: int) -> int:
    if domains is None:
        return -(-n // batch_size)
    return int(sum(-(-int(c) // batch_size) for c in np.bincount(domains) if c))


def _batches(n: int, domains: np.ndarray | None, batch_size: int,
             generator: torch.Generator) -> list[tuple[torch.Tensor, int]]:
    """One epoch of shuffled batches; with ``domains``, single-domain batches, interleaved."""
    import torch

    if domains is None:
        order = torch.randperm(n, generator=generator)
        return [(order[i:i + batch_size], -1) for i in range(0, n, batch_size)]
    batches = []
    for domain in np.unique(domains):
        rows = torch.from_numpy(np.flatnonzero(domains == domain))
        rows = rows[torch.randperm(len(rows), generator=generator)]
        batches += [(rows[i:i + batch_size], int(domain)) for i in range(0, len(rows), batch_size)]
    order = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in order]


def accuracy(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray,
             batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` on uint8 ``images`` (on the device the model is on)."""
    import torch

    model.eval()
    device = next(model.parameters()).device
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(labels), batch_size):
            x = to_input(images[start:start + batch_size]).to(device)
            pred = model(x).argmax(1).cpu().numpy()
            correct += int((pred == labels[start:start + batch_size]).sum())
    return correct / max(1, len(labels))
