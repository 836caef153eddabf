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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zoosel.bench import nets
from zoosel.bench.data import BenchData, Split
from zoosel.bench.profiles import Profile
from zoosel.bench.train import Schedule, accuracy, fit

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


def plan(profile: Profile) -> list[Member]:
    """The members of ``profile``'s zoo, in build order (dependencies first)."""
    sources = list(profile.sources or ())
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


def union(data: BenchData, domains: list[str], split: str) -> tuple[Split, np.ndarray]:
    """All source domains' ``split`` together: labels offset per domain, and the domain of
    every image."""
    parts = [data.source(d, split) for d in domains]
    offset, labels, classes, which = 0, [], [], []
    for i, (d, part) in enumerate(zip(domains, parts, strict=True)):
        labels.append(part.labels + offset)
        classes += [f"{d}/{c}" for c in part.classes]
        which.append(np.full(len(part.labels), i))
        offset += len(part.classes)
    merged = Split(np.concatenate([p.images for p in parts]), np.concatenate(labels),
                   tuple(classes))
    return merged, np.concatenate(which)


def build_member(root: Path, profile: Profile, member: Member) -> dict[str, Any]:
    """Train ``member`` (all Multi-BN members at once) and save it; returns its metadata."""
    import torch

    data = BenchData(root, profile)
    zoo = root / "zoo"
    arch = nets.get_arch(member.arch)
    sources = list(profile.sources or ())
    seed = 0
    if member.init == "multibn":
        return _build_multibn(root, profile, sources)
    optimizer, factor, decay = arch.source_optimizer
    if member.source == "all":
        train, _ = union(data, sources, "train")
        test, _ = union(data, sources, "test")
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
    meta = {
        "name": member.name, "arch": member.arch, "timm": arch.timm_name,
        "source": member.source, "init": member.init,
        "source_accuracy": accuracy(model, test.images, test.labels),
        "train_seconds": seconds, "epochs": schedule.epochs, "lr": schedule.lr,
        "num_params": int(sum(p.numel() for p in model.parameters())),
    }
    nets.save(model, zoo / member.name, arch, train.classes, meta)
    return meta


def _build_multibn(root: Path, profile: Profile, sources: list[str]) -> dict[str, Any]:
    """Train the Multi-BN network on every source and save one member per domain."""
    data = BenchData(root, profile)
    arch = nets.get_arch("resnet")
    train, domains = union(data, sources, "train")
    sizes = {d: len(data.source(d, "train").classes) for d in sources}
    offsets = np.cumsum([0] + [sizes[d] for d in sources])[:-1]
    local = train.labels - offsets[domains]
    model = nets.create(arch, sizes[sources[0]], profile.size, seed=0)
    multi = nets.MultiBN(model, sizes)
    schedule = Schedule(profile.multibn_epochs, profile.source_lr, batch_size=64, augment=True)
    seconds = fit(model, train.images, local, schedule, seed=0, parameters=multi.parameters(),
                  before_step=lambda d: multi.use(sources[d]), domains=domains)
    metas = {}
    for d in sources:
        member = copy.deepcopy(multi.use(d)).eval()
        test = data.source(d, "test")
        meta = {
            "name": f"multibn-{d}", "arch": "resnet", "timm": arch.timm_name, "source": d,
            "init": "multibn", "source_accuracy": accuracy(member, test.images, test.labels),
            "train_seconds": seconds / len(sources), "epochs": schedule.epochs,
            "lr": schedule.lr, "num_params": int(sum(p.numel() for p in member.parameters())),
        }
        nets.save(member, root / "zoo" / f"multibn-{d}", arch, data.source(d, "train").classes,
                  meta)
        metas[d] = meta
    return metas[sources[0]]
