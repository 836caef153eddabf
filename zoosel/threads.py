"""Torch's intra-op thread count, set for a block of work and restored after it.

Loops of many small operations (per-image transforms, small scoring inputs, LAPACK calls
between large products) gain nothing from several threads: each parallel region costs
more than the operation saves, and far more when other processes share the cores (on a
loaded machine a threaded ``eigh`` of a 100 x 100 matrix was measured at 0.6 s against
1 ms on one thread).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``count`` torch threads in this thread (None: unchanged)."""
    import torch

    before = torch.get_num_threads()
    if count is None or count == before:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def serial() -> AbstractContextManager[None]:
    """Run the block on one torch thread."""
    return torch_threads(1)


def one_torch_thread() -> None:
    """Thread-pool initialiser: this thread runs torch on one thread."""
    import torch

    torch.set_num_threads(1)
