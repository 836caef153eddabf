"""Building the benchmark zoo, as in the paper.

- single-domain models: every architecture x every source domain, from scratch;
- a generalist per ``generalist_archs`` architecture, trained on the union of the
  sources (the paper's ImageNet model and the baseline of the gain metric), and for
  each source domain a variant initialised from it;
- a Multi-BN network (shared convolutions, per-domain batch norm and head) whose
  domain-specific parameter sets are separate zoo members.

Each member is a job that writes its folder; a member whose ``zoo.json`` exists is done,
so an interrupted build resumes where it stopped.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zoosel.bench import nets
from zoosel.bench.data import BenchData, Split, concat
from zoosel.bench.profiles import Profile
from zoosel.bench.train import Schedule, accuracy, fit

if TYPE_CHECKING:
    import torch

GENERALIST = "generalist"


@dataclass(frozen=True)
class Member:
    """One zoo member to build."""

    name: str
    arch: str
    source: str
    """Source domain, ``all`` for the generalist."""
    init: str
    """``scratch``, ``generalist`` (initialised from it) or ``multibn``."""

    @property
    def depends_on(self) -> str | None:
        return f"{self.arch}-{GENERALIST}" if self.init == "generalist" else None


def plan(profile: Profile, sources: Sequence[str]) -> list[Member]:
    """The members of ``profile``'s zoo over ``sources``, in build order (dependencies
    first)."""
    members = [Member(f"{arch}-{GENERALIST}", arch, "all", "scratch")
               for arch in profile.generalist_archs]
    if profile.multibn:
        members += [Member(f"multibn-{d}", "resnet", d, "multibn") for d in sources]
    members += [Member(f"{arch}-{d}", arch, d, "scratch")
                for arch in profile.archs for d in sources]
    members += [Member(f"{arch}-{d}-from-{GENERALIST}", arch, d, "generalist")
                for arch in profile.generalist_archs for d in sources]
    return members


def source_schedule(profile: Profile, member: Member) -> Schedule:
    """How ``member`` is trained on its source data: the profile's schedule for its kind
    (generalist, from scratch, from the generalist, Multi-BN) adjusted by its
    architecture's :class:`~zoosel.bench.nets.SourceRecipe`."""
    if member.init == "multibn":
        return Schedule(profile.multibn_epochs, profile.source_lr, batch_size=64, augment=True)
    if member.source == "all":
        epochs, lr = profile.generalist_epochs, profile.source_lr
    elif member.init == "generalist":
        epochs, lr = profile.init_epochs, profile.source_lr / 5
    else:
        epochs, lr = profile.source_epochs, profile.source_lr
    how = nets.get_arch(member.arch).source
    return Schedule(epochs * how.epochs_factor, lr * how.lr_factor, batch_size=64, augment=True,
                    optimizer=how.optimizer, weight_decay=how.weight_decay, decay=how.decay,
                    warmup=how.warmup)


