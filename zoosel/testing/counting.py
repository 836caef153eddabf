"""Counting the forward passes a test causes, independently of zoosel's bookkeeping."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pytest

__all__ = ["ForwardCounter"]


class ForwardCounter:
    """Counts every ``nn.Module`` call (each submodule too) from its creation on.

    ``calls`` may be reset to 0 between steps; the patch lasts as long as ``monkeypatch``.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import torch

        self.calls = 0
        original = torch.nn.Module.__call__
        counter = self

        def counting(module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
            counter.calls += 1
            return original(module, *args, **kwargs)

        monkeypatch.setattr(torch.nn.Module, "__call__", counting)
