"""The benchmark's data on disk: source domains and target tasks as arrays and folders.

Arrays (``.npz``: uint8 images, int labels) feed training; image folders feed
``zoosel.rank`` exactly as a user's dataset would. Generated data is deterministic
(domain, split, seed); a target can also be any image folder or dataset ``zoosel``
reads, resized to the benchmark's resolution and split once, with a fixed seed.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoosel.bench.profiles import Profile
from zoosel.errors import DatasetError

SPLIT_SEEDS = {"train": 1, "test": 2, "pool": 3, "val": 4}


@dataclass(frozen=True)
class Split:
    """Images (uint8, N x H x W x 3) and their labels, with class names."""

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]

    def save(self, path: Path) -> None:
        """Write as ``.npz`` (atomically)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, images=self.images, labels=self.labels,
                 classes=np.asarray(self.classes, dtype=str))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Split:
        """Read a split written by :meth:`save`."""
        with np.load(path) as data:
            return cls(data["images"], data["labels"].astype(np.int64),
                       tuple(str(c) for c in data["classes"]))

    def subset(self, rows: np.ndarray) -> Split:
        """The rows ``rows``, same classes."""
        return Split(self.images[rows], self.labels[rows], self.classes)


def stable_seed(*parts: object) -> int:
    """A seed from strings and ints that is the same in every process and run."""
    return zlib.crc32("/".join(str(p) for p in parts).encode()) & 0x7FFFFFFF


def shots(labels: np.ndarray, per_class: int | None, seed: int) -> np.ndarray:
    """Row indices of ``per_class`` random rows of every class (all rows for ``None``)."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        rows.append(np.sort(rng.permutation(members)[:per_class] if per_class else members))
    return np.concatenate(rows)


class BenchData:
    """Where a build's data lives, generating it on first use."""

    def __init__(self, root: Path, profile: Profile,
                 external: Sequence[str] = ()) -> None:
        self.root = root / "data"
        self.profile = profile
        self.external = {external_name(spec): spec for spec in external}

    def source_names(self) -> list[str]:
        """The profile's source domains (every shipped one when it names none)."""
        from zoosel.bench.domains import SOURCE_DOMAINS

        return list(self.profile.sources or [d.name for d in SOURCE_DOMAINS])

    def source(self, domain: str, split: str) -> Split:
        """Split ``train`` or ``test`` of source domain ``domain``."""
        path = self.root / "sources" / domain / f"{split}.npz"
        if not path.is_file():
            per_class = (self.profile.source_per_class if split == "train"
                         else self.profile.source_test_per_class)
            _generated(domain, per_class, self.profile.size, SPLIT_SEEDS[split]).save(path)
        return Split.load(path)

    def target(self, task: str, split: str) -> Split:
        """Split ``pool``, ``val`` or ``test`` of target ``task``."""
        path = self.root / "targets" / task / f"{split}.npz"
        if not path.is_file():
            if task in self.external:
                self._split_external(task)
            else:
                per_class = {"pool": self.profile.pool_per_class,
                             "val": self.profile.val_per_class,
                             "test": self.profile.test_per_class}[split]
                _generated(task, per_class, self.profile.size, SPLIT_SEEDS[split]).save(path)
        return Split.load(path)

    def regime_rows(self, task: str, regime: str) -> np.ndarray:
        """Rows of the task's pool that form the training set of ``regime``."""
        pool = self.target(task, "pool")
        return shots(pool.labels, self.profile.regimes[regime], stable_seed(task, regime))

    def regime_folder(self, task: str, regime: str) -> Path:
        """The regime's training set as an image folder (what the selectors see)."""
        folder = self.root / "targets" / task / f"train-{regime}"
        if not (folder / ".complete").is_file():
            pool = self.target(task, "pool")
            _write_folder(pool.subset(self.regime_rows(task, regime)), folder)
        return folder

    def source_folder(self, domain: str | None) -> Path:
        """A 25-per-class sample of a source domain (``None``: of all sources) as a folder,
        for Domain Similarity."""
        name = domain or "all-sources"
        folder = self.root / "sources" / f"sample-{name}"
        if not (folder / ".complete").is_file():
            domains = [domain] if domain else self.source_names()
            per_class = 25 if domain else max(1, 25 // len(domains) + 1)
            parts = []
            for d in domains:
                train = self.source(d, "train")
                parts.append(train.subset(shots(train.labels, per_class,
                                                stable_seed(d, "sample"))))
            prefixes = None if domain else [f"{d}-" for d in domains]
            _write_folder(concat(parts, prefixes), folder)
        return folder

    def _split_external(self, task: str) -> None:
        """Load a user's dataset, resize it, split it into pool / val / test (seeded)."""
        from zoosel.data.loading import load_target

        spec = self.external[task]
        data = load_target(spec)
        size = self.profile.size
        images = np.stack([np.asarray(data.image(i).convert("RGB").resize((size, size)))
                           for i in range(len(data.labels))])
        labels = np.asarray(data.labels, dtype=np.int64)
        rng = np.random.default_rng(stable_seed(task, "split"))
        parts: dict[str, list[np.ndarray]] = {"pool": [], "val": [], "test": []}
        for c in np.unique(labels):
            rows = rng.permutation(np.flatnonzero(labels == c))
            n_test = max(1, len(rows) // 4)
            n_val = max(1, len(rows) // 8)
            if len(rows) < 3:
                raise DatasetError(f"target {spec}: class {data.class_names[c]!r} has "
                                   f"{len(rows)} images; the benchmark needs at least 3.")
            parts["test"].append(rows[:n_test])
            parts["val"].append(rows[n_test:n_test + n_val])
            parts["pool"].append(rows[n_test + n_val:])
        classes = tuple(data.class_names)
        for split, rows in parts.items():
            chosen = np.sort(np.concatenate(rows))
            Split(images[chosen], labels[chosen], classes).save(
                self.root / "targets" / task / f"{split}.npz")


def external_name(spec: str) -> str:
    """A target's name for a folder or dataset id: its last path part, made safe."""
    base = Path(spec.rstrip("/")).name or spec
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in base)
    return f"ext-{safe}"


def _generated(name: str, per_class: int, size: int, seed: int) -> Split:
    from zoosel.bench.domains import generate, get_domain

    domain = get_domain(name)
    images, labels = generate(domain, per_class, size=size, seed=seed)
    return Split(images, labels.astype(np.int64), tuple(domain.classes))


def concat(parts: Sequence[Split], prefixes: Sequence[str] | None = None) -> Split:
    """``parts`` as one split, each part's labels offset past the previous parts' classes
    and, with ``prefixes``, its class names prefixed."""
    offset, labels, classes = 0, [], []
    for i, part in enumerate(parts):
        labels.append(part.labels + offset)
        prefix = prefixes[i] if prefixes is not None else ""
        classes += [prefix + c for c in part.classes]
        offset += len(part.classes)
    return Split(np.concatenate([p.images for p in parts]), np.concatenate(labels),
                 tuple(classes))


def _write_folder(split: Split, folder: Path) -> None:
    from zoosel.bench.domains import write_image_folder

    write_image_folder(split.images, split.labels, split.classes, folder)
    (folder / ".complete").write_text(json.dumps({"images": int(len(split.labels))}) + "\n")
