"""Load the user's labelled image dataset from wherever it lives.

``--dataset`` may be a Hub dataset id (through ``datasets``, honouring its cache
and offline mode), an image folder (one sub-folder per class), a folder saved
with ``Dataset.save_to_disk``, or parquet files. Image and label columns are
detected from the features; errors name the columns that were found.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoosel.errors import DatasetError, DatasetNotFoundError

if TYPE_CHECKING:
    from zoosel.data.images import DecodedImages

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
IMAGE_NAMES = ("image", "img", "pixel_values", "picture", "photo")
LABEL_NAMES = ("label", "labels", "target", "class", "category", "fine_label", "y")


@dataclass
class TargetDataset:
    """A dataset split with its image column and integer class labels.

    ``labels`` holds one int per row in ``0..len(class_names)-1``.
    """

    name: str
    split: str
    data: Any  # datasets.Dataset
    image_column: str
    labels: list[int]
    class_names: list[str]
    fingerprint: str
    decoded: DecodedImages | None = field(default=None, repr=False, compare=False)
    """Decoded images kept for reuse (None: every call decodes), see :meth:`keep_decoded`."""

    def image(self, index: int) -> Any:
        """The RGB PIL image of row ``index`` (:class:`DatasetError` if unreadable).

        With :meth:`keep_decoded`, a row is decoded once and later calls get a copy.
        """
        from zoosel.data.images import decode

        index = int(index)
        if self.decoded is not None:
            image = self.decoded.get(index)
            if image is not None:
                return image.copy()  # a transform may change its input in place
        value = self.data[index][self.image_column]
        image = decode(value, self.describe_row(index, value))
        if self.decoded is not None:
            self.decoded.put(index, image.copy())
        return image

    def keep_decoded(self, budget: int | None = None) -> TargetDataset:
        """Keep decoded images (up to ``budget`` bytes, default
        :func:`zoosel.data.images.decoded_budget`) so candidates share them; returns self."""
        from zoosel.data.images import DecodedImages

        self.decoded = DecodedImages(budget)
        return self

    def describe_row(self, index: int, value: Any = None) -> str:
        """How to name row ``index`` in a message: its file when known."""
        if isinstance(value, dict) and value.get("path"):
            return f"{self.name} row {index} ({value['path']})"
        return f"{self.name} row {index}"


def load_target(
    dataset: str,
    split: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    revision: str | None = None,
) -> TargetDataset:
    """Load ``dataset`` and pick its split, image column and label column."""
    import datasets

    path = Path(dataset).expanduser()
    looks_local = dataset.startswith(("/", "./", "../", "~")) or path.suffix == ".parquet"
    if looks_local and not path.exists():
        raise DatasetNotFoundError(f"dataset path {dataset!r} does not exist.")
    if path.is_dir() and _is_image_folder(path):
        ds, fingerprint, split_name = _image_folder(path), _folder_fingerprint(path), "all"
    else:
        ds, split_name = _load_datasets(dataset, path, split, revision)
        fingerprint = getattr(ds, "_fingerprint", None) or dataset
    if len(ds) == 0:
        raise DatasetError(f"split {split_name!r} of {dataset} is empty.")
    image_col = _pick_image_column(ds, image_column, dataset)
    label_col = _pick_label_column(ds, label_column, image_col, dataset)
    if isinstance(ds.features[image_col], datasets.Image):
        ds = ds.cast_column(image_col, datasets.Image(decode=False))  # zoosel decodes
    labels, names = _labels(ds, label_col, dataset)
    return TargetDataset(dataset, split_name, ds, image_col, labels, names, fingerprint)


def _is_image_folder(path: Path) -> bool:
    subdirs = [p for p in path.iterdir() if p.is_dir()]
    return bool(subdirs) and any(
        f.suffix.lower() in IMAGE_SUFFIXES for d in subdirs for f in d.iterdir()
    )


def _folder_images(path: Path) -> list[tuple[str, Path]]:
    items = []
    for class_dir in sorted(p for p in path.iterdir() if p.is_dir()):
        for file in sorted(class_dir.rglob("*")):
            if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES:
                items.append((class_dir.name, file))
    return items


def _image_folder(path: Path) -> Any:
    import datasets

    items = _folder_images(path)
    names = sorted({c for c, _ in items})
    index = {n: i for i, n in enumerate(names)}
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=names)}
    )
    return datasets.Dataset.from_dict(
        {"image": [str(f) for _, f in items], "label": [index[c] for c, _ in items]},
        features=features,
    )


def _folder_fingerprint(path: Path) -> str:
    """Hash of every image's class, name and bytes: stable across copies and checkouts
    (modification times play no part), changed by any edit."""
    digest = hashlib.blake2b(digest_size=16)
    for class_name, file in _folder_images(path):
        digest.update(f"{class_name}/{file.relative_to(path / class_name)}\0".encode())
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _load_datasets(
    dataset: str, path: Path, split: str | None, revision: str | None
) -> tuple[Any, str]:
    import datasets

    try:
        if path.is_dir() and (
            (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()
        ):
            loaded = datasets.load_from_disk(str(path))
        elif path.is_file() and path.suffix == ".parquet" or (
            path.is_dir() and any(path.rglob("*.parquet"))
        ):
            files = [str(path)] if path.is_file() else sorted(map(str, path.rglob("*.parquet")))
            loaded = datasets.load_dataset("parquet", data_files=files)
        elif path.exists():
            raise DatasetError(
                f"{dataset} is neither an image folder (one sub-folder of images per class), "
                "a saved dataset, nor parquet files."
            )
        else:
            loaded = datasets.load_dataset(dataset, revision=revision)
    except DatasetError:
        raise
    except FileNotFoundError as exc:
        raise DatasetNotFoundError(
            f"dataset {dataset!r} was not found locally, in the cache or on the Hub "
            f"({exc}). Check the id or path (offline mode needs it cached)."
        ) from exc
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatasetError(f"cannot load dataset {dataset!r}: {first}") from exc
    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded)
        if split is None:
            split = "train" if "train" in loaded else names[0]
        if split not in loaded:
            raise DatasetError(
                f"dataset {dataset!r} has no split {split!r}; it has: {', '.join(names)}."
            )
        return loaded[split], split
    return loaded, split or "train"


def _describe(ds: Any) -> str:
    return ", ".join(f"{k} ({_kind(v)})" for k, v in ds.features.items())


def _kind(feature: Any) -> str:
    import datasets

    if isinstance(feature, datasets.Value):
        return feature.dtype
    return type(feature).__name__


def _pick_image_column(ds: Any, given: str | None, name: str) -> str:
    import datasets

    if given:
        if given not in ds.features:
            raise DatasetError(f"{name} has no column {given!r}; columns: {_describe(ds)}.")
        return given
    images = [k for k, v in ds.features.items() if isinstance(v, datasets.Image)]
    if len(images) == 1:
        return images[0]
    if len(images) > 1:
        raise DatasetError(
            f"{name} has several image columns ({', '.join(images)}); choose one with "
            "--image-column."
        )
    named = [k for k in ds.features if k.lower() in IMAGE_NAMES]
    if named:
        return named[0]
    raise DatasetError(
        f"no image column found in {name}; columns: {_describe(ds)}. Pass --image-column."
    )


def _pick_label_column(ds: Any, given: str | None, image_col: str, name: str) -> str:
    import datasets

    if given:
        if given not in ds.features:
            raise DatasetError(f"{name} has no column {given!r}; columns: {_describe(ds)}.")
        return given
    class_labels = [
        k for k, v in ds.features.items() if isinstance(v, datasets.ClassLabel) and k != image_col
    ]
    if len(class_labels) == 1:
        return class_labels[0]
    pool = class_labels or [k for k in ds.features if k != image_col]
    named = [k for k in pool if k.lower() in LABEL_NAMES]
    if named:
        return named[0]
    scalar = [k for k in pool if isinstance(ds.features[k], datasets.Value)]
    if not class_labels and len(pool) == 1 and scalar:
        return scalar[0]
    if class_labels:
        raise DatasetError(
            f"{name} has several class-label columns ({', '.join(class_labels)}); choose one "
            "with --label-column."
        )
    raise DatasetError(
        f"no label column found in {name}; columns: {_describe(ds)}. Pass --label-column."
    )


def _labels(ds: Any, column: str, name: str) -> tuple[list[int], list[str]]:
    import datasets

    feature = ds.features[column]
    values = ds[column]
    if isinstance(feature, datasets.ClassLabel):
        present = sorted({v for v in values if v is not None and v >= 0})
        names = [feature.int2str(v) for v in present]
    else:
        if any(isinstance(v, list | dict) for v in values[:10]):
            raise DatasetError(
                f"label column {column!r} of {name} holds {_kind(feature)} values; zoosel "
                "needs one class per image. Pass --label-column."
            )
        present = sorted({v for v in values if v is not None}, key=lambda v: (str(type(v)), v))
        names = [str(v) for v in present]
    index = {v: i for i, v in enumerate(present)}
    labels = [index.get(v, -1) for v in values]
    return labels, names
