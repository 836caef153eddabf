"""Cost of the check that a transformers model's forward pass is repeatable.

zoosel reruns the first two images of a candidate's first batch and refuses the model when
its features change (random masking, dropout left on). This times feature extraction of a
ViT-S/16-sized ``ViTForImageClassification`` (random weights, 224 x 224) over N images in
batches of 32, with the check (as zoosel loads it) and without it (the same loader with the
check replaced by the bare forward), interleaved run by run, best of R, for 1 and 2 torch
threads.

Run: .venv/bin/python benchmarks/bench_repeat_check.py [--n 64] [--repeats 3]
Writes benchmarks/results/repeat_check.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import best_of, cpu_model  # noqa: E402
from zoosel.engine.extract import extract  # noqa: E402
from zoosel.sources import loaders  # noqa: E402
from zoosel.testing.factories import make_images  # noqa: E402
from zoosel.types import LoadSettings  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "repeat_check.md"


def build(path: Path) -> Path:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                       intermediate_size=1536, num_labels=10)
    ViTForImageClassification(config).save_pretrained(path)
    ViTImageProcessor().save_pretrained(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    images = [img for img, _ in make_images(num_classes=8, per_class=args.n // 8, size=224)]
    rows = list(range(len(images)))
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = build(Path(tmp) / "vit")
        inner: dict[str, object] = {}
        original = loaders._deterministic
        loaders._deterministic = lambda forward, name: inner.setdefault("forward", forward)
        try:
            bare = loaders.load_dir(path, LoadSettings())
        finally:
            loaders._deterministic = original
        lines = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            times: dict[str, list[float]] = {"with": [], "without": []}
            for _ in range(args.repeats):  # interleaved: load from others hits both alike
                # a fresh check every run, as for a new candidate
                checked = replace(bare, forward=original(inner["forward"], "bench"))
                for name, model in (("with", checked), ("without", bare)):
                    seconds, _ = best_of(
                        lambda m=model: extract(m, images.__getitem__, rows, batch_size=32), 1)
                    times[name].append(seconds)
            with_s, without_s = min(times["with"]), min(times["without"])
            lines.append(f"| {threads} | {len(rows)} | {without_s:.2f} s | {with_s:.2f} s | "
                         f"**{with_s / without_s:.3f}x** |")
    with open("/proc/loadavg") as fh:
        load = fh.read().split()[:3]
    text = "\n".join([
        "# Repeatability check: cost",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_repeat_check.py --n {args.n} "
        f"--repeats {args.repeats}`",
        "",
        f"Machine: {cpu_model()}, 2 CPU cores shared with other jobs, torch "
        f"{torch.__version__}; load average at the end {' '.join(load)}. Total run: "
        f"{time.perf_counter() - began:.0f} s.",
        "",
        "ViT-S/16-sized ViTForImageClassification (random weights, 224 x 224), feature "
        "extraction (features and source probabilities) in batches of 32, best of "
        f"{args.repeats} interleaved runs. The check reruns the first 2 images of the "
        "first batch.",
        "",
        "| torch threads | images | without check | with check | with / without |",
        "|---|---|---|---|---|",
        *lines,
        "",
    ])
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
