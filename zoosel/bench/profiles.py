"""Benchmark profiles: how big the zoo, the tasks and the training runs are.

``standard`` is the benchmark whose results are committed under ``benchmarks/``;
``full`` is the larger build (at most a few hours on a 2-core CPU); ``tiny`` runs every
step in a couple of minutes and is what the tests use; ``diverse`` adds a third
architecture family (a small ViT), fine-tunes each family with its own recipe, keeps
the few-shot regimes only and fine-tunes on 32 target tasks (the shipped 8,
``domains.MORE_TARGET_TASKS``, ``domains.EXTRA_TARGET_TASKS`` and
``domains.FURTHER_TARGET_TASKS``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from zoosel.errors import UnknownNameError, UsageError

LRS = (0.01, 0.005, 0.001)
"""The paper's learning-rate grid; one is chosen per (model, task, regime) on validation."""


@dataclass(frozen=True)
class Profile:
    """Every size and schedule of one benchmark build."""

    name: str
    size: int = 32
    sources: tuple[str, ...] | None = None
    """Source domains (None: all shipped ones)."""
    targets: tuple[str, ...] | None = None
    """Target tasks (None: all shipped ones)."""
    archs: tuple[str, ...] = ("resnet", "convnext")
    generalist_archs: tuple[str, ...] = ("resnet",)
    """Architectures with a generalist trained on the union of the sources, and a variant
    initialised from it for every source domain."""
    multibn: bool = True
    source_per_class: int = 300
    source_test_per_class: int = 50
    source_epochs: int = 12
    source_lr: float = 0.05
    generalist_epochs: int = 6
    init_epochs: int = 6
    """Epochs of a single-domain model initialised from the generalist."""
    multibn_epochs: int = 6
    pool_per_class: int = 40
    """Training pool of a target: the ``full`` regime trains on all of it."""
    val_per_class: int = 15
    test_per_class: int = 50
    regimes: Mapping[str, int | None] = field(
        default_factory=lambda: {"5-shot": 5, "20-shot": 20, "full": None})
    epochs: Mapping[str, int] = field(
        default_factory=lambda: {"5-shot": 30, "20-shot": 20, "full": 12})
    lrs: tuple[float, ...] = LRS
    batch_size: int = 32
    noise_seeds: int = 3
    """Seeds (the first is the main run) on the noise subset."""
    noise_targets: int = 2
    """How many targets (the first ones) get the extra seeds, in the few-shot regimes."""
    score_per_class: int | None = 25
    ablation: bool = True
    """Also score the full regime on its whole training split (no 25-per-class sample)."""
    scorers: tuple[str, ...] = ("all",)
    bootstrap: int = 2000
    workers: int = 2
    finetune_recipes: bool = False
    """Fine-tune each architecture with its own recipe (``nets.Arch.finetune``: AdamW for
    ConvNeXt and ViT) instead of the paper's SGD for every member."""

    def key(self) -> dict[str, Any]:
        """Everything that changes the results, as JSON."""
        key = json.loads(json.dumps(asdict(self)))
        if not self.finetune_recipes:  # builds made before the option keep their key
            del key["finetune_recipes"]
        return key


DIVERSE_TARGETS = (
    "beaded_glyphs", "outline_shapes", "oriented_noise", "marker_count", "spectral_noise",
    "automata", "sprites", "weaves",
    "scene_relations", "palette_stripes", "dashed_curves", "rotation_orders", "barcodes",
    "segment_digits", "clock_hands", "cell_counts",
    "window_patterns", "blob_counts", "dot_shapes", "tally_marks", "bar_ratios", "truchet_tiles",
    "angle_sizes", "gradient_directions",
    "materials", "dot_lattices", "object_hues", "stroke_widths", "blur_kernels",
    "region_layouts", "object_positions", "grey_levels",
)
"""The ``diverse`` build's targets: ``domains.TARGET_TASKS``, ``MORE_TARGET_TASKS``,
``EXTRA_TARGET_TASKS``, then ``FURTHER_TARGET_TASKS``."""

