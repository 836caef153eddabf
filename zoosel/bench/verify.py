"""Reproducibility audit of a build: redo a random sample of its work and compare.

Zoo members are retrained in a scratch folder (sharing the build's data and the
generalist a member starts from) and their weights compared by SHA-256; fine-tuning
runs are redone and their validation and test accuracies compared. On the device the
work was recorded on, both must be identical: training is seeded and runs on one thread.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from zoosel.bench import groundtruth, nets, zoo
from zoosel.errors import UsageError
from zoosel.threads import serial

if TYPE_CHECKING:
    from zoosel.bench.run import Bench

TOLERANCE_OTHER_DEVICE = 0.05
"""Accuracy difference accepted when a run was recorded on another device."""


@dataclass(frozen=True)
class Check:
    """One redone piece of work."""

    kind: str
    """``member`` or ``run``."""
    name: str
    ok: bool
    detail: str


def sample_members(bench: Bench, count: int, seed: int = 0) -> list[zoo.Member]:
    """``count`` built members of ``bench``'s zoo, drawn at random (seeded)."""
    built = set(bench.members())
    members = [m for m in zoo.plan(bench.profile, bench.sources) if m.name in built]
    return random.Random(seed).sample(members, min(count, len(members)))


def check_member(bench: Bench, member: zoo.Member) -> Check:
    """Retrain ``member`` from scratch in a scratch folder and compare its weights."""
    recorded = nets.member_meta(bench.zoo_dir / member.name)
    with tempfile.TemporaryDirectory(prefix="zoosel-verify-") as tmp:
        scratch = Path(tmp)
        (scratch / "zoo").mkdir()
        (scratch / "data").symlink_to((bench.root / "data").resolve(), target_is_directory=True)
        if member.depends_on is not None:
            (scratch / "zoo" / member.depends_on).symlink_to(
                (bench.zoo_dir / member.depends_on).resolve(), target_is_directory=True)
        meta = zoo.build_member(scratch, bench.profile, member, bench.device)
        if member.init == "multibn":  # one job trains every Multi-BN member
            meta = nets.member_meta(scratch / "zoo" / member.name)
    same = meta["weights_sha256"] == recorded.get("weights_sha256")
    detail = (f"weights {'identical' if same else 'differ'}; source accuracy "
              f"{meta['source_accuracy']:.3f} (recorded {recorded.get('source_accuracy')})")
    if not same and recorded.get("device", "cpu") != bench.device:
        detail += f"; recorded on {recorded.get('device')}, redone on {bench.device}"
    return Check("member", member.name, same, detail)


def check_run(bench: Bench, record: dict, member_dir: Path) -> Check:
    """Redo one fine-tuning run and compare its accuracies with ``record``."""
    run = groundtruth.Run(record["member"], record["task"], record["regime"], record["lr"],
                          record["seed"])
    new = groundtruth.finetune(bench.root, bench.profile, run, member_dir, bench.device)
    same_device = record.get("device", "cpu") == bench.device
    gaps = [abs(new[k] - record[k]) for k in ("val_accuracy", "test_accuracy")]
    ok = max(gaps) == 0 if same_device else max(gaps) <= TOLERANCE_OTHER_DEVICE
    name = f"{run.member} {run.task} {run.regime} lr {run.lr:g} seed {run.seed}"
    detail = (f"test accuracy {new['test_accuracy']:.4f} (recorded "
              f"{record['test_accuracy']:.4f}), validation {new['val_accuracy']:.4f} "
              f"(recorded {record['val_accuracy']:.4f})")
    if not same_device:
        detail += (f"; recorded on {record.get('device')}, redone on {bench.device}: "
                   f"within {TOLERANCE_OTHER_DEVICE:g} accepted")
    return Check("run", name, ok, detail)


def verify(bench: Bench, runs: int = 20, members: int = 1, seed: int = 0,
           names: Sequence[str] = ()) -> list[Check]:
    """Redo ``members`` zoo members (or those in ``names``) and ``runs`` fine-tuning runs,
    drawn at random (seeded) from ``bench``'s current work; one :class:`Check` each."""
    with serial():  # as the build's workers
        checks = []
        built = bench.members()
        unknown = [n for n in names if n not in built]
        if names and (bench.models or unknown):
            raise UsageError(f"no built zoo member {', '.join(unknown or names)} in "
                             f"{bench.root}; `zoosel bench status` lists the build.")
        if not bench.models:
            chosen = ([m for m in zoo.plan(bench.profile, bench.sources) if m.name in names]
                      if names else sample_members(bench, members, seed))
            checks += [check_member(bench, m) for m in chosen]
        records = [r for r in bench.store().records() if r["member"] in built]
        picked = random.Random(seed).sample(records, min(runs, len(records)))
        checks += [check_run(bench, r, built[r["member"]]) for r in picked]
        return checks
