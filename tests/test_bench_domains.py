"""The benchmark's procedural image domains: determinism, shapes, variation, learnability."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from zoosel.bench.domains import (
    EXTRA_TARGET_TASKS,
    FURTHER_TARGET_TASKS,
    MORE_TARGET_TASKS,
    SOURCE_DOMAINS,
    TARGET_TASKS,
    Domain,
    generate,
    get_domain,
    write_image_folder,
)
from zoosel.errors import UnknownNameError

TARGETS = TARGET_TASKS + MORE_TARGET_TASKS + EXTRA_TARGET_TASKS + FURTHER_TARGET_TASKS
ALL = SOURCE_DOMAINS + TARGETS
IDS = [d.name for d in ALL]


def _features(x: np.ndarray) -> dict[str, np.ndarray]:
    """Cheap fixed representations: standardised pixels, log amplitude spectrum, histograms.

    Colours are random per image, so pixels are standardised per image; stationary textures
    (random phase) carry their class in the spectrum only; palettes and amounts of ink show
    in colour and intensity histograms.
    """
    n = len(x)
    q = (x // 64).reshape(n, -1, 3).astype(np.int64)
    codes = q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2] + 64 * np.arange(n)[:, None]
    colours = np.bincount(codes.ravel(), minlength=64 * n).reshape(n, 64)
    x = x.astype(np.float32) / 255.0
    z = x - x.mean(axis=(1, 2), keepdims=True)
    z = z / (z.std(axis=(1, 2, 3), keepdims=True) + 1e-3)
    g = z @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    spec = np.log1p(np.abs(np.fft.fft2(g)))
    bins = np.clip(((g + 3.0) * 16 / 6.0).astype(np.int64), 0, 15).reshape(n, -1)
    lumas = np.stack([np.bincount(b, minlength=16) for b in bins])
    return {
        "pixels": z.reshape(n, -1),
        "spectrum": spec.reshape(n, -1),
        "colours": np.sqrt(colours / g[0].size),
        "intensities": np.sqrt(lumas / g[0].size),
    }


def _centroid_accuracy(xtr, ytr, xte, yte) -> float:
    classes = np.unique(ytr)
    cent = np.stack([xtr[ytr == c].mean(0) for c in classes])
    d = (cent**2).sum(1)[None] - 2.0 * xte @ cent.T
    return float((classes[d.argmin(1)] == yte).mean())


def test_registry() -> None:
    assert len(SOURCE_DOMAINS) >= 8
    for tasks in (TARGET_TASKS, MORE_TARGET_TASKS, EXTRA_TARGET_TASKS, FURTHER_TARGET_TASKS):
        assert len(tasks) == 8
    assert len(set(IDS)) == len(IDS)
    sources = {d.name for d in SOURCE_DOMAINS}
    for d in SOURCE_DOMAINS:
        assert d.role == "source" and len(d.classes) == 10 and d.near is None
    for d in TARGETS:
        assert d.role == "target" and len(d.classes) == 8
        assert d.near is None or d.near in sources
    for tasks in (TARGET_TASKS, MORE_TARGET_TASKS, EXTRA_TARGET_TASKS, FURTHER_TARGET_TASKS):
        assert any(d.near for d in tasks) and any(d.near is None for d in tasks)
    # Together the two sets give every source a near target.
    assert {d.near for d in TARGETS} - {None} == sources
    for d in ALL:
        assert len(set(d.classes)) == len(d.classes) and d.description
        assert get_domain(d.name) is d


def test_unknown_domain_suggests_close_names() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'glyphs'") as info:
        get_domain("glyph")
    assert "textures" in str(info.value)
    with pytest.raises(KeyError):
        get_domain("nope")


@pytest.mark.parametrize("size", [32, 48])
def test_shapes_determinism_and_prefix(size: int) -> None:
    for d in ALL:
        x, y = generate(d, 3, size=size, seed=5)
        k = len(d.classes)
        assert x.shape == (3 * k, size, size, 3) and x.dtype == np.uint8
        assert y.dtype == np.int64 and np.array_equal(y, np.repeat(np.arange(k), 3))
        if size == 32:
            x2, _ = generate(d, 3, size=size, seed=5)
            assert np.array_equal(x, x2), d.name
            x5, y5 = generate(d, 5, size=size, seed=5)
            prefix = x5.reshape(k, 5, size, size, 3)[:, :3].reshape(x.shape)
            assert np.array_equal(prefix, x), d.name
            other, _ = generate(d, 3, size=size, seed=6)
            assert (other != x).any(axis=(1, 2, 3)).all(), d.name


def test_size_64_and_render() -> None:
    d = get_domain("symmetry")
    img = d.render(3, np.random.default_rng(0), 64)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    with pytest.raises(ValueError):
        d.render(10, np.random.default_rng(0))
    assert isinstance(d, Domain)


def test_every_class_varies() -> None:
    for d in ALL:
        x, _ = generate(d, 2, seed=11)
        x = x.reshape(len(d.classes), 2, -1).astype(np.int16)
        assert (x.std(axis=2) > 3).all(), d.name  # not a flat image
        assert (np.abs(x[:, 0] - x[:, 1]).mean(axis=1) > 5).all(), d.name


def test_classes_are_distinguishable() -> None:
    """Nearest-centroid on one of the fixed features beats chance clearly, on every domain."""
    failures = []
    for d in ALL:
        k = len(d.classes)
        x, y = generate(d, 60, seed=3)
        train = np.arange(len(y)) % 60 < 30
        feats = _features(x)
        acc = max(
            _centroid_accuracy(f[train], y[train], f[~train], y[~train]) for f in feats.values()
        )
        if acc < 1.6 / k:
            failures.append(f"{d.name}: {acc:.2f}")
    assert not failures


def test_write_image_folder_round_trip(tmp_path) -> None:
    d = get_domain("shapes")
    x, y = generate(d, 2, seed=0)
    root = write_image_folder(x, y, d.classes, tmp_path / "ds")
    assert root == tmp_path / "ds"
    dirs = sorted(p for p in root.iterdir() if p.is_dir())
    assert len(dirs) == len(d.classes)  # sorted names keep the label order
    assert [p.name.split("_", 1)[1] for p in dirs] == list(d.classes)
    for label, folder in enumerate(dirs):
        files = sorted(folder.iterdir())
        assert [f.name for f in files] == ["00000.png", "00001.png"]
        for j, f in enumerate(files):
            back = np.asarray(Image.open(f).convert("RGB"))
            assert np.array_equal(back, x[label * 2 + j])
