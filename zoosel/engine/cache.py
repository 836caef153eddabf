"""On-disk feature cache, so a second run that only adds a scorer runs no model.

Entries also keep every score computed from their arrays (by scorer name, with the
scorer's version and a digest of its inputs), so such a run computes only the new score.

An entry is keyed by the candidate's identity (source, reference and pinned
revision or content hash), the dataset's fingerprint, the sample drawn from it,
and the extraction recipe version. An entry is a folder holding one ``.npy`` file
per array and ``meta.json``, which records each array's sha256.

- Every file is written to a temporary name and renamed into place, so a reader
  never sees half a file, and a killed writer leaves no corrupt entry.
- Arrays are verified against their checksum on read; a truncated or corrupted
  array is discarded with a warning (and recomputed by the caller).
- Writers of one entry take a file lock, so two zoosel processes sharing a cache
  merge their arrays instead of overwriting each other's.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Bump when the extraction recipe changes in a way that alters cached arrays.
EXTRACTION_VERSION = "1"


def default_cache_dir() -> Path:
    """``$ZOOSEL_CACHE``, else ``$XDG_CACHE_HOME/zoosel``, else ``~/.cache/zoosel``."""
    if os.environ.get("ZOOSEL_CACHE"):
        return Path(os.environ["ZOOSEL_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "zoosel"


def entry_key(**parts: Any) -> str:
    """A stable key from named parts (order-independent)."""
    text = json.dumps({"v": EXTRACTION_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    import fcntl

    with open(folder / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass(frozen=True)
class CacheEntryInfo:
    """One cache entry, as ``zoosel cache ls`` shows it."""

    key: str
    candidate: str
    arrays: tuple[str, ...]
    size: int


class FeatureCache:
    """Arrays per (candidate, dataset sample) under ``root/features``."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser() / "features"

    def _dir(self, key: str) -> Path:
        return self.root / key[:2] / key

    @staticmethod
    def _read_meta(folder: Path) -> dict[str, Any] | None:
        try:
            doc = json.loads((folder / "meta.json").read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(doc, dict) or not isinstance(doc.get("arrays"), dict):
            return None
        return doc

    def load(self, key: str) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        """``(meta, arrays)`` for ``key``, or None when absent.

        Arrays whose file is missing or fails its checksum are left out, with a
        warning, so the caller recomputes them.
        """
        folder = self._dir(key)
        doc = self._read_meta(folder)
        if doc is None:
            return None
        arrays: dict[str, np.ndarray] = {}
        for name, info in doc["arrays"].items():
            path = folder / f"{name}.npy"
            try:
                data = path.read_bytes()
                if hashlib.sha256(data).hexdigest() != info.get("sha256"):
                    raise ValueError("checksum mismatch")
                arrays[name] = np.load(io.BytesIO(data), allow_pickle=False)
            except (OSError, ValueError) as exc:
                owner = doc.get("meta", {}).get("candidate", key)
                print(f"zoosel: warning: cached {name!r} of {owner} is unreadable ({exc}); "
                      "discarding it and recomputing.", file=sys.stderr)
                with contextlib.suppress(OSError):
                    path.unlink()
        return doc.get("meta", {}), arrays

    def store(self, key: str, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Add ``arrays`` to the entry for ``key`` (merging with what is there)."""
        folder = self._dir(key)
        folder.mkdir(parents=True, exist_ok=True)
        with _locked(folder):
            doc = self._read_meta(folder) or {"meta": {}, "arrays": {}}
            for name, array in arrays.items():
                buf = io.BytesIO()
                np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
                data = buf.getvalue()
                _write_atomic(folder / f"{name}.npy", data)
                doc["arrays"][name] = {"sha256": hashlib.sha256(data).hexdigest(),
                                       "shape": list(array.shape), "dtype": str(array.dtype)}
            doc["meta"] = {**doc["meta"], **meta}
            _write_atomic(folder / "meta.json", json.dumps(doc).encode())

    def peek(self, key: str) -> tuple[dict[str, Any], set[str]] | None:
        """``(meta, array names)`` of ``key`` without reading its arrays, or None."""
        doc = self._read_meta(self._dir(key))
        return None if doc is None else (doc.get("meta", {}), set(doc["arrays"]))

    def store_scores(self, key: str, records: dict[str, dict[str, Any]]) -> None:
        """Add score ``records`` (by scorer name) to the entry's ``scores`` meta, keeping
        the records other writers added meanwhile."""
        folder = self._dir(key)
        folder.mkdir(parents=True, exist_ok=True)
        with _locked(folder):
            doc = self._read_meta(folder) or {"meta": {}, "arrays": {}}
            scores = doc["meta"].get("scores")
            doc["meta"]["scores"] = {**(scores if isinstance(scores, dict) else {}), **records}
            _write_atomic(folder / "meta.json", json.dumps(doc).encode())

    def entries(self) -> list[CacheEntryInfo]:
        """Every entry with its candidate, arrays and size on disk."""
        infos = []
        for meta_file in sorted(self.root.glob("*/*/meta.json")):
            folder = meta_file.parent
            doc = self._read_meta(folder) or {"meta": {}, "arrays": {}}
            size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
            infos.append(CacheEntryInfo(folder.name, str(doc["meta"].get("candidate", "?")),
                                        tuple(sorted(doc["arrays"])), size))
        return infos

    def clear(self) -> int:
        """Delete every entry; returns the number of bytes freed."""
        freed = sum(e.size for e in self.entries())
        shutil.rmtree(self.root, ignore_errors=True)
        return freed
