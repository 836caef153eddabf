"""Scoring the zoo on every target with every selector, through ``zoosel.rank``.

Selectors see what a user would have: the regime's training set (an image folder),
sampled 25 per class as in the paper (and, as an ablation, the whole training split
of the full regime). Each member's Domain Similarity uses its own source domain.
The cost of a selector is the time of the extraction it needs plus its own, summed
over the zoo, measured on one thread like the fine-tuning runs it is compared with.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoosel.bench import nets
from zoosel.bench.data import BenchData
from zoosel.bench.profiles import Profile
from zoosel.threads import serial
from zoosel.types import Need, Scorer

ABLATION = "full-split"


@dataclass(frozen=True)
class Scoring:
    """One scoring job: a task, a regime and how the training set is sampled."""

    task: str
    regime: str
    variant: str = "sampled"
    """``sampled`` (``score_per_class`` per class) or ``full-split`` (every image)."""

    @property
    def name(self) -> str:
        suffix = "" if self.variant == "sampled" else f"-{self.variant}"
        return f"{self.task}__{self.regime}{suffix}"

    @property
    def label(self) -> str:
        """The regime as the report names it."""
        return self.regime if self.variant == "sampled" else f"{self.regime} ({self.variant})"


def member_of(candidate_id: str) -> str:
    """Zoo member name of a local candidate id ``local:/.../zoo/NAME@hash``."""
    return candidate_id.split(":", 1)[-1].rsplit("@", 1)[0].rstrip("/").rsplit("/", 1)[-1]


def source_rules(root: Path, profile: Profile, members: Mapping[str, Path]) -> list[str]:
    """``PATTERN=FOLDER`` rules giving every member its own source domain's sample."""
    data = BenchData(root, profile)
    rules = []
    for _, path in sorted(members.items()):
        source = nets.member_meta(path).get("source")
        if source is None:
            continue
        folder = data.source_folder(None if source == "all" else source)
        rules.append(f"{path.resolve()}={folder}")
    return rules


def score(root: Path, profile: Profile, job: Scoring, members: Mapping[str, Path],
          device: str = "cpu") -> dict[str, Any]:
    """Rank the zoo for ``job`` with every selector (models run on ``device``); returns
    scores, costs and errors."""

    from zoosel.api import rank, select_scorers

    data = BenchData(root, profile)
    folder = data.regime_folder(job.task, job.regime)
    chosen = select_scorers(list(profile.scorers))
    with serial():
        ranking = rank(
            str(folder), models=[f"local:{p}" for _, p in sorted(members.items())],
            scorers=list(chosen), per_class=profile.score_per_class
            if job.variant == "sampled" else None, seed=0, progress=False,
            cache_dir=root / "cache", source_data=source_rules(root, profile, members),
            device=device,
        )
    scores: dict[str, dict[str, float]] = {name: {} for name in chosen}
    seconds: dict[str, float] = dict.fromkeys(chosen, 0.0)
    for result in ranking.results:
        member = member_of(result.candidate)
        for name, value in result.scores.items():
            scores.setdefault(name, {})[member] = value
        for name, scorer in chosen.items():
            # steps taken from the cache cost what they took when they ran
            seconds[name] += _cost(scorer.needs, name,
                                   {**result.cached_timings, **result.timings})
    for name, scorer in chosen.items():
        if Need.PROBE_FEATURES in scorer.needs:
            seconds[name] += ranking.timings.get("probe", 0.0)
    return {
        "task": job.task, "regime": job.regime, "variant": job.variant, "label": job.label,
        "num_samples": ranking.dataset.num_samples, "scores": scores, "cost": seconds,
        "errors": {member_of(r.candidate): r.error for r in ranking.failed},
        "notes": {member_of(r.candidate): r.notes for r in ranking.results if r.notes},
        "device": device,
        "versions": scorer_versions(chosen),
        "members_sha256": {name: nets.member_meta(path).get("weights_sha256")
                           for name, path in sorted(members.items())},
    }


def scorer_versions(scorers: Mapping[str, Scorer]) -> dict[str, str]:
    """Each scorer's version, options included (what the results record)."""
    return {name: scorer.version for name, scorer in scorers.items()}


def is_current(path: Path, digests: Mapping[str, str | None],
               versions: Mapping[str, str] | None = None) -> bool:
    """Whether the scoring result at ``path`` exists and was computed on exactly the
    members of ``digests`` with those weights (members without a digest not compared)
    and, when ``versions`` are given, by exactly those scorers at those versions (results
    written before versions were recorded are not compared)."""
    if not path.is_file():
        return False
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:
        return False
    held = record.get("versions")
    if versions is not None and held is not None and dict(held) != dict(versions):
        return False
    recorded = record.get("members_sha256")
    if recorded is None:  # written before digests were recorded
        return True
    def known(d: Mapping[str, str | None]) -> dict[str, str]:
        return {k: v for k, v in d.items() if v is not None}

    return known(recorded) == known(digests)


def _cost(needs: frozenset[Need] | tuple[Need, ...], name: str,
          timings: Mapping[str, float]) -> float:
    total = timings.get(name, 0.0)
    if Need.FEATURES in needs or Need.SOURCE_PROBS in needs:
        total += timings.get("forward", 0.0)
    if Need.GRADIENT_SKETCH in needs:
        total += timings.get("sketch", 0.0)
    if Need.SOURCE_MEANS in needs:
        total += timings.get("source_domain", 0.0)
    return total


def save(path: Path, record: Mapping[str, Any]) -> None:
    """Write a scoring result atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(record), indent=1, sort_keys=True) + "\n")
    tmp.replace(path)