def recipe(profile: Profile, member: Member, zoo: Path) -> str:
    """A digest of everything that makes ``member``: architecture, schedule, data sizes and
    the weights it starts from. A member whose recorded recipe differs is out of date."""
    import hashlib

    arch = nets.get_arch(member.arch)
    parts: dict[str, Any] = {
        "member": asdict(member), "timm": arch.timm_name, "args": dict(arch.args),
        "schedule": asdict(source_schedule(profile, member)), "size": profile.size,
        "source_per_class": profile.source_per_class,
        "source_test_per_class": profile.source_test_per_class,
    }
    if member.depends_on is not None:
        parts["init_weights"] = nets.member_meta(zoo / member.depends_on).get("weights_sha256")
    text = json.dumps(parts, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def is_built(zoo: Path, name: str) -> bool:
    """Whether member ``name`` has been written completely."""
    return (zoo / name / nets.MEMBER_FILE).is_file()


def to_build(zoo: Path, profile: Profile, planned: Sequence[Member]) -> list[Member]:
    """The members of ``planned`` not built yet or built with another recipe than the
    current code's, plus every member initialised from one of those."""
    todo: list[Member] = []
    for member in planned:
        meta = nets.member_meta(zoo / member.name)
        if (not meta or meta.get("recipe") != recipe(profile, member, zoo)
                or any(m.name == member.depends_on for m in todo)):
            todo.append(member)
    return todo


def union(parts: Mapping[str, Split]) -> tuple[Split, np.ndarray]:
    """Source domains' splits (by domain) together, classes named ``domain/class``, and the
    index of every image's domain."""
    merged = concat(list(parts.values()), [f"{d}/" for d in parts])
    which = np.concatenate([np.full(len(p.labels), i) for i, p in enumerate(parts.values())])
    return merged, which


def _splits(data: BenchData, split: str) -> dict[str, Split]:
    return {d: data.source(d, split) for d in data.source_names()}


def _meta(member: Member, model: torch.nn.Module, test: Split, seconds: float,
          schedule: Schedule) -> dict[str, Any]:
    return {
        "name": member.name, "arch": member.arch, "timm": nets.get_arch(member.arch).timm_name,
        "source": member.source, "init": member.init,
        "source_accuracy": accuracy(model, test.images, test.labels),
        "train_seconds": seconds, "epochs": schedule.epochs, "lr": schedule.lr,
        "device": str(next(model.parameters()).device.type),
        "num_params": int(sum(p.numel() for p in model.parameters())),
    }


def build_member(root: Path, profile: Profile, member: Member,
                 device: str = "cpu") -> dict[str, Any]:
    """Train ``member`` (all Multi-BN members at once) on ``device`` and save it; returns its
    metadata."""
    import torch

    data = BenchData(root, profile)
    if member.init == "multibn":
        return _build_multibn(root, data, device)
    zoo = root / "zoo"
    arch = nets.get_arch(member.arch)
    seed = 0
    if member.source == "all":
        train, _ = union(_splits(data, "train"))
        test, _ = union(_splits(data, "test"))
    else:
        train, test = data.source(member.source, "train"), data.source(member.source, "test")
    schedule = source_schedule(profile, member)
    if member.init == "generalist":
        torch.manual_seed(seed)
        model = nets.load(zoo / str(member.depends_on), num_classes=len(train.classes))
    else:
        model = nets.create(arch, len(train.classes), profile.size, seed)
    seconds = fit(model, train.images, train.labels, schedule, seed=seed, device=device)
    meta = _meta(member, model, test, seconds, schedule)
    meta["recipe"] = recipe(profile, member, zoo)
    return nets.save(model, zoo / member.name, arch, train.classes, meta)


def _build_multibn(root: Path, data: BenchData, device: str = "cpu") -> dict[str, Any]:
    """Train the Multi-BN network on every source and save one member per domain."""
    profile = data.profile
    arch = nets.get_arch("resnet")
    parts = _splits(data, "train")
    train, domains = union(parts)
    local = np.concatenate([p.labels for p in parts.values()])  # labels within each domain
    sizes = {d: len(p.classes) for d, p in parts.items()}
    sources = list(parts)
    model = nets.create(arch, sizes[sources[0]], profile.size, seed=0).to(device)
    multi = nets.MultiBN(model, sizes)
    schedule = source_schedule(profile, Member(f"multibn-{sources[0]}", "resnet", sources[0],
                                               "multibn"))
    seconds = fit(model, train.images, local, schedule, seed=0, parameters=multi.parameters(),
                  before_step=lambda d: multi.use(sources[d]), domains=domains, device=device)
    metas = {}
    for d in sources:
        member = Member(f"multibn-{d}", "resnet", d, "multibn")
        network = copy.deepcopy(multi.use(d)).eval()
        meta = _meta(member, network, data.source(d, "test"), seconds / len(sources), schedule)
        meta["recipe"] = recipe(profile, member, root / "zoo")
        metas[d] = nets.save(network, root / "zoo" / member.name, arch, parts[d].classes, meta)
    return metas[sources[0]]
