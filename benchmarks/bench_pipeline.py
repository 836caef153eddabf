"""Time zoosel's whole per-candidate pipeline against the raw forward pass of the same model.

Two zoos of randomly initialised models, saved in the Hub layout and loaded through zoosel's
own ``local`` source:

* ``five``: timm resnet50, convnext_tiny, vit_small_patch16_224, efficientnet_b0 and a
  transformers ViT-B/16 (``ViTForImageClassification``, 1000 labels);
* ``fifty``: 50 small timm models (10 seeds of 5 ``test_*`` architectures).

The target data are JPEGs of 500 x 375 generated on the fly (``--classes`` x
``--per-class``). Each model is ranked by ``zoosel.rank`` (default scorers, no cache) the
earlier way (``pipeline=False``: every candidate decodes and transforms the sample in the
main process) and the current way, in the same process, and its raw forward pass is timed on
pre-made tensors (same batch size, same torch threads) right after zoosel ran it, in both
runs (the faster of the two is kept). Stage times come from wrappers
around zoosel's own functions (load, decode, transform, forward) and from the scorers'
timings; they are summed over threads, so stages that overlap can add up to more than the
wall time.

With ``--repeat N`` the current way runs N times and each candidate's fastest counts (the
raw forward is the faster of two already). With ``--gpu-images-per-s RATE...`` the results
add a projection (not a measurement) of the data pipeline's share of the wall time on a GPU
machine: the per-image decode and transform costs measured here on one core, spread over
``--gpu-cores`` preprocessing threads, against a GPU forward pass assumed to run at RATE
images per second.

Run: PYTHONPATH=. .venv/bin/python benchmarks/bench_pipeline.py --zoo five --threads 2
     --per-class 20 --repeat 2 --gpu-images-per-s 1000 4000
     (then --threads 1 --per-class 12, --zoo fifty; ``--report`` alone rewrites the
     results file)
Each run writes benchmarks/results/pipeline/<zoo>-t<threads>.json and rewrites
benchmarks/results/pipeline.md from every JSON there.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cpu_model  # noqa: E402

import zoosel  # noqa: E402
import zoosel.api  # noqa: E402
import zoosel.data.images  # noqa: E402
from zoosel.sources.local import LocalSource  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "pipeline.md"
RAW = HERE / "results" / "pipeline"
WORK = Path(os.environ.get("ZOOSEL_BENCH_DIR", "/tmp/zoosel-bench-pipeline"))

FIVE = [("resnet50", "timm"), ("convnext_tiny", "timm"), ("vit_small_patch16_224", "timm"),
        ("efficientnet_b0", "timm"), ("vit-base-patch16-224", "transformers")]
SMALL = ["test_resnet", "test_vit", "test_efficientnet", "test_convnext", "test_byobnet"]


# --- the zoo and the data ---------------------------------------------------------------------


def make_models(zoo: str) -> list[Path]:
    """Random-weight checkpoints in the Hub layout (made once, kept under WORK)."""
    from timm.models import save_for_hf

    out = []
    specs = FIVE if zoo == "five" else [(f"{a}", "timm", s) for s in range(10) for a in SMALL]
    for spec in specs:
        name, library = spec[0], spec[1]
        seed = spec[2] if len(spec) > 2 else 0
        folder = WORK / "models" / f"{name}-s{seed}"
        if not (folder / "config.json").is_file():
            torch.manual_seed(seed)
            folder.mkdir(parents=True, exist_ok=True)
            if library == "timm":
                import timm

                save_for_hf(timm.create_model(name, pretrained=False), str(folder),
                            safe_serialization=True)
            else:
                from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

                labels = {i: f"label_{i}" for i in range(1000)}
                config = ViTConfig(num_labels=1000, id2label=labels,
                                   label2id={v: k for k, v in labels.items()})
                ViTForImageClassification(config).save_pretrained(folder)
                ViTImageProcessor().save_pretrained(folder)
        out.append(folder)
    return out


def make_jpegs(classes: int, per_class: int, seed: int = 0) -> Path:
    """``classes`` folders of ``per_class`` 500 x 375 JPEGs (smooth noise, a class tint)."""
    from PIL import Image

    root = WORK / f"jpegs-{classes}x{per_class}"
    if root.is_dir():
        return root
    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / f"class_{c:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        tint = rng.uniform(40, 215, size=3)
        for i in range(per_class):
            coarse = rng.normal(0, 50, size=(24, 32, 3)) + tint
            small = Image.fromarray(np.clip(coarse, 0, 255).astype(np.uint8))
            big = np.asarray(small.resize((500, 375), Image.BICUBIC), dtype=np.float32)
            big += rng.normal(0, 8, size=big.shape)
            Image.fromarray(np.clip(big, 0, 255).astype(np.uint8)).save(
                folder / f"{i:03d}.jpg", quality=90)
    return root


# --- stage timing -----------------------------------------------------------------------------


class Stages:
    """Seconds per (candidate, stage), summed over threads, from wrappers around zoosel."""

    def __init__(self, data: Path, batch_size: int, device: str = "cpu") -> None:
        self.seconds: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.current = "(sampling)"
        self.data, self.batch_size, self.device = data, batch_size, device
        self.raw: dict[str, float] = {}
        self.aside = 0.0
        """Seconds spent timing raw forward passes inside the run (not zoosel's)."""

    def add(self, owner: str, stage: str, began: float) -> None:
        self.seconds[owner][stage] += time.perf_counter() - began

    def timed(self, stage: str, fn: Callable[..., Any], owner: Callable[[], str]
              ) -> Callable[..., Any]:
        sync = stage == "forward" and self.device.startswith("cuda")

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if sync:  # GPU work is asynchronous: time it, not its launch
                    torch.cuda.synchronize()
                self.add(owner(), stage, began)
        return wrapper


@contextmanager
def instrumented(stages: Stages, raw: bool = True) -> Iterator[None]:
    original_load = LocalSource.load
    original_decode = zoosel.data.images.decode
    original_run = zoosel.api.run_candidate

    def load(source: Any, candidate: Any, settings: Any) -> Any:
        began = time.perf_counter()
        model = original_load(source, candidate, settings)
        stages.add(candidate.id, "load", began)
        return dataclasses.replace(
            model,
            transform=stages.timed("transform", model.transform, lambda: candidate.id),
            forward=stages.timed("forward", model.forward, lambda: candidate.id))

    def run(candidate: Any, *args: Any, **kwargs: Any) -> Any:
        stages.current = candidate.id
        try:
            result = original_run(candidate, *args, **kwargs)
        finally:
            stages.current = "(between)"
        if raw:  # the raw forward of the same model, right after zoosel ran it
            began = time.perf_counter()
            LocalSource.load = original_load  # type: ignore[method-assign]
            try:
                stages.raw[Path(candidate.ref).name] = raw_forward(
                    stages.data, Path(candidate.ref), stages.batch_size, stages.device)
            finally:
                LocalSource.load = load  # type: ignore[method-assign]
            stages.aside += time.perf_counter() - began
        return result

    LocalSource.load = load  # type: ignore[method-assign]
    zoosel.data.images.decode = stages.timed("decode", original_decode, lambda: stages.current)
    zoosel.api.run_candidate = run
    try:
        yield
    finally:
        LocalSource.load = original_load  # type: ignore[method-assign]
        zoosel.data.images.decode = original_decode
        zoosel.api.run_candidate = original_run


def rank_once(data: Path, models: list[Path], pipeline: bool, batch_size: int,
              device: str = "cpu", precision: str = "auto", raw: bool = True
              ) -> dict[str, Any]:
    stages = Stages(data, batch_size, device)
    with instrumented(stages, raw):
        began = time.perf_counter()
        ranking = zoosel.rank(str(data), models=[f"local:{m}" for m in models], use_cache=False,
                              progress=False, per_class=None, batch_size=batch_size,
                              pipeline=pipeline, device=device, precision=precision)
        wall = time.perf_counter() - began - stages.aside
    assert not ranking.failed, [r.error for r in ranking.failed]
    rows = {}
    for r in ranking.results:
        seconds = dict(stages.seconds.get(r.candidate, {}))
        seconds["score"] = sum(v for k, v in r.timings.items() if k in ranking.scorers)
        rows[r.candidate] = {"wall": r.seconds, "stages": seconds, "scores": r.scores}
    return {"wall": wall, "sampling_decode": stages.seconds["(sampling)"].get("decode", 0.0),
            "candidates": rows, "raw": stages.raw}


def raw_forward(data: Path, model_dir: Path, batch_size: int, device: str = "cpu") -> float:
    """Seconds of the model's own forward pass over the pre-made, pre-batched sample (on
    ``device``, with the precision and memory layout zoosel chooses there)."""
    from zoosel.data import load_target
    from zoosel.engine.extract import autocast_dtype
    from zoosel.engine.preprocess import default_precision, wants_channels_last
    from zoosel.threads import torch_threads
    from zoosel.types import LoadSettings

    source = LocalSource()
    model = source.load(source.resolve(str(model_dir)), LoadSettings(device=device))
    target = load_target(str(data))
    rows = range(len(target.labels))
    with torch_threads(1):  # not timed: only quicker
        items = [model.transform(target.image(r)) for r in rows]
    layout = torch.contiguous_format
    if wants_channels_last(device, model.module):
        layout = torch.channels_last
        model.module.to(memory_format=layout)
    batches = [torch.stack(items[i:i + batch_size]).to(device).contiguous(memory_format=layout)
               for i in range(0, len(items), batch_size)]
    precision = default_precision(device)
    cuda = device.startswith("cuda")
    with torch.inference_mode(), torch.autocast(torch.device(device).type,
                                                dtype=autocast_dtype(precision),
                                                enabled=precision != "fp32"):
        for batch in (batches[0], batches[-1]):  # warm-up: one-time allocations, kernels
            model.forward(batch)
        if cuda:
            torch.cuda.synchronize()
        began = time.perf_counter()
        for batch in batches:
            model.forward(batch)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - began


def fastest(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several runs of the same way as one: per candidate the run where it took the least
    wall time (its stages with it), the fastest whole run, the fastest raw forwards."""
    best = min(runs, key=lambda r: r["wall"])
    candidates = {cid: {**min((r["candidates"][cid] for r in runs), key=lambda row: row["wall"]),
                        "walls": [r["candidates"][cid]["wall"] for r in runs]}
                  for cid in best["candidates"]}
    raw: dict[str, float] = {}
    for r in runs:
        for name, seconds in r["raw"].items():
            raw[name] = min(seconds, raw.get(name, seconds))
    return {**best, "candidates": candidates, "raw": raw, "repeats": len(runs)}


def measure(zoo: str, threads: int, classes: int, per_class: int, batch_size: int,
            device: str = "cpu", gpu_rates: list[float] | None = None,
            gpu_cores: int = 8, repeat: int = 1) -> dict[str, Any]:
    from zoosel.engine.preprocess import default_batch_size

    torch.set_num_threads(threads)
    batch_size = batch_size or default_batch_size(device)
    models = make_models(zoo)
    data = make_jpegs(classes, per_class)
    load = os.getloadavg()
    print(f"{zoo}: {len(models)} models, {classes} x {per_class} JPEGs, {threads} threads, "
          f"{device}", flush=True)
    before = rank_once(data, models, pipeline=False, batch_size=batch_size, device=device)
    print(f"  before: {before['wall']:.1f}s", flush=True)
    afters = []
    for i in range(max(1, repeat)):  # raw forwards timed in the first only
        afters.append(rank_once(data, models, pipeline=True, batch_size=batch_size,
                                device=device, raw=i == 0))
        print(f"  after: {afters[-1]['wall']:.1f}s", flush=True)
    after = fastest(afters)
    agreement = None
    if device.startswith("cuda"):  # does the default mixed precision change the ranking?
        full = rank_once(data, models, pipeline=True, batch_size=batch_size, device=device,
                         precision="fp32", raw=False)
        agreement = precision_agreement(full, after)
        print(f"  fp32 vs auto precision: {agreement}", flush=True)
    # timed right after each candidate in both runs; the faster of the two
    raw = {m.name: min(before["raw"][m.name], after["raw"][m.name]) for m in models}
    load_end = os.getloadavg()
    prep = measure_prep(data, models)
    print(f"  per-image CPU seconds: {prep}", flush=True)
    worst = 0.0
    for cid, row in after["candidates"].items():
        for name, value in before["candidates"][cid]["scores"].items():
            other = row["scores"][name]
            worst = max(worst, abs(other - value) / max(abs(value), 1e-12))
    return {
        "zoo": zoo, "threads": threads, "classes": classes, "per_class": per_class,
        "batch_size": batch_size, "loadavg": load, "loadavg_end": load_end,
        "cpu": cpu_model(),
        "cores": os.cpu_count(), "torch": torch.__version__,
        "python": platform.python_version(), "models": [m.name for m in models],
        "before": before, "after": after, "raw": raw, "max_rel_score_diff": worst,
        "device": device, "precision_agreement": agreement, "prep": prep,
        "repeat": len(afters),
        "projection": {"rates": gpu_rates, "cores": gpu_cores} if gpu_rates else None,
        "command": " ".join(["benchmarks/bench_pipeline.py", *sys.argv[1:]]),
    }


def measure_prep(data: Path, models: list[Path], count: int = 64) -> dict[str, Any]:
    """Per-image CPU seconds on one core (one thread, one torch thread, best of 3) of
    decoding a JPEG and of each model's own transform, and each model's preprocessing
    signature (models with the same one share the transformed images)."""
    from zoosel.data import load_target
    from zoosel.threads import torch_threads
    from zoosel.types import LoadSettings

    target = load_target(str(data))
    rows = list(range(min(count, len(target.labels))))
    source = LocalSource()
    out: dict[str, Any] = {"images": len(rows), "models": {}}
    with torch_threads(1):
        decode = lambda: [zoosel.data.images.decode(  # noqa: E731
            {"path": target.data[r]["image"]["path"]}, "") for r in rows]
        decode()
        out["decode"] = _best(decode) / len(rows)
        images = [target.image(r) for r in rows]
        for m in models:
            model = source.load(source.resolve(str(m)), LoadSettings())
            transform = lambda model=model: [model.transform(i) for i in images]  # noqa: E731
            transform()
            out["models"][m.name] = {"transform": _best(transform) / len(rows),
                                     "key": model.preprocess_key}
    return out


def project_gpu(run: dict[str, Any], rate: float, cores: int) -> list[dict[str, Any]]:
    """Per model, in zoo order: the projected seconds of the forward pass on a GPU doing
    ``rate`` images per second, and of the CPU transforms spread over ``cores`` threads
    (none for a model whose preprocessing an earlier one shares), from the per-image costs
    measured on this machine's cores. Transforms overlap the forward pass there, so the GPU
    waits only for the transform time beyond the forward's."""
    n = run["classes"] * run["per_class"]
    seen: set[str | None] = set()
    rows = []
    for name in run["models"]:
        cost = run["prep"]["models"][name]
        shared = cost["key"] is not None and cost["key"] in seen
        seen.add(cost["key"])
        forward = n / rate
        transform = 0.0 if shared else n * cost["transform"] / cores
        wall = max(forward, transform)
        rows.append({"model": name.rsplit("-s", 1)[0], "forward": forward,
                     "transform": transform, "shared": shared, "wall": wall,
                     "wait_share": (wall - forward) / wall,
                     "serial_share": transform / (transform + forward)})
    return rows


def precision_agreement(full: dict[str, Any], mixed: dict[str, Any]) -> dict[str, Any]:
    """Per scorer: whether the candidates come in the same order with fp32 and with the
    default precision, and the largest relative score difference."""
    out = {}
    names = list(next(iter(full["candidates"].values()))["scores"])
    def order(run: dict[str, Any], name: str) -> list[str]:
        rows = run["candidates"]
        return sorted(rows, key=lambda c: -rows[c]["scores"].get(name, float("-inf")))

    for name in names:
        diff = max(abs(full["candidates"][c]["scores"][name] - row["scores"][name])
                   / max(abs(full["candidates"][c]["scores"][name]), 1e-12)
                   for c, row in mixed["candidates"].items())
        out[name] = {"same_order": order(full, name) == order(mixed, name),
                     "max_rel_diff": diff}
    return out


# --- thread settings per stage ----------------------------------------------------------------


def _best(fn: Callable[[], Any], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return min(times)


def measure_threads(classes: int, per_class: int) -> dict[str, Any]:
    """Seconds of each stage at 1 and 2 torch threads (in the calling thread), and of the
    transforms on zoosel's thread pool; the scorers on synthetic features."""
    from _common import make_data

    from zoosel.api import list_scorers
    from zoosel.data import load_target
    from zoosel.engine.preprocess import Pipeline
    from zoosel.types import LoadSettings, ScoreInputs

    models = make_models("five")
    target = load_target(str(make_jpegs(classes, per_class)))
    rows = list(range(min(64, len(target.labels))))
    source = LocalSource()
    loaded = {m.name: source.load(source.resolve(str(m)), LoadSettings())
              for m in (models[0], models[-1])}
    images = [target.image(r) for r in rows]
    out: list[dict[str, Any]] = []

    def row(stage: str, size: str, fn: Callable[[], Any], repeats: int = 3) -> None:
        cells = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            fn()
            cells[threads] = _best(fn, repeats)
        out.append({"stage": stage, "size": size, "t1": cells[1], "t2": cells[2]})
        print(out[-1], flush=True)

    row("decode (PIL)", f"{len(rows)} JPEGs 500x375",
        lambda: [zoosel.data.images.decode({"path": target.data[r]["image"]["path"]}, "")
                 for r in rows])
    for name, model in loaded.items():
        row(f"transform {name.rsplit('-s', 1)[0]}", f"{len(rows)} images",
            lambda model=model: [model.transform(i) for i in images])
        torch.set_num_threads(2)
        for workers in (1, 2):
            with Pipeline(workers) as pipeline:
                def pooled(model: Any = model, pipeline: Any = pipeline) -> None:
                    list(pipeline.batches(model.transform, images.__getitem__, rows, 32))
                pooled()
                out.append({"stage": f"transform {name.rsplit('-s', 1)[0]} on zoosel's pool "
                            f"({workers} thread{'s' if workers > 1 else ''}, 1 torch "
                            "thread each)", "size": f"{len(rows)} images",
                            "t1": None, "t2": _best(pooled)})
                print(out[-1], flush=True)
        x = torch.stack([model.transform(i) for i in images[:32]])
        with torch.inference_mode():
            row(f"forward {name.rsplit('-s', 1)[0]}", "batch of 32",
                lambda model=model, x=x: model.forward(x), repeats=2)
    scorers = list_scorers()
    for n, d, c in [(250, 768, 10), (250, 2048, 10), (1000, 2048, 20), (5000, 2048, 50)]:
        f, y = make_data(n, d, c)
        inputs = ScoreInputs(labels=y, num_classes=c, features=f)
        for name in ("logme", "lfc", "linear_probe"):
            row(f"score {name}", f"N={n} D={d} C={c}",
                lambda name=name, inputs=inputs: scorers[name].fn(inputs),
                repeats=3 if n * d <= 600_000 else 1)
    torch.set_num_threads(2)
    return {"zoo": "threads", "rows": out, "loadavg": os.getloadavg(), "cpu": cpu_model(),
            "cores": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(),
            "command": " ".join(["benchmarks/bench_pipeline.py", *sys.argv[1:]])}


def _threads_section(run: dict[str, Any]) -> list[str]:
    lines = [
        "## Thread settings per stage",
        "",
        f"Command: `PYTHONPATH=. .venv/bin/python {run['command']}`",
        "",
        f"Machine: {run['cpu']}, {run['cores']} logical cores, torch {run['torch']}, "
        f"Python {run['python']}. Load average when started: "
        f"{' '.join(f'{x:.2f}' for x in run['loadavg'])}.",
        "",
        "Best of 3 (1 for the large scorer sizes), seconds. `1 thread` / `2 threads`: "
        "torch threads of the calling thread; the pool rows run on zoosel's "
        "preprocessing threads. Scorers on synthetic ReLU-like features.",
        "",
        "| stage | size | 1 thread (s) | 2 threads (s) | 2 threads / 1 thread |",
        "|---|---|---|---|---|",
    ]
    for r in run["rows"]:
        if r["t1"] is None:
            lines.append(f"| {r['stage']} | {r['size']} | | {r['t2']:.3f} | |")
        else:
            lines.append(f"| {r['stage']} | {r['size']} | {r['t1']:.3f} | {r['t2']:.3f} | "
                         f"{r['t2'] / r['t1']:.2f} |")
    return lines + [""]


# --- the report -------------------------------------------------------------------------------

STAGES = ("load", "decode", "transform", "forward", "score")


def _model_of(cid: str, names: list[str]) -> str:
    return next((n for n in names if f"/{n}@" in cid or cid.endswith(f"/{n}")), cid)


def _section(run: dict[str, Any]) -> list[str]:
    names = run["models"]
    n = run["classes"] * run["per_class"]
    lines = [
        f"## Zoo `{run['zoo']}`, torch threads {run['threads']}",
        "",
        f"Command: `PYTHONPATH=. .venv/bin/python {run['command']}`",
        "",
        f"Machine: {run['cpu']}, {run['cores']} logical cores, torch {run['torch']}, "
        f"Python {run['python']}, device {run.get('device', 'cpu')}. Load average when "
        f"started (other jobs share this machine): "
        f"{' '.join(f'{x:.2f}' for x in run['loadavg'])}"
        + (f"; when the after run ended: {' '.join(f'{x:.2f}' for x in run['loadavg_end'])}"
           if run.get("loadavg_end") else "") + ".",
        "",
        f"Data: {run['classes']} classes x {run['per_class']} JPEGs of 500 x 375 ({n} images),"
        f" batch size {run['batch_size']}, default scorers"
        + ("" if "prep" in run else " (an earlier run: the default scorers of its time)")
        + f", no cache. Largest relative "
        f"difference of any score between before and after: {run['max_rel_score_diff']:.1e}.",
        "",
        *([f"The current way ran {run['repeat']} times in this run: per candidate its "
           "fastest (wall time, stages with it), and the faster whole run; the raw forward "
           "is the fastest of the before run's and the first after run's.", ""]
          if run.get("repeat", 1) > 1 else []),
        f"Whole run (sampling included): before {run['before']['wall']:.1f} s, after "
        f"{run['after']['wall']:.1f} s ({run['before']['wall'] / run['after']['wall']:.2f}x)."
        f" Decoding while drawing the sample: before "
        f"{run['before']['sampling_decode']:.2f} s, after {run['after']['sampling_decode']:.2f}"
        " s (after: the only decoding of the run).",
        "",
    ]
    if run.get("precision_agreement"):
        lines += ["Default precision on this device against fp32 (same run): "
                  + "; ".join(f"{k}: {'same order' if v['same_order'] else 'ORDER CHANGED'}, "
                              f"max rel. diff {v['max_rel_diff']:.1e}"
                              for k, v in run["precision_agreement"].items()) + ".", ""]
    groups: dict[str, list[str]] = defaultdict(list)
    for cid in sorted(run["after"]["candidates"], key=lambda c: names.index(_model_of(c, names))):
        groups[_model_of(cid, names).rsplit("-s", 1)[0]].append(cid)

    def mean(way: str, cids: list[str], field: str = "wall") -> float:
        return float(np.mean([run[way]["candidates"][c][field] for c in cids]))

    def label(group: str, cids: list[str]) -> str:
        return group if len(cids) == 1 else f"{group} (mean of {len(cids)})"

    lines += [
        "| model | raw forward (s) | zoosel before (s) | ratio before | zoosel after (s) "
        "| ratio after | forward share before | forward share after |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def share(way: str, cids: list[str]) -> float:
        rows = [run[way]["candidates"][c] for c in cids]
        return float(np.mean([r["stages"].get("forward", 0.0) / r["wall"] for r in rows]))

    each = all("walls" in row for row in run["after"]["candidates"].values())
    for group, cids in groups.items():
        raw = float(np.mean([run["raw"][_model_of(c, names)] for c in cids]))
        old, new = mean("before", cids), mean("after", cids)
        spread = ""
        if each:
            walls = np.mean([run["after"]["candidates"][c]["walls"] for c in cids], axis=0)
            spread = " (" + " / ".join(f"{raw / w:.2f}" for w in walls) + " each run)"
        lines.append(f"| {label(group, cids)} | {raw:.3f} | {old:.3f} | {raw / old:.2f} | "
                     f"{new:.3f} | {raw / new:.2f}{spread} | {share('before', cids):.2f} | "
                     f"{share('after', cids):.2f} |")
    ratios = {g: float(np.mean([run["raw"][_model_of(c, names)] for c in cids]))
              / mean("after", cids) for g, cids in groups.items()}
    low = [g for g, r in ratios.items() if r < 0.9]
    lines += ["", f"Ratio after at least 0.9: {len(ratios) - len(low)} of {len(ratios)}"
              + (f" (below: {', '.join(low)})." if low else ".")]
    total_raw = sum(run["raw"].values())
    lines += ["", f"All models: raw forward {total_raw:.1f} s; whole zoosel run before "
              f"{run['before']['wall']:.1f} s (ratio {total_raw / run['before']['wall']:.2f})"
              f", after {run['after']['wall']:.1f} s "
              f"(ratio {total_raw / run['after']['wall']:.2f}).", ""]
    lines += ["Stage seconds per candidate (summed over threads; after: load runs in the "
              "background for every candidate but the first, decode happens while drawing "
              "the sample):", "",
              "| model | way | wall | " + " | ".join(STAGES) + " |",
              "|---|---|---|" + "---|" * len(STAGES)]
    for group, cids in groups.items():
        for way in ("before", "after"):
            rows = [run[way]["candidates"][c] for c in cids]
            cells = [np.mean([r["stages"].get(s, 0.0) for r in rows]) for s in STAGES]
            lines.append(f"| {label(group, cids)} | {way} | {mean(way, cids):.3f} | "
                         + " | ".join(f"{c:.3f}" for c in cells) + " |")
    return lines + [""] + _projection(run)


def _projection(run: dict[str, Any]) -> list[str]:
    """The GPU projection of a run made with --gpu-images-per-s (none otherwise)."""
    prep, projection = run.get("prep"), run.get("projection")
    if not prep:
        return []
    lines = [f"Per-image CPU cost measured in this run on one core of this machine (one "
             f"thread, one torch thread, best of 3 over {prep['images']} images): decode "
             f"{prep['decode'] * 1e3:.2f} ms; transform "
             + ", ".join(f"{k.rsplit('-s', 1)[0]} {v['transform'] * 1e3:.2f} ms"
                         for k, v in prep["models"].items()) + ".", ""]
    if not projection:
        return lines
    n, cores = run["classes"] * run["per_class"], projection["cores"]
    lines += [
        f"**Projection, not a GPU measurement** (no GPU was available): the data pipeline's "
        f"share of the wall time on a GPU machine, assuming the GPU's forward pass runs at "
        f"the given images per second for every model (`--gpu-images-per-s`, an assumption,"
        f" not measured), and that zoosel's {cores} preprocessing threads (`--gpu-cores`; "
        f"zoosel uses one per core, at most 8) each transform at the per-image cost "
        f"measured above on this machine's core, without slowing each other. "
        f"{n} images per candidate; the run's decoding ({n} x "
        f"{prep['decode'] * 1e3:.2f} ms / {cores} = {n * prep['decode'] / cores:.3f} s) "
        f"happens once, while drawing the sample. Transforms overlap the forward pass on a "
        f"GPU: the GPU waits only for transform time beyond the forward's (`GPU waits`); "
        f"`if serial` is the share without that overlap. Ignored: host-to-device copies, "
        f"the first batch's latency, loading, scoring.", "",
        "| GPU images/s | model | forward (s) | transforms (s) | wall (s) | GPU waits "
        "(share of wall) | if serial |",
        "|---|---|---|---|---|---|---|",
    ]
    for rate in projection["rates"]:
        for r in project_gpu(run, rate, cores):
            transform = "shared" if r["shared"] else f"{r['transform']:.3f}"
            lines.append(f"| {rate:g} | {r['model']} | {r['forward']:.3f} | {transform} | "
                         f"{r['wall']:.3f} | {r['wait_share']:.2f} | "
                         f"{r['serial_share']:.2f} |")
    return lines + [""]


def report() -> None:
    runs = [json.loads(p.read_text()) for p in RAW.glob("*.json")]
    order = {"five": 0, "fifty": 1, "threads": 2}
    runs.sort(key=lambda r: (order.get(r["zoo"], 3), r.get("device", "cpu"),
                             -r.get("threads", 0)))
    lines = [
        "# Pipeline benchmark: zoosel per candidate vs the raw forward pass",
        "",
        "Each model is ranked by `zoosel.rank` the earlier way (`pipeline=False`: each "
        "candidate decodes and transforms the whole sample in the main process, at the "
        "process's torch threads) and the current way (images decoded once per run, "
        "transformed on a thread pool with one torch thread per thread, shared between "
        "candidates of the same preprocessing, next candidate loaded in the background, "
        "small scoring on one thread), in the same process. The raw forward is the model's "
        "own `forward` over pre-made, pre-batched tensors (same batch size and threads), "
        "timed right after zoosel ran the candidate, in both runs; the faster of the two "
        "is kept (other jobs share this machine). Ratio = raw forward / zoosel's wall time "
        "for that candidate (1.0: zoosel adds nothing); forward share = the time zoosel "
        "spent inside the model's `forward` / its wall time for that candidate. Random "
        "weights; the models are saved in the Hub layout and loaded through "
        "zoosel's `local` source. No GPU was available: the GPU defaults (bf16 autocast, "
        "channels-last, batch 128, pinned memory) are not measured here; the GPU rows "
        "below are a projection from CPU costs.",
        "",
        "Scorers: zoosel's default set at the commit of each run, with the default "
        "confidence step (resampling the sample and re-ranking); the confidence step counts "
        "in the whole run's wall time, not in any candidate's.",
        "",
        "How the runs with `--repeat 2` were started: under `flock /tmp/zoosel-cpu.lock`, "
        "each in a session of its own whose autogroup nice is -20 (`setsid sh -c "
        "'echo -20 > /proc/$$/autogroup; exec ...'`). The machine's background jobs run at "
        "nice 19, but under Linux autogroup "
        "scheduling nice counts only within a session, so they took a full share of the two "
        "cores: the same raw forward of efficientnet_b0 (200 images, 2 threads) took 24.1 s "
        "in a plain session and 6.0 s in one at autogroup nice -10, minutes apart. Single "
        "runs still vary by up to about 10% per candidate on this shared machine, hence "
        "`--repeat 2` (the raw forward is already the faster of two).",
        "",
    ]
    for run in runs:
        lines += _threads_section(run) if run["zoo"] == "threads" else _section(run)
    RESULTS.write_text("\n".join(lines))
    print(f"wrote {RESULTS}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--zoo", choices=["five", "fifty", "threads"], default="five",
                        help="threads: each stage at 1 and 2 torch threads")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=32,
                        help="0: zoosel's default for the device")
    parser.add_argument("--device", default="cpu", help="cpu, cuda...")
    parser.add_argument("--gpu-images-per-s", type=float, nargs="+", default=None,
                        help="assumed GPU forward throughput(s) for a projection of the data "
                             "pipeline's share on a GPU machine (a projection from the CPU "
                             "costs measured here, not a GPU measurement)")
    parser.add_argument("--gpu-cores", type=int, default=8,
                        help="preprocessing threads assumed on the GPU machine (projection)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the current way this many times, keep each candidate's "
                             "fastest (the raw forward already is the faster of two)")
    parser.add_argument("--report", action="store_true", help="only rewrite the results file")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if not args.report:
        if args.zoo == "threads":
            run = measure_threads(args.classes, args.per_class)
            name, section = "threads.json", _threads_section(run)
        else:
            run = measure(args.zoo, args.threads, args.classes, args.per_class,
                          args.batch_size, args.device, args.gpu_images_per_s, args.gpu_cores,
                          args.repeat)
            suffix = "" if args.device == "cpu" else f"-{args.device.replace(':', '')}"
            name, section = f"{args.zoo}-t{args.threads}{suffix}.json", _section(run)
        if args.no_write:
            print("\n".join(section))
            return
        RAW.mkdir(parents=True, exist_ok=True)
        (RAW / name).write_text(json.dumps(run, indent=1))
    report()


if __name__ == "__main__":
    threading.current_thread().name = "MainThread"
    main()
