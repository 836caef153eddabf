"""Ground truth: every zoo member fine-tuned on every target in every regime.

Each (member, task, regime, lr, seed) run is one job whose result is appended to
``groundtruth.jsonl`` the moment it exists, so an interrupted build loses at most the
runs in flight. The learning rate is chosen per (member, task, regime) on the
validation split, never on the test split; the chosen rate is then run with more
seeds on a subset of targets to measure the noise of the ground truth.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from zoosel.bench import nets
from zoosel.bench.data import BenchData
from zoosel.bench.profiles import Profile
from zoosel.bench.train import Schedule, accuracy, fit

FILE = "groundtruth.jsonl"


@dataclass(frozen=True)
class Run:
    """One fine-tuning run."""

    member: str
    task: str
    regime: str
    lr: float
    seed: int

    @property
    def key(self) -> tuple[str, str, str, float, int]:
        return (self.member, self.task, self.regime, float(self.lr), int(self.seed))


def finetune(root: Path, profile: Profile, run: Run, member_dir: Path,
             device: str = "cpu") -> dict[str, Any]:
    """Fine-tune ``run.member`` with the benchmark's protocol on ``device``; returns the
    result record."""
    import torch

    data = BenchData(root, profile)
    pool = data.target(run.task, "pool")
    train = pool.subset(data.regime_rows(run.task, run.regime))
    val, test = data.target(run.task, "val"), data.target(run.task, "test")
    torch.manual_seed(run.seed)
    model = nets.load(member_dir, num_classes=len(pool.classes))
    meta = nets.member_meta(member_dir)
    schedule = finetune_schedule(profile, run, meta.get("arch"))
    seconds = fit(model, train.images, train.labels, schedule, seed=run.seed, device=device)
    record = {**asdict(run), "member_sha256": meta.get("weights_sha256"),
              "val_accuracy": accuracy(model, val.images, val.labels),
              "test_accuracy": accuracy(model, test.images, test.labels),
              "seconds": seconds, "train_images": int(len(train.labels)), "device": device,
              "epochs": schedule.epochs}
    if profile.finetune_recipes:
        record["optimizer"], record["applied_lr"] = schedule.optimizer, schedule.lr
    return record


def finetune_schedule(profile: Profile, run: Run, arch: str | None) -> Schedule:
    """The fine-tuning schedule of ``run``: the paper's SGD protocol, or, when the profile
    asks for it, the recipe of the member's architecture (``run.lr`` is then the grid
    value, scaled by the recipe's factor)."""
    if not profile.finetune_recipes or arch is None:
        return Schedule(profile.epochs[run.regime], run.lr, batch_size=profile.batch_size)
    how = nets.get_arch(arch).finetune
    return Schedule(profile.epochs[run.regime], run.lr * how.lr_factor,
                    batch_size=profile.batch_size, optimizer=how.optimizer,
                    weight_decay=how.weight_decay, decay=how.decay, warmup=how.warmup)


class Store:
    """The JSON-lines file of finished runs.

    ``digests`` (member name to weights SHA-256) hides the records of members whose weights
    have changed since: their runs are redone, and the old lines stay in the file.
    """

    def __init__(self, root: Path, digests: Mapping[str, str | None] | None = None) -> None:
        self.path = root / FILE
        self.digests = dict(digests or {})

    def records(self) -> list[dict[str, Any]]:
        """Every complete, current record (a line cut short by an interruption is ignored)."""
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if self.is_current(record):
                out.append(record)
        return out

    def is_current(self, record: Mapping[str, Any]) -> bool:
        """Whether ``record`` was made with the member's present weights (or either side
        has no digest to compare)."""
        now, then = self.digests.get(record["member"]), record.get("member_sha256")
        return now is None or then is None or now == then

    def done(self) -> set[tuple[str, str, str, float, int]]:
        """Keys of the runs already stored."""
        return {Run(r["member"], r["task"], r["regime"], r["lr"], r["seed"]).key
                for r in self.records()}

    def append(self, record: Mapping[str, Any]) -> None:
        """Add one record, durably."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            fh.write(json.dumps(dict(record), sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def lr_runs(profile: Profile, members: Iterable[str], tasks: Iterable[str]) -> Iterator[Run]:
    """The first phase: every member, task, regime and learning rate, seed 0."""
    for task in tasks:
        for member in members:
            for regime in profile.regimes:
                for lr in profile.lrs:
                    yield Run(member, task, regime, lr, 0)


def chosen_lr(records: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str], float]:
    """The learning rate with the best validation accuracy (seed 0) per (member, task, regime);
    ties go to the larger rate."""
    best: dict[tuple[str, str, str], tuple[float, float]] = {}
    for r in records:
        if r["seed"] != 0:
            continue
        key = (r["member"], r["task"], r["regime"])
        candidate = (r["val_accuracy"], r["lr"])
        if key not in best or candidate > best[key]:
            best[key] = candidate
    return {k: v[1] for k, v in best.items()}


def noise_runs(profile: Profile, records: Iterable[Mapping[str, Any]],
               tasks: list[str]) -> Iterator[Run]:
    """The second phase: more seeds at the chosen rate, few-shot regimes of the first
    ``noise_targets`` tasks."""
    subset = set(tasks[: profile.noise_targets])
    few_shot = {name for name, shots in profile.regimes.items() if shots is not None}
    for (member, task, regime), lr in sorted(chosen_lr(records).items()):
        if task in subset and regime in few_shot:
            for seed in range(1, profile.noise_seeds):
                yield Run(member, task, regime, lr, seed)


def table(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Ground truth per ``task/regime``: accuracy per member at the chosen rate (mean over
    seeds), the seeds' accuracies, the chosen rates and the mean fine-tuning seconds."""
    records = list(records)
    lrs = chosen_lr(records)
    runs: dict[tuple[str, str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        key = (r["member"], r["task"], r["regime"])
        if lrs.get(key) == r["lr"]:
            runs[key].append(r)
    out: dict[str, dict[str, Any]] = {}
    for (member, task, regime), rs in sorted(runs.items()):
        rs = sorted(rs, key=lambda r: r["seed"])
        entry = out.setdefault(f"{task}/{regime}", {
            "task": task, "regime": regime, "accuracy": {}, "seed_accuracies": {},
            "lr": {}, "val_accuracy": {}, "seconds": []})
        accs = [r["test_accuracy"] for r in rs]
        entry["accuracy"][member] = sum(accs) / len(accs)
        if len(accs) > 1:
            entry["seed_accuracies"][member] = accs
        entry["lr"][member] = lrs[(member, task, regime)]
        entry["val_accuracy"][member] = rs[0]["val_accuracy"]
        entry["seconds"].append(rs[0]["seconds"])
    for entry in out.values():
        seconds = entry.pop("seconds")
        entry["finetune_seconds"] = sum(seconds) / len(seconds)
    return out
