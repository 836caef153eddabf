"""The benchmark build: steps that run separately and resume.

``zoo`` trains the zoo, ``finetune`` produces the ground truth, ``score`` runs every
selector, ``report`` computes the metrics and writes the report. A build lives in one
folder; ``bench.json`` there records the profile, and every step skips the work whose
result is already on disk.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoosel.bench import groundtruth, nets, selectors, zoo
from zoosel.bench.data import BenchData, external_name
from zoosel.bench.profiles import Profile
from zoosel.errors import BenchJobError, UsageError
from zoosel.threads import serial

STEPS = ("zoo", "finetune", "score", "report")
CONFIG_FILE = "bench.json"
TIMES_FILE = "times.json"


@dataclass
class Bench:
    """One benchmark build in ``root``."""

    root: Path
    profile: Profile
    external_targets: Sequence[str] = ()
    """Image folders or dataset ids used as extra target tasks."""
    builtin_targets: bool = True
    models: Sequence[str] = ()
    """Zoo members given as folders in Hub layout (skips the zoo build when set)."""
    generalist: str | None = None
    progress: bool = True
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr))
    device: str = "auto"
    """Where training, fine-tuning and the selectors' models run: ``auto`` (a GPU when one
    is visible), ``cpu``, ``cuda``, ``cuda:1``... Recorded with every result; the
    committed results were computed on the CPU."""

    def __post_init__(self) -> None:
        from zoosel.bench.train import resolve_device

        self.device = resolve_device(self.device)
        self.root = Path(self.root)
        self.data = BenchData(self.root, self.profile, self.external_targets)

    # -- layout ---------------------------------------------------------------------

    @property
    def zoo_dir(self) -> Path:
        return self.root / "zoo"

    @property
    def sources(self) -> list[str]:
        return self.data.source_names()

    @property
    def tasks(self) -> list[str]:
        from zoosel.bench.domains import TARGET_TASKS

        builtin = list(self.profile.targets or [d.name for d in TARGET_TASKS])
        external = [external_name(s) for s in self.external_targets]
        return (builtin if self.builtin_targets else []) + external

    def members(self) -> dict[str, Path]:
        """Zoo members that exist on disk, by name."""
        if self.models:
            return {Path(m).name: Path(m).resolve() for m in self.models}
        return {m.name: (self.zoo_dir / m.name).resolve()
                for m in zoo.plan(self.profile, self.sources)
                if zoo.is_built(self.zoo_dir, m.name)}

    def digests(self) -> dict[str, str | None]:
        """Each member's weights SHA-256 (None for a member without ``zoo.json``)."""
        return {name: nets.member_meta(path).get("weights_sha256")
                for name, path in self.members().items()}

    def store(self) -> groundtruth.Store:
        """The fine-tuning results, those of members whose weights changed hidden."""
        return groundtruth.Store(self.root, self.digests())

    def _zoo_todo(self) -> tuple[list[zoo.Member], list[zoo.Member], list[str]]:
        """The planned members, those to (re)build, and the names of the out-of-date ones
        among them."""
        planned = zoo.plan(self.profile, self.sources)
        todo = zoo.to_build(self.zoo_dir, self.profile, planned)
        return planned, todo, [m.name for m in todo if zoo.is_built(self.zoo_dir, m.name)]

    def _built_members(self) -> dict[str, Path]:
        members = self.members()
        if not members:
            raise UsageError(f"no zoo in {self.root}: run `zoosel bench zoo` first.")
        return members

    def generalist_name(self) -> str | None:
        """The member the gain metric is measured against."""
        if self.generalist:
            return Path(self.generalist).name
        if self.models:
            return None
        return f"{self.profile.generalist_archs[0]}-{zoo.GENERALIST}" \
            if self.profile.generalist_archs else None

    def check_config(self, fresh: bool = False) -> None:
        """Record the profile in ``bench.json``; refuse a folder built with other settings."""
        self.root.mkdir(parents=True, exist_ok=True)
        config = {"profile": self.profile.key(), "external_targets": list(self.external_targets),
                  "builtin_targets": self.builtin_targets, "models": list(self.models)}
        path = self.root / CONFIG_FILE
        if path.is_file() and not fresh:
            old = json.loads(path.read_text())
            if old != json.loads(json.dumps(config)):
                raise UsageError(
                    f"{self.root} holds a build made with other settings (profile "
                    f"{old.get('profile', {}).get('name')!r}); use another --dir, or "
                    "--fresh to start over there.")
        path.write_text(json.dumps(config, indent=1, sort_keys=True) + "\n")

    def _time(self, step: str, seconds: float) -> None:
        path = self.root / TIMES_FILE
        times = json.loads(path.read_text()) if path.is_file() else {}
        times[step] = times.get(step, 0.0) + seconds
        path.write_text(json.dumps(times, indent=1, sort_keys=True) + "\n")

    # -- steps ----------------------------------------------------------------------

    def build_zoo(self) -> None:
        """Train every zoo member not yet on disk."""
        if self.models:
            self.log("zoosel bench: zoo given by the config; nothing to build.")
            return
        began = time.perf_counter()
        for d in self.sources:  # generate the data once, before the workers read it
            self.data.source(d, "train")
            self.data.source(d, "test")
        planned, todo, stale = self._zoo_todo()
        multibn = [m for m in todo if m.init == "multibn"]  # one job trains them all
        jobs = multibn[:1] + [m for m in todo if m.init != "multibn"]
        self.log(f"zoosel bench: {len(planned) - len(todo)} zoo members built, "
                 f"{len(jobs)} training jobs to run on {self.device}")
        if stale:
            self.log(f"  retrained, as their recipe changed: {', '.join(stale)} (their "
                     "fine-tuning results and scores are redone too)")
        first = [m for m in jobs if m.depends_on is None]
        then = [m for m in jobs if m.depends_on is not None]
        for wave in (first, then):
            for member, meta in _pool_map(
                build_member_job, [(self.root, self.profile, m, self.device) for m in wave],
                self.profile.workers, "training the zoo", self.progress,
            ):
                self.log(f"  {member.name}: source accuracy {meta['source_accuracy']:.3f} "
                         f"({meta['train_seconds']:.0f} s)")
        self._time("zoo", time.perf_counter() - began)

    def finetune(self) -> None:
        """Fine-tune every member on every target (learning-rate grid, then noise seeds)."""
        began = time.perf_counter()
        members = self._built_members()
        for task in self.tasks:
            for split in ("pool", "val", "test"):
                self.data.target(task, split)
        store = self.store()
        for phase in ("learning rates", "noise seeds"):
            done = store.done()
            if phase == "learning rates":
                runs = groundtruth.lr_runs(self.profile, sorted(members), self.tasks)
            else:
                runs = groundtruth.noise_runs(self.profile, store.records(), self.tasks)
            todo = [r for r in runs if r.key not in done]
            self.log(f"zoosel bench: fine-tuning ({phase}): {len(todo)} runs to go on "
                     f"{self.device}")
            for _, record in _pool_map(
                finetune_job,
                [(self.root, self.profile, r, members[r.member], self.device) for r in todo],
                self.profile.workers, f"fine-tuning ({phase})", self.progress,
            ):
                store.append(record)
        self._time("finetune", time.perf_counter() - began)

    def scoring_jobs(self) -> list[selectors.Scoring]:
        """Every (task, regime, variant) the selectors are run on."""
        jobs = [selectors.Scoring(t, r) for t in self.tasks for r in self.profile.regimes]
        if self.profile.ablation and "full" in self.profile.regimes:
            jobs += [selectors.Scoring(t, "full", selectors.ABLATION) for t in self.tasks]
        return jobs

    def score(self) -> None:
        """Run every selector on every task and regime not scored yet."""
        began = time.perf_counter()
        members = self._built_members()
        for task in self.tasks:  # prepare folders before the workers need them
            for regime in self.profile.regimes:
                self.data.regime_folder(task, regime)
        if not self.models:
            for d in {*self.sources, None}:
                self.data.source_folder(d)
        digests, versions = self.digests(), self.scorer_versions()
        todo = [j for j in self.scoring_jobs()
                if not selectors.is_current(self._score_path(j), digests, versions)]
        self.log(f"zoosel bench: scoring: {len(todo)} (task, regime) pairs to go on "
                 f"{self.device}")
        for job, record in _pool_map(
            score_job, [(self.root, self.profile, j, members, self.device) for j in todo],
            self.profile.workers, "scoring", self.progress,
        ):
            selectors.save(self._score_path(job), record)
        self._time("score", time.perf_counter() - began)

    def scorer_versions(self) -> dict[str, str]:
        """The version of every selector the profile runs, as installed."""
        from zoosel.api import select_scorers

        return selectors.scorer_versions(select_scorers(list(self.profile.scorers)))

    def _score_path(self, job: selectors.Scoring) -> Path:
        return self.root / "scores" / f"{job.name}.json"

    def report(self, out_dir: Path | None = None) -> dict[str, Path]:
        """Metrics over everything built so far, written as markdown, JSON and plots."""
        from zoosel.bench.report import write_report
        from zoosel.bench.results import collect

        results = collect(self)
        return write_report(results, Path(out_dir) if out_dir else self.root / "report")

    def status(self) -> list[tuple[str, int, int, str]]:
        """How far each step is, without running anything: ``(step, done, total, note)``."""
        if self.models:
            zoo_line = ("zoo", len(self.members()), len(self.models), "given by the config")
        else:
            planned, todo, stale = self._zoo_todo()
            zoo_line = ("zoo", len(planned) - len(todo), len(planned),
                        f"out of date: {', '.join(stale)}" if stale else "")
        digests = self.digests()
        store = groundtruth.Store(self.root, digests)
        done, records = store.done(), store.records()
        lr = list(groundtruth.lr_runs(self.profile, sorted(digests), self.tasks))
        noise = list(groundtruth.noise_runs(self.profile, records, self.tasks))
        jobs = self.scoring_jobs()
        versions = self.scorer_versions()
        scored = sum(selectors.is_current(self._score_path(j), digests, versions)
                     for j in jobs)
        report = self.root / "report" / "report.md"
        return [
            zoo_line,
            ("finetune: learning rates", sum(r.key in done for r in lr), len(lr), ""),
            ("finetune: noise seeds", sum(r.key in done for r in noise), len(noise),
             "" if len(noise) or not self.profile.noise_targets
             else "known once the learning rates are chosen"),
            ("score", scored, len(jobs), ""),
            ("report", int(report.is_file()), 1, str(report) if report.is_file() else ""),
        ]

    def run(self, steps: Iterable[str] = STEPS, fresh: bool = False) -> dict[str, Path] | None:
        """Run ``steps`` in order."""
        self.check_config(fresh=fresh)
        paths = None
        for step in steps:
            if step == "zoo":
                self.build_zoo()
            elif step == "finetune":
                self.finetune()
            elif step == "score":
                self.score()
            elif step == "report":
                paths = self.report()
            else:
                raise UsageError(f"unknown step {step!r}; steps: {', '.join(STEPS)}.")
        return paths


