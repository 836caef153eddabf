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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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


def is_built(zoo: Path, name: str) -> bool:
    """Whether member ``name`` has been written completely."""
    return (zoo / name / nets.MEMBER_FILE).is_file()


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
        "num_params": int(sum(p.numel() for p in model.parameters())),
    }


def build_member(root: Path, profile: Profile, member: Member) -> dict[str, Any]:
    """Train ``member`` (all Multi-BN members at once) and save it; returns its metadata."""
    import torch

    data = BenchData(root, profile)
    if member.init == "multibn":
        return _build_multibn(root, data)
    zoo = root / "zoo"
    arch = nets.get_arch(member.arch)
    seed = 0
    optimizer, factor, decay = arch.source_optimizer
    if member.source == "all":
        train, _ = union(_splits(data, "train"))
        test, _ = union(_splits(data, "test"))
        epochs, lr = profile.generalist_epochs, profile.source_lr
    else:
        train, test = data.source(member.source, "train"), data.source(member.source, "test")
        epochs = profile.init_epochs if member.init == "generalist" else profile.source_epochs
        lr = profile.source_lr / 5 if member.init == "generalist" else profile.source_lr
    schedule = Schedule(epochs, lr * factor, batch_size=64, augment=True, optimizer=optimizer,
                        weight_decay=decay)
    if member.init == "generalist":
        torch.manual_seed(seed)
        model = nets.load(zoo / str(member.depends_on), num_classes=len(train.classes))
    else:
        model = nets.create(arch, len(train.classes), profile.size, seed)
    seconds = fit(model, train.images, train.labels, schedule, seed=seed)
    meta = _meta(member, model, test, seconds, schedule)
    nets.save(model, zoo / member.name, arch, train.classes, meta)
    return meta


def _build_multibn(root: Path, data: BenchData) -> dict[str, Any]:
    """Train the Multi-BN network on every source and save one member per domain."""
    profile = data.profile
    arch = nets.get_arch("resnet")
    parts = _splits(data, "train")
    train, domains = union(parts)
    local = np.concatenate([p.labels for p in parts.values()])  # labels within each domain
    sizes = {d: len(p.classes) for d, p in parts.items()}
    sources = list(parts)
    model = nets.create(arch, sizes[sources[0]], profile.size, seed=0)
    multi = nets.MultiBN(model, sizes)
    schedule = Schedule(profile.multibn_epochs, profile.source_lr, batch_size=64, augment=True)
    seconds = fit(model, train.images, local, schedule, seed=0, parameters=multi.parameters(),
                  before_step=lambda d: multi.use(sources[d]), domains=domains)
    metas = {}
    for d in sources:
        member = Member(f"multibn-{d}", "resnet", d, "multibn")
        network = copy.deepcopy(multi.use(d)).eval()
        metas[d] = _meta(member, network, data.source(d, "test"), seconds / len(sources),
                         schedule)
        nets.save(network, root / "zoo" / member.name, arch, parts[d].classes, metas[d])
    return metas[sources[0]]
