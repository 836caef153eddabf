"""Hub listings kept on disk for a while, so repeated runs do not page the Hub again.

An entry is one JSON file under ``<zoosel cache>/listings``, named by a hash of the
request's parameters (never of a token), holding the listed records and when they were
fetched. Entries older than the TTL are ignored and overwritten by the next listing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from zoosel.engine.cache import _write_atomic, default_cache_dir
from zoosel.errors import UsageError

DEFAULT_TTL = 3600.0
TTL_ENV = "ZOOSEL_LISTING_TTL"
_FORMAT = 1


def _now() -> float:
    return time.time()


def resolve_ttl(ttl: float | None) -> float:
    """``ttl`` if given, else ``$ZOOSEL_LISTING_TTL``, else one hour; 0 disables caching."""
    if ttl is None:
        text = os.environ.get(TTL_ENV)
        if not text:
            return DEFAULT_TTL
        try:
            ttl = float(text)
        except ValueError:
            raise UsageError(f"{TTL_ENV}={text!r} is not a number of seconds.") from None
    if ttl < 0:
        raise UsageError("the listing TTL must be 0 (no cache) or a positive number of seconds.")
    return float(ttl)


def listing_key(**parts: Any) -> str:
    """A stable key from the named request parameters (order-independent)."""
    text = json.dumps({"format": _FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class ListingCache:
    """Listing records by key under ``root/listings``."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root or default_cache_dir()).expanduser() / "listings"

    def _path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def load(self, key: str, ttl: float) -> list[dict[str, Any]] | None:
        """The records stored under ``key`` less than ``ttl`` seconds ago, else None."""
        if ttl <= 0:
            return None
        try:
            doc = json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
            return None
        created, records = doc.get("created"), doc.get("records")
        if not isinstance(created, (int, float)) or not isinstance(records, list):
            return None
        age = _now() - created
        return records if 0 <= age < ttl else None

    def files(self) -> list[Path]:
        """Every stored listing, fresh or expired."""
        return sorted(self.root.glob("*.json")) if self.root.is_dir() else []

    def size(self) -> int:
        """Bytes on disk of every stored listing."""
        return sum(f.stat().st_size for f in self.files())

    def clear(self) -> int:
        """Delete every stored listing; returns the number of bytes freed."""
        freed = self.size()
        shutil.rmtree(self.root, ignore_errors=True)
        return freed

    def store(self, key: str, records: list[dict[str, Any]]) -> None:
        """Keep ``records`` under ``key``, dated now."""
        self.root.mkdir(parents=True, exist_ok=True)
        doc = {"format": _FORMAT, "created": _now(), "records": records}
        _write_atomic(self._path(key), json.dumps(doc).encode())
