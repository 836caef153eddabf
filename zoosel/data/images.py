"""Decoding target images robustly: odd modes, huge files and broken files."""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from zoosel.errors import DatasetError

MAX_SIDE = 2048
"""Images are downscaled (aspect kept) to at most this side before preprocessing: far
above any model's input size, it bounds memory and decoding time of huge images."""


def to_rgb(image: Any) -> Any:
    """An 8-bit RGB version of ``image``: 16-bit and float images are rescaled,
    transparent ones composited on white, palettes expanded."""
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        array = np.clip(array / top * 255.0, 0, 255).astype(np.uint8)
        image = Image.fromarray(array, mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB") if image.mode != "RGB" else image


def decode(value: Any, where: str) -> Any:
    """A PIL RGB image from a ``datasets`` image value (a dict with bytes/path, or PIL).

    Raises :class:`DatasetError` naming ``where`` when the image cannot be read.
    """
    from PIL import Image

    try:
        if isinstance(value, Image.Image):
            image = value
        elif isinstance(value, dict) and value.get("bytes"):
            image = Image.open(io.BytesIO(value["bytes"]))
        elif isinstance(value, dict) and value.get("path"):
            image = Image.open(value["path"])
        elif isinstance(value, str | bytes):
            image = Image.open(io.BytesIO(value) if isinstance(value, bytes) else value)
        else:
            raise ValueError(f"not an image ({type(value).__name__})")
        if getattr(image, "format", None) == "JPEG":
            image.draft("RGB", (MAX_SIDE, MAX_SIDE))
        image.load()
        if max(image.size) > MAX_SIDE:
            image.thumbnail((MAX_SIDE, MAX_SIDE))
        return to_rgb(image)
    except Image.DecompressionBombError as exc:
        raise DatasetError(f"{where}: image too large to decode safely ({exc}).") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(f"{where}: unreadable image ({exc}).") from exc


def decoded_budget() -> int:
    """Bytes of decoded images a dataset keeps: a quarter of the available memory, at
    most 1 GiB (a 500 x 375 image takes 0.5 MiB)."""
    from zoosel.sources.loaders import available_memory

    have = available_memory()
    return min(1 << 30, have // 4) if have else 1 << 30


class DecodedImages:
    """Decoded RGB images by row, shared by every candidate of a run.

    Least recently used images are dropped beyond ``budget`` bytes (then decoded again
    when asked for), so a large sample costs decoding time, never unbounded memory.
    Safe to use from several threads.
    """

    def __init__(self, budget: int | None = None) -> None:
        self.budget = decoded_budget() if budget is None else budget
        self._items: OrderedDict[int, Any] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def nbytes(image: Any) -> int:
        return image.width * image.height * len(image.getbands())

    def get(self, row: int) -> Any | None:
        with self._lock:
            image = self._items.get(row)
            if image is not None:
                self._items.move_to_end(row)
            return image

    def put(self, row: int, image: Any) -> None:
        size = self.nbytes(image)
        if size > self.budget:
            return
        with self._lock:
            if row in self._items:
                return
            self._items[row] = image
            self._bytes += size
            while self._bytes > self.budget:
                _, old = self._items.popitem(last=False)
                self._bytes -= self.nbytes(old)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)
