"""The feature cache: atomic entries, verification on read, concurrent writers."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys

import numpy as np
from click.testing import CliRunner

from zoosel.cli import cache_commands as _cache_commands  # noqa: F401
from zoosel.cli import cli
from zoosel.engine.cache import FeatureCache
from zoosel.sources.listing_cache import ListingCache


def test_roundtrip_and_merge(tmp_path):
    cache = FeatureCache(tmp_path)
    a, b = np.arange(12.0).reshape(3, 4), np.ones((3, 2), np.float32)
    cache.store("k" * 32, {"candidate": "x", "num_params": 5}, {"features": a})
    cache.store("k" * 32, {"has_head": True}, {"source_probs": b})
    meta, arrays = cache.load("k" * 32)
    assert meta == {"candidate": "x", "num_params": 5, "has_head": True}
    np.testing.assert_array_equal(arrays["features"], a)
    np.testing.assert_array_equal(arrays["source_probs"], b)
    assert cache.load("z" * 32) is None


def test_corrupted_or_truncated_arrays_are_discarded(tmp_path, capsys):
    cache = FeatureCache(tmp_path)
    key = "c" * 32
    cache.store(key, {"candidate": "cand"}, {"features": np.random.rand(50, 8),
                                             "source_probs": np.random.rand(50, 3)})
    folder = cache.root / key[:2] / key
    data = (folder / "features.npy").read_bytes()
    (folder / "features.npy").write_bytes(data[: len(data) // 2])  # truncated
    probs = bytearray((folder / "source_probs.npy").read_bytes())
    probs[-5] ^= 0xFF  # one flipped byte
    (folder / "source_probs.npy").write_bytes(bytes(probs))
    meta, arrays = cache.load(key)
    assert arrays == {} and meta["candidate"] == "cand"
    err = capsys.readouterr().err
    assert "cached 'features' of cand is unreadable" in err and "source_probs" in err
    assert not (folder / "features.npy").exists()
    (folder / "meta.json").write_text("{not json")
    assert cache.load(key) is None


def _writer(root: str, name: str, rounds: int) -> None:
    cache = FeatureCache(root)
    for i in range(rounds):
        cache.store("s" * 32, {f"by_{name}": i}, {name: np.full((200, 64), i, np.float32)})


def test_two_processes_writing_one_entry_do_not_corrupt_it(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), name, 40))
             for name in ("features", "source_probs")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    meta, arrays = FeatureCache(tmp_path).load("s" * 32)
    assert set(arrays) == {"features", "source_probs"}
    assert meta == {"by_features": 39, "by_source_probs": 39}
    assert (arrays["features"] == 39).all() and (arrays["source_probs"] == 39).all()


def test_cache_ls_and_clear(tmp_path):
    cache = FeatureCache(tmp_path)
    cache.store("a" * 32, {"candidate": "local:m1"}, {"features": np.zeros((100, 10))})
    listings = ListingCache(tmp_path)
    listings.store("k" * 32, [{"id": "org/m"}] * 40)
    listing_bytes = listings.size()
    assert listing_bytes > 100
    out = CliRunner().invoke(cli, ["cache", "ls", "--cache-dir", str(tmp_path)]).output
    assert "local:m1" in out and "[features]" in out and "1 entries" in out
    assert f"1 Hub listings, {listing_bytes} B" in out
    feature_bytes = cache.entries()[0].size
    out = CliRunner().invoke(cli, ["cache", "clear", "--yes", "--cache-dir", str(tmp_path)])
    assert out.exit_code == 0
    assert f"freed {(feature_bytes + listing_bytes) / 1024:.1f} KiB" in out.output
    assert cache.entries() == [] and listings.files() == []
    assert listings.load("k" * 32, ttl=3600) is None


def test_cache_command_via_python_m(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "zoosel", "cache", "ls", "--cache-dir",
                           str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "0 entries" in proc.stdout
