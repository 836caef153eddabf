"""The seeded per-class sample the scores are computed on."""

from __future__ import annotations

import hashlib
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from zoosel.data.loading import TargetDataset
from zoosel.engine.preprocess import auto_workers
from zoosel.errors import DatasetError


@dataclass(frozen=True)
class Sample:
    """Row indices into the dataset and their contiguous labels ``0..C-1``."""

    indices: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    per_class: int | None
    seed: int

    @property
    def key(self) -> str:
        """Identifies the sample (rows and labels) for the feature cache."""
        digest = hashlib.sha256(self.indices.astype(np.int64).tobytes())
        digest.update(self.labels.astype(np.int64).tobytes())
        return digest.hexdigest()[:16]


def _readable(target: TargetDataset, rows: np.ndarray, wanted: int | None,
              pool: ThreadPoolExecutor) -> np.ndarray:
    """The first ``wanted`` rows (in the given, shuffled order) whose image decodes.

    Unreadable images are reported on stderr by name and replaced by the next row
    of the same class, so one broken file neither stops the run nor fails every
    candidate. Images are decoded on ``pool``, as many at a time as still wanted.
    """

    def readable(row: int) -> DatasetError | None:
        try:
            target.image(row)
        except DatasetError as exc:
            return exc
        return None

    good: list[int] = []
    start = 0
    while start < len(rows) and (wanted is None or len(good) < wanted):
        step = len(rows) - start if wanted is None else wanted - len(good)
        chunk = [int(r) for r in rows[start:start + step]]
        start += len(chunk)
        for row, error in zip(chunk, pool.map(readable, chunk), strict=True):
            if error is not None:
                print(f"zoosel: warning: skipping {error}", file=sys.stderr)
            else:
                good.append(row)
    return np.asarray(good, dtype=np.int64)


def per_class_sample(target: TargetDataset, per_class: int | None = 25, seed: int = 0) -> Sample:
    """Draw up to ``per_class`` rows of every class (all rows of smaller classes).

    ``per_class=None`` keeps every row. Classes with no rows are dropped and the
    rest relabelled ``0..C-1`` in the dataset's class order.
    """
    if per_class is not None and per_class < 1:
        raise DatasetError("--per-class must be at least 1.")
    labels = np.asarray(target.labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    kept: list[int] = []
    with ThreadPoolExecutor(auto_workers(), thread_name_prefix="zoosel-decode") as pool:
        for c in range(len(target.class_names)):
            rows = _readable(target, rng.permutation(np.flatnonzero(labels == c)), per_class,
                             pool)
            if rows.size == 0:
                continue
            chosen.append(np.sort(rows))
            kept.append(c)
    if len(kept) < 2:
        raise DatasetError(
            f"{target.name} [{target.split}] has {len(kept)} class with labelled images; "
            "ranking models needs at least 2 classes."
        )
    indices = np.concatenate(chosen)
    remap = {c: i for i, c in enumerate(kept)}
    new_labels = np.array([remap[int(labels[i])] for i in indices], dtype=np.int64)
    order = np.argsort(indices, kind="stable")
    return Sample(
        indices=indices[order],
        labels=new_labels[order],
        class_names=tuple(target.class_names[c] for c in kept),
        per_class=per_class,
        seed=seed,
    )
