"""The sample's images on their way to a model: decoded once, transformed in parallel, shared.

Within one run every candidate reads the same sample. The dataset keeps the decoded
images (:meth:`zoosel.data.TargetDataset.keep_decoded`); this module turns them into
batches for one candidate:

- transforms run on a pool of threads (decoding and resizing release the GIL), each
  with one torch thread: per-image work on several torch threads costs many times the
  CPU for no gain;
- batches are produced ahead of the forward pass, in order, a bounded number ahead;
- candidates whose preprocessing has the same signature (``LoadedModel.preprocess_key``)
  share the preprocessed tensors, kept in a store with a byte budget;
- on CUDA the batches live in pinned memory and are copied without blocking.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from zoosel.threads import one_torch_thread

MAX_WORKERS = 8
SMALL_SCORING = 1_100_000
"""Scoring inputs of at most this many values (samples x feature dimension) run on one
torch thread. On such small matrices a second thread gains nothing on an idle machine,
while on a busy one each parallel region waits for a descheduled thread and small
scorers can take many times longer. The default sort's components (LogME, linft, GBC)
are 1.09-1.45x slower on 2 threads than on 1 up to 500 x 2048 and 1.35x faster from
1000 x 2048 on (benchmarks/results/confidence.md, "Thread threshold", linft version 2);
the older figures for other scores: benchmarks/results/pipeline.md ("Thread settings
per stage")."""


# --- preprocessing signatures ----------------------------------------------------------------


def _digest(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def timm_key(data_config: Mapping[str, Any]) -> str:
    """Signature of timm's evaluation transform made from ``data_config`` (the resolved
    data config: input size, interpolation, mean, std, crop percentage and mode)."""
    return "timm:" + _digest({k: list(v) if isinstance(v, tuple) else v
                              for k, v in data_config.items()})


def transformers_key(processor: Any) -> str | None:
    """Signature of a transformers image processor: its class and its settings (None
    when it cannot describe itself: then nothing is shared)."""
    try:
        settings = dict(processor.to_dict())
    except Exception:
        return None
    settings.pop("processor_class", None)
    return f"transformers:{type(processor).__name__}:" + _digest(settings)


# --- thread settings -------------------------------------------------------------------------


def auto_workers() -> int:
    """Preprocessing threads by default: the usable CPU cores, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cores))


def scoring_threads(num_samples: int, dim: int, default: int) -> int:
    """Torch threads for scoring an ``num_samples`` x ``dim`` input: one for small inputs
    (see :data:`SMALL_SCORING`), else ``default``."""
    return 1 if num_samples * max(dim, 1) <= SMALL_SCORING else default


# --- device defaults (pure functions, so they are tested without a GPU) ----------------------


def default_precision(device: str, bf16_supported: bool | None = None) -> str:
    """Extraction precision for ``auto``: bf16 autocast on a GPU that supports it, else
    fp32 (always fp32 on CPU, where autocast is slower and changes the numbers)."""
    if not device.startswith("cuda"):
        return "fp32"
    if bf16_supported is None:
        import torch

        bf16_supported = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return "bf16" if bf16_supported else "fp32"


def default_batch_size(device: str) -> int:
    """First batch size for ``auto``: 32 on CPU (larger batches gain nothing there), 128
    on a GPU, halved on running out of memory."""
    return 128 if device.startswith("cuda") else 32


def wants_channels_last(device: str, module: Any) -> bool:
    """Whether to run ``module`` in channels-last layout: on a GPU, for convolutional
    networks (tensor cores read NHWC); never on CPU, where it changes the numbers."""
    if not device.startswith("cuda"):
        return False
    import torch

    return any(isinstance(m, torch.nn.Conv2d) for m in module.modules())


def to_device(batch: Any, device: str, channels_last: bool = False) -> Any:
    """``batch`` (a tensor or a mapping of tensors) on ``device``; copies from pinned
    memory do not block."""
    import torch

    if isinstance(batch, Mapping):
        return {k: to_device(v, device, channels_last) for k, v in batch.items()}
    if not isinstance(batch, torch.Tensor):
        return batch
    moved = batch.to(device, non_blocking=batch.is_pinned())
    if channels_last and moved.ndim == 4 and moved.is_floating_point():
        moved = moved.contiguous(memory_format=torch.channels_last)
    return moved


def batch_length(batch: Any) -> int:
    """Number of images in a batch (a tensor or a mapping of tensors)."""
    if isinstance(batch, Mapping):
        return len(next(iter(batch.values())))
    return len(batch)


# --- preprocessed tensors shared between candidates ------------------------------------------


def tensor_budget() -> int:
    """Bytes of preprocessed tensors kept for sharing: an eighth of the available memory,
    at most 2 GiB (250 images at 224 x 224 take 144 MiB)."""
    from zoosel.sources.loaders import available_memory

    have = available_memory()
    return min(2 << 30, have // 8) if have else 1 << 30


class TensorStore:
    """Preprocessed samples by key, least recently used dropped beyond ``budget`` bytes."""

    def __init__(self, budget: int | None = None) -> None:
        self.budget = tensor_budget() if budget is None else budget
        self._items: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0

    def get(self, key: Any) -> Any | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[0]

    def fits(self, size: int) -> bool:
        return size <= self.budget

    def put(self, key: Any, value: Any, size: int) -> None:
        if not self.fits(size):
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = (value, size)
            self._bytes += size
            while self._bytes > self.budget:
                _, (_, old) = self._items.popitem(last=False)
                self._bytes -= old

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


def _nbytes(item: Any) -> int:
    if isinstance(item, Mapping):
        return sum(_nbytes(v) for v in item.values())
    return int(item.numel() * item.element_size()) if hasattr(item, "numel") else 0


def _allocate(first: Any, count: int, pin: bool) -> Any:
    """Empty buffers for ``count`` items shaped like ``first`` (a tensor or a mapping)."""
    import torch

    if isinstance(first, Mapping):
        return {k: _allocate(v, count, pin) for k, v in first.items()}
    with torch.inference_mode(False):  # usable by gradient sketches too
        return torch.empty((count, *first.shape), dtype=first.dtype, pin_memory=pin)


def _fits(buffer: Any, item: Any) -> bool:
    import torch

    if isinstance(buffer, Mapping):
        return (isinstance(item, Mapping) and set(buffer) == set(item)
                and all(_fits(buffer[k], item[k]) for k in buffer))
    return (isinstance(item, torch.Tensor) and item.dtype == buffer.dtype
            and tuple(item.shape) == tuple(buffer.shape[1:]))


def _write(buffer: Any, row: int, item: Any) -> None:
    if isinstance(buffer, Mapping):
        for k, v in buffer.items():
            _write(v, row, item[k])
    else:
        buffer[row].copy_(item)


def _slice(buffer: Any, start: int, stop: int) -> Any:
    if isinstance(buffer, Mapping):
        return {k: v[start:stop] for k, v in buffer.items()}
    return buffer[start:stop]


def _collate(items: list[Any], pin: bool) -> Any:
    import torch
    from torch.utils.data import default_collate

    with torch.inference_mode(False):
        batch = default_collate(items)
    if pin:
        batch = ({k: v.pin_memory() for k, v in batch.items()} if isinstance(batch, Mapping)
                 else batch.pin_memory())
    return batch


def rows_digest(rows: Sequence[int]) -> str:
    """Identifies a list of sample rows."""
    return hashlib.sha256(np.asarray(rows, dtype=np.int64).tobytes()).hexdigest()[:16]


class Pipeline:
    """Batches of the sample for one candidate after another (see the module docstring).

    ``workers`` threads transform images (at least one); ``device`` decides pinned memory.
    Close it (or use it as a context manager) to stop its threads.
    """

    def __init__(self, workers: int, device: str = "cpu", store: TensorStore | None = None,
                 ahead: int = 2) -> None:
        self.workers = max(1, workers)
        self.pin = device.startswith("cuda")
        self.store = store if store is not None else TensorStore()
        self.ahead = ahead
        self._pool: ThreadPoolExecutor | None = None
        self.transforms = 0
        """Images transformed so far (shared batches transform none)."""

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="zoosel-prep",
                                            initializer=one_torch_thread)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self.store.clear()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _items(self, work: Callable[[int], Any], rows: Sequence[int],
               lookahead: int) -> Iterator[Any]:
        """``work(row)`` for every row, in order, at most ``lookahead`` computed ahead."""
        pool = self._executor()
        pending: deque[Future[Any]] = deque()
        todo = iter(rows)
        try:
            for row in todo:
                pending.append(pool.submit(work, int(row)))
                if len(pending) >= lookahead:
                    break
            while pending:
                done = pending.popleft().result()
                nxt = next(todo, None)
                if nxt is not None:
                    pending.append(pool.submit(work, int(nxt)))
                yield done
        finally:
            for future in pending:
                future.cancel()

    def batches(self, transform: Callable[[Any], Any], get_image: Callable[[int], Any],
                rows: Sequence[int], batch_size: int, key: Any = None) -> Iterator[Any]:
        """Batches of ``transform(get_image(row))`` over ``rows``, in order.

        With a ``key`` (the preprocessing signature and what identifies the images), the
        batches are shared: a later call with the same key reads them from the store.
        """
        held = self.store.get(key) if key is not None else None
        count = len(rows)
        if held is not None:
            for start in range(0, count, batch_size):
                yield _slice(held, start, min(start + batch_size, count))
            return

        def work(row: int) -> Any:
            return transform(get_image(row))

        items = self._items(work, rows, max(batch_size * self.ahead, self.workers))
        buffer = None
        keep = key is not None
        for start in range(0, count, batch_size):
            chunk = [next(items) for _ in range(min(batch_size, count - start))]
            self.transforms += len(chunk)
            if keep and buffer is None:
                keep = self.store.fits(_nbytes(chunk[0]) * count)
                buffer = _allocate(chunk[0], count, self.pin) if keep else None
            if keep and all(_fits(buffer, item) for item in chunk):
                for i, item in enumerate(chunk):
                    _write(buffer, start + i, item)
                yield _slice(buffer, start, start + len(chunk))
            else:
                keep, buffer = False, None  # items of varying shapes: batch by batch
                yield _collate(chunk, self.pin)
        if keep and buffer is not None:
            self.store.put(key, buffer, _nbytes(buffer))
