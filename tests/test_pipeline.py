"""The shared sample pipeline: decode once, shared transforms, background loads, thread
settings, device defaults, and the score cache."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import Counter

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import zoosel
import zoosel.api
import zoosel.data.images
from zoosel.cli import cli
from zoosel.cli import commands as _commands  # noqa: F401  (registers the commands)
from zoosel.data.images import DecodedImages
from zoosel.engine import preprocess
from zoosel.engine.extract import extract
from zoosel.engine.preprocess import Pipeline, TensorStore
from zoosel.sources.local import LocalSource
from zoosel.testing.factories import (
    make_images,
    make_timm_model_dir,
    make_transformers_vit_dir,
    write_image_folder,
)
from zoosel.threads import torch_threads
from zoosel.types import LoadedModel

PER_CLASS, CLASSES = 5, 3


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipezoo")
    make_timm_model_dir(root / "resnet_a", arch="test_resnet", num_classes=6, seed=0)
    make_timm_model_dir(root / "resnet_b", arch="test_resnet", num_classes=6, seed=1)
    make_timm_model_dir(root / "vit", arch="test_vit", num_classes=4, seed=2)
    make_transformers_vit_dir(root / "hfvit", num_labels=3, seed=3)
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("pipedata") / "images",
                              num_classes=CLASSES, per_class=PER_CLASS, size=24)


def _rank(zoo, data, **kwargs):
    kwargs.setdefault("use_cache", False)
    kwargs.setdefault("confidence", 0)  # these tests count the run's own scorer calls
    return zoosel.rank(str(data), local_dirs=[str(zoo)], progress=False, **kwargs)


class Loads:
    """Wraps LocalSource.load: counts transform calls per preprocessing key and records
    the thread each load ran on."""

    def __init__(self, monkeypatch):
        self.transforms: Counter[str | None] = Counter()
        self.threads: list[str] = []
        original = LocalSource.load
        loads = self

        def load(source, candidate, settings):
            loads.threads.append(threading.current_thread().name)
            model = original(source, candidate, settings)

            def transform(image, inner=model.transform, key=model.preprocess_key):
                loads.transforms[key] += 1
                return inner(image)

            return dataclasses.replace(model, transform=transform)

        monkeypatch.setattr(LocalSource, "load", load)


def test_each_image_is_decoded_once_per_run(zoo, data, monkeypatch):
    decodes = Counter()
    original = zoosel.data.images.decode

    def counting(value, where):
        decodes[where] += 1
        return original(value, where)

    monkeypatch.setattr(zoosel.data.images, "decode", counting)
    ranking = _rank(zoo, data, scorers=["lfc"])
    assert len(ranking.results) == 4
    assert len(decodes) == PER_CLASS * CLASSES and set(decodes.values()) == {1}
    decodes.clear()
    _rank(zoo, data, scorers=["lfc"], pipeline=False)  # before: sampling + every candidate
    assert set(decodes.values()) == {1 + 4}


def test_candidates_with_the_same_preprocessing_share_transformed_images(zoo, data,
                                                                         monkeypatch):
    loads = Loads(monkeypatch)
    _rank(zoo, data, scorers=["lfc"])
    keys = list(loads.transforms)
    assert None not in keys and len(keys) >= 2  # timm and transformers differ
    # two test_resnet candidates, one key: transformed once for both
    assert all(count == PER_CLASS * CLASSES for count in loads.transforms.values())
    assert len(loads.threads) == 4
    # every candidate after the first was loaded in the background
    assert loads.threads[0] == threading.current_thread().name
    assert all(name.startswith("zoosel-load") for name in loads.threads[1:])


def test_scores_match_the_earlier_pipeline(zoo, data):
    scorers = ["lfc", "logme", "leep", "nce", "hscore"]
    after = _rank(zoo, data, scorers=scorers)
    before = _rank(zoo, data, scorers=scorers, pipeline=False)
    assert [r.candidate for r in after] == [r.candidate for r in before]
    for got, want in zip(after, before, strict=True):
        assert got.scores.keys() == want.scores.keys()
        for name, value in want.scores.items():
            assert got.scores[name] == pytest.approx(value, rel=1e-6, abs=1e-9)


def test_features_equal_a_direct_forward_pass(zoo, data):
    """The pipeline's features against transforming and stacking by hand."""
    from zoosel.data import load_target
    from zoosel.types import LoadSettings

    target = load_target(str(data)).keep_decoded()
    model = LocalSource().load(LocalSource().resolve(str(zoo / "resnet_a")), LoadSettings())
    rows = list(range(len(target.labels)))
    with Pipeline(2) as pipeline:
        arrays, batches = extract(model, target.image, rows, batch_size=4, pipeline=pipeline,
                                  key="k")
        again, _ = extract(model, target.image, rows, batch_size=4, pipeline=pipeline, key="k")
        assert pipeline.store.hits == 1
    with torch.inference_mode():
        x = torch.stack([model.transform(target.image(r)) for r in rows])
        want = torch.cat([model.forward(x[i:i + 4])[0] for i in range(0, len(rows), 4)])
    assert batches == 4
    np.testing.assert_allclose(arrays["features"], want.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(arrays["features"], again["features"])


class _DictModel(torch.nn.Module):
    def forward(self, pixel_values, mask):
        return (pixel_values * mask[:, None, :, :]).mean(dim=(2, 3))


def _dict_model() -> LoadedModel:
    module = _DictModel()

    def transform(image):
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
        mask = (pixels.mean(0) > 0.3).float()
        return {"pixel_values": pixels, "mask": mask}

    def forward(batch):
        assert isinstance(batch, dict) and set(batch) == {"pixel_values", "mask"}
        return module(**batch), None

    return LoadedModel(module=module, transform=transform, forward=forward, num_params=0,
                       has_head=False, preprocess_key="dict")


@pytest.mark.parametrize("shared", [True, False])
def test_transforms_may_return_mappings(shared):
    images = [img for img, _ in make_images(3, 3, size=16)]
    model = _dict_model()
    rows = list(range(len(images)))
    pipeline = Pipeline(2) if shared else None
    arrays, batches = extract(model, images.__getitem__, rows, batch_size=4,
                              pipeline=pipeline, key="images")
    want = []
    for img in images:
        item = model.transform(img)
        want.append((item["pixel_values"] * item["mask"]).mean(dim=(1, 2)))
    assert batches == 3
    np.testing.assert_allclose(arrays["features"], torch.stack(want).numpy(), rtol=1e-6)
    if pipeline is not None:
        assert pipeline.store.get((model.preprocess_key, "images")) is not None
        pipeline.close()


def test_stores_stay_within_their_budget():
    images = [img for img, _ in make_images(2, 4, size=10)]  # 300 bytes each
    decoded = DecodedImages(budget=1000)
    for i, img in enumerate(images):
        decoded.put(i, img)
    assert len(decoded) == 3 and decoded.get(0) is None and decoded.get(7) is not None
    store = TensorStore(budget=100)
    store.put("a", torch.zeros(10), 40)
    store.put("b", torch.zeros(10), 40)
    store.put("c", torch.zeros(10), 40)  # evicts the least recently used
    assert store.get("a") is None and store.get("c") is not None
    store.put("huge", torch.zeros(10), 101)
    assert store.get("huge") is None
    model = _dict_model()
    with Pipeline(1, store=TensorStore(budget=0)) as pipeline:  # nothing kept: transform again
        for _ in range(2):
            list(pipeline.batches(model.transform, images.__getitem__, range(8), 3, "k"))
        assert pipeline.transforms == 16


def test_thread_settings_and_device_defaults():
    assert preprocess.scoring_threads(250, 768, 2) == 1
    assert preprocess.scoring_threads(500, 2048, 2) == 1
    assert preprocess.scoring_threads(5000, 2048, 2) == 2
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    assert 1 <= preprocess.auto_workers() <= preprocess.MAX_WORKERS
    assert preprocess.default_precision("cpu") == "fp32"
    assert preprocess.default_precision("cuda", bf16_supported=True) == "bf16"
    assert preprocess.default_precision("cuda:1", bf16_supported=False) == "fp32"
    assert preprocess.default_batch_size("cpu") == 32
    assert preprocess.default_batch_size("cuda") == 128
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    assert not preprocess.wants_channels_last("cpu", conv)
    assert preprocess.wants_channels_last("cuda", conv)
    assert not preprocess.wants_channels_last("cuda", torch.nn.Linear(3, 4))


def test_small_scoring_runs_on_one_thread(zoo, data, monkeypatch):
    seen = []
    original = zoosel.api.list_scorers

    def scorers():
        found = original()

        def spy(inputs, fn=found["lfc"].fn):
            seen.append(torch.get_num_threads())
            return fn(inputs)

        return {**found, "lfc": dataclasses.replace(found["lfc"], fn=spy)}

    monkeypatch.setattr(zoosel.api, "list_scorers", scorers)
    threads = torch.get_num_threads()
    _rank(zoo, data, scorers=["lfc"])
    assert seen == [1] * 4 and torch.get_num_threads() == threads


def test_a_failed_background_load_is_retried_in_the_foreground(zoo, data, monkeypatch):
    original = LocalSource.load
    attempts = Counter()

    def load(source, candidate, settings):
        attempts[candidate.id] += 1
        if threading.current_thread().name.startswith("zoosel-load"):
            raise MemoryError("short of memory beside the previous model")
        return original(source, candidate, settings)

    monkeypatch.setattr(LocalSource, "load", load)
    ranking = _rank(zoo, data, scorers=["lfc"])
    assert not ranking.failed and len(ranking.results) == 4
    assert sorted(attempts.values()) == [1, 2, 2, 2]


class ScorerCalls:
    """Replaces the registered scorers by counting wrappers (``versions`` overrides)."""

    def __init__(self, monkeypatch, versions=None):
        self.calls: Counter[str] = Counter()
        original = zoosel.api.list_scorers

        def scorers():
            found = original()
            out = {}
            for name, scorer in found.items():
                def counting(inputs, fn=scorer.fn, name=name):
                    self.calls[name] += 1
                    return fn(inputs)

                out[name] = dataclasses.replace(
                    scorer, fn=counting, version=(versions or {}).get(name, scorer.version))
            return out

        monkeypatch.setattr(zoosel.api, "list_scorers", scorers)


def test_a_rerun_adding_a_scorer_computes_only_that_one(zoo, data, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    with monkeypatch.context() as patch:
        calls = ScorerCalls(patch)
        first = _rank(zoo, data, scorers=["lfc", "logme"], use_cache=True, cache_dir=cache)
        assert calls.calls == {"lfc": 4, "logme": 4}
    for r in first:
        assert not r.cached and r.cached_timings == {}
        assert {"forward", "lfc", "logme"} <= set(r.timings)
    with monkeypatch.context() as patch:
        calls = ScorerCalls(patch)
        second = _rank(zoo, data, scorers=["lfc", "logme", "leep"], use_cache=True,
                       cache_dir=cache)
        assert calls.calls == {"leep": 4}
    by_id = {r.candidate: r for r in first}
    for r in second:
        assert r.cached and r.forward_batches == 0
        assert set(r.timings) == {"leep"}  # no forward time: nothing ran but leep
        assert set(r.cached_timings) == {"forward", "lfc", "logme"}
        assert r.cached_timings["forward"] == by_id[r.candidate].timings["forward"]
        assert r.scores["lfc"] == by_id[r.candidate].scores["lfc"]
        assert r.scores["logme"] == by_id[r.candidate].scores["logme"]
    with monkeypatch.context() as patch:  # a new version of a scorer is recomputed
        calls = ScorerCalls(patch, versions={"logme": "2"})
        _rank(zoo, data, scorers=["lfc", "logme", "leep"], use_cache=True, cache_dir=cache)
        assert calls.calls == {"logme": 4}


def test_cached_rows_in_the_outputs(zoo, data, tmp_path):
    common = ["select", "--dataset", str(data), "--local-dir", str(zoo), "-q",
              "--cache-dir", str(tmp_path / "cache"), "-s", "lfc"]
    CliRunner().invoke(cli, common, catch_exceptions=False)
    table = CliRunner().invoke(cli, common, catch_exceptions=False).output
    rows = [line for line in table.splitlines() if line.strip().startswith(("1 ", "2 "))]
    assert rows and all(line.endswith("(cached)") for line in rows)
    out = CliRunner().invoke(cli, [*common, "--format", "json"], catch_exceptions=False).output
    for row in json.loads(out)["ranking"]:
        assert row["cached"] and "forward" not in row["timings"]
        assert row["cached_timings"]["forward"] > 0 and "lfc" in row["cached_timings"]


def test_features_of_another_precision_have_their_own_cache_entry(zoo, data, tmp_path,
                                                                   monkeypatch):
    loads = Loads(monkeypatch)
    kwargs = dict(scorers=["lfc"], use_cache=True, cache_dir=tmp_path / "cache")
    mixed = _rank(zoo, data, precision="bf16", **kwargs)
    assert len(loads.threads) == 4 and not any(r.cached for r in mixed)
    full = _rank(zoo, data, precision="fp32", **kwargs)  # not the bf16 features
    assert len(loads.threads) == 8 and not any(r.cached for r in full)
    again = _rank(zoo, data, **kwargs)  # auto is fp32 on CPU
    assert len(loads.threads) == 8 and all(r.cached for r in again)
