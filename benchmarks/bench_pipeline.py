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

Run: PYTHONPATH=. .venv/bin/python benchmarks/bench_pipeline.py --zoo five --threads 2
     (then --threads 1, --zoo fifty; ``--report`` alone rewrites the results file)
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


def measure(zoo: str, threads: int, classes: int, per_class: int, batch_size: int,
            device: str = "cpu") -> dict[str, Any]:
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
    after = rank_once(data, models, pipeline=True, batch_size=batch_size, device=device)
    print(f"  after: {after['wall']:.1f}s", flush=True)
    agreement = None
    if device.startswith("cuda"):  # does the default mixed precision change the ranking?
        full = rank_once(data, models, pipeline=True, batch_size=batch_size, device=device,
                         precision="fp32", raw=False)
        agreement = precision_agreement(full, after)
        print(f"  fp32 vs auto precision: {agreement}", flush=True)
    # timed right after each candidate in both runs; the faster of the two
    raw = {m.name: min(before["raw"][m.name], after["raw"][m.name]) for m in models}
    worst = 0.0
    for cid, row in after["candidates"].items():
        for name, value in before["candidates"][cid]["scores"].items():
            other = row["scores"][name]
            worst = max(worst, abs(other - value) / max(abs(value), 1e-12))
    return {
        "zoo": zoo, "threads": threads, "classes": classes, "per_class": per_class,
        "batch_size": batch_size, "loadavg": load, "cpu": cpu_model(),
        "cores": os.cpu_count(), "torch": torch.__version__,
        "python": platform.python_version(), "models": [m.name for m in models],
        "before": before, "after": after, "raw": raw, "max_rel_score_diff": worst,
        "device": device, "precision_agreement": agreement,
        "command": " ".join(["benchmarks/bench_pipeline.py", *sys.argv[1:]]),
    }


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
        f"{' '.join(f'{x:.2f}' for x in run['loadavg'])}.",
        "",
        f"Data: {run['classes']} classes x {run['per_class']} JPEGs of 500 x 375 ({n} images),"
        f" batch size {run['batch_size']}, default scorers, no cache. Largest relative "
        f"difference of any score between before and after: {run['max_rel_score_diff']:.1e}.",
        "",
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

    for group, cids in groups.items():
        raw = float(np.mean([run["raw"][_model_of(c, names)] for c in cids]))
        old, new = mean("before", cids), mean("after", cids)
        lines.append(f"| {label(group, cids)} | {raw:.3f} | {old:.3f} | {raw / old:.2f} | "
                     f"{new:.3f} | {raw / new:.2f} | {share('before', cids):.2f} | "
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
        "channels-last, batch 128, pinned memory) are not measured here.",
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
    parser.add_argument("--report", action="store_true", help="only rewrite the results file")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if not args.report:
        if args.zoo == "threads":
            run = measure_threads(args.classes, args.per_class)
            name, section = "threads.json", _threads_section(run)
        else:
            run = measure(args.zoo, args.threads, args.classes, args.per_class,
                          args.batch_size, args.device)
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