# -- jobs (module-level so worker processes can import them) -------------------------------


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def build_member_job(root: Path, profile: Profile, member: zoo.Member,
                     device: str = "cpu") -> tuple[Any, Any]:
    return member, zoo.build_member(root, profile, member, device)


def finetune_job(root: Path, profile: Profile, run: groundtruth.Run,
                 member_dir: Path, device: str = "cpu") -> tuple[Any, Any]:
    return run, groundtruth.finetune(root, profile, run, member_dir, device)


def score_job(root: Path, profile: Profile, job: selectors.Scoring,
              members: Mapping[str, Path], device: str = "cpu") -> tuple[Any, Any]:
    return job, selectors.score(root, profile, job, members, device)


def _pool_map(fn: Callable[..., tuple[Any, Any]], args: list[tuple[Any, ...]], workers: int,
              desc: str, progress: bool) -> Iterable[tuple[Any, Any]]:
    """``fn(*a)`` for every ``a``, over ``workers`` processes (one thread each), yielding
    results as they complete; in this process when ``workers`` is 1."""
    from tqdm.auto import tqdm

    if not args:
        return
    bar = tqdm(total=len(args), desc=desc, disable=not progress, file=sys.stderr)
    if workers <= 1:
        try:
            with serial():
                for a in args:
                    yield fn(*a)
                    bar.update()
        finally:
            bar.close()
        return
    import multiprocessing

    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        pool = ProcessPoolExecutor(max_workers=workers, initializer=_init_worker,
                                   mp_context=multiprocessing.get_context("spawn"))
        try:
            pending: set[Future[Any]] = {pool.submit(fn, *a) for a in args}
            failures: list[str] = []
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    bar.update()
                    try:
                        result = future.result()
                    except Exception as exc:  # one failed job must not stop the others
                        failures.append(f"{type(exc).__name__}: {exc}")
                        print(f"zoosel bench: a {desc} job failed: {failures[-1]}",
                              file=sys.stderr)
                        continue
                    yield result
            if failures:
                raise BenchJobError(f"{len(failures)} {desc} job(s) failed (first: "
                                    f"{failures[0]}); finished work is kept, and running "
                                    "the step again retries only what is missing.")
        finally:
            # On Ctrl-C (or any error) drop the queued jobs instead of running them all
            # before returning; what finished is already stored.
            pool.shutdown(wait=True, cancel_futures=True)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        bar.close()