PROFILES: dict[str, Profile] = {
    "tiny": Profile(
        name="tiny", sources=("glyphs", "shapes"), targets=("beaded_glyphs", "sprites"),
        archs=("resnet",),
        source_per_class=40, source_test_per_class=10, source_epochs=2, generalist_epochs=2,
        init_epochs=1, multibn_epochs=1, pool_per_class=10, val_per_class=4,
        test_per_class=6, regimes={"5-shot": 5, "full": None},
        epochs={"5-shot": 2, "full": 2}, lrs=(0.01, 0.001), noise_seeds=2, noise_targets=1,
        scorers=("lfc", "logme", "leep", "linft", "domain_sim", "random"),
        bootstrap=200, workers=1,
    ),
    "standard": Profile(name="standard"),
    "full": Profile(
        name="full", size=32, source_per_class=500, source_epochs=20, generalist_epochs=10,
        init_epochs=10, multibn_epochs=10, pool_per_class=60, test_per_class=100,
        regimes={"5-shot": 5, "10-shot": 10, "20-shot": 20, "full": None},
        epochs={"5-shot": 30, "10-shot": 30, "20-shot": 25, "full": 15},
        generalist_archs=("resnet", "convnext"), noise_targets=4,
    ),
    # Three families, each fine-tuned with its own recipe, so that no family wins by the
    # protocol alone: 8 ResNet, 8 ConvNeXt and 8 ViT members from scratch, the ResNet
    # generalist and its 8 variants, 8 Multi-BN members (41). Only the few-shot regimes,
    # where a selector's choice matters most (the full regime stays in ``standard``), and
    # the two ends of the learning-rate grid: the ViTs cost about 4x a ConvNeXt per epoch
    # on a CPU. 32 targets (8 gave bootstrap intervals too wide to separate selectors from
    # the dataset-blind baseline), the original 8 first so that the noise subset stays
    # the same; the fine-tuning, about four times that of 8 targets, dominates the build.
    "diverse": Profile(name="diverse", archs=("resnet", "convnext", "vit"),
                       targets=DIVERSE_TARGETS,
                       finetune_recipes=True, regimes={"5-shot": 5, "20-shot": 20},
                       epochs={"5-shot": 30, "20-shot": 20}, lrs=(0.01, 0.001),
                       noise_seeds=2),
}


def get_profile(name: str) -> Profile:
    """The built-in profile ``name``."""
    if name not in PROFILES:
        raise UnknownNameError("benchmark profile", name, sorted(PROFILES))
    return PROFILES[name]




def load_config(path: str | Path) -> dict[str, Any]:
    """A benchmark config file (JSON): ``profile``, overrides, ``models`` and ``targets``.

    ``models`` lists zoo members given as ``SOURCE:REF`` (skipping the zoo build);
    ``targets`` lists image folders or Hub dataset ids used as target tasks next to (or,
    with ``"builtin_targets": false``, instead of) the generated ones.
    """
    file = Path(path)
    try:
        config = json.loads(file.read_text())
    except FileNotFoundError as exc:
        raise UsageError(f"benchmark config {path} does not exist.") from exc
    except json.JSONDecodeError as exc:
        raise UsageError(f"benchmark config {path} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise UsageError(f"benchmark config {path} must hold a JSON object.")
    known = set(Profile.__dataclass_fields__) | {"profile", "models", "targets",
                                                  "builtin_targets", "generalist"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise UsageError(f"benchmark config {path}: unknown keys {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(known))}.")
    return config


def resolve(name: str = "standard", overrides: Mapping[str, Any] | None = None) -> Profile:
    """Profile ``name`` with ``overrides`` (config-file keys that are profile fields)."""
    profile = get_profile(name)
    fields = {k: v for k, v in (overrides or {}).items() if k in Profile.__dataclass_fields__
              and k != "name"}
    for key in ("sources", "targets", "archs", "generalist_archs", "lrs", "scorers"):
        if fields.get(key) is not None:
            fields[key] = tuple(fields[key])
    return replace(profile, **fields)
