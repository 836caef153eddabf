"""The benchmark zoo's networks: small timm architectures, Multi-BN, Hub-layout checkpoints.

Every zoo member is a plain timm model saved the way ``timm`` pushes to the Hub
(``config.json`` with ``model_args`` and ``pretrained_cfg``, ``model.safetensors``), so
``zoosel select --model local:DIR`` loads it like any other checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoosel.errors import UnknownNameError

if TYPE_CHECKING:
    import numpy as np
    import torch

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
MEMBER_FILE = "zoo.json"
"""Per-member metadata next to the weights: architecture, source domain, init, accuracy."""


@dataclass(frozen=True)
class SourceRecipe:
    """An architecture's source training relative to the profile's schedule."""

    optimizer: str = "sgd"
    lr_factor: float = 1.0
    """Factor on the profile's ``source_lr``."""
    weight_decay: float = 1e-4
    epochs_factor: int = 1
    """Factor on the profile's source, generalist and init epochs."""
    decay: str = "step"
    warmup: float = 0.0


@dataclass(frozen=True)
class FinetuneRecipe:
    """How an architecture is fine-tuned when the profile gives each its own recipe
    (``Profile.finetune_recipes``); otherwise every member gets the paper's SGD."""

    optimizer: str = "sgd"
    lr_factor: float = 1.0
    """Factor on each learning rate of the profile's grid."""
    weight_decay: float = 1e-4
    decay: str = "step"
    warmup: float = 0.0


# AdamW at a tenth of the SGD grid (1e-3 to 1e-4), decoupled weight decay, warm-up and
# cosine decay: the usual fine-tuning of networks without batch norm, which SGD at the
# paper's rates leaves far behind the ResNets.
ADAMW_FINETUNE = FinetuneRecipe("adamw", 0.1, 0.05, decay="cosine", warmup=0.1)


@dataclass(frozen=True)
class Arch:
    """A small timm architecture: registry name plus the arguments that shrink it."""

    key: str
    timm_name: str
    args: Mapping[str, Any] = field(default_factory=dict)
    kind: str = "cnn"
    source: SourceRecipe = field(default_factory=SourceRecipe)
    """How its source training differs from the profile's (SGD) one."""
    finetune: FinetuneRecipe = field(default_factory=FinetuneRecipe)
    """Its fine-tuning recipe, used when the profile asks for per-architecture recipes."""


ARCHS: dict[str, Arch] = {
    a.key: a
    for a in (
        Arch("resnet", "resnet18", {"layers": [1, 1, 1, 1], "channels": [16, 32, 64, 128]}),
        # 3x3 depthwise kernels (7x7 ones see mostly padding on 8x8 maps), layer scale
        # starting at 1, AdamW at 1e-3 with warm-up and cosine decay over 3x the epochs:
        # from scratch on small data, the defaults (or SGD, or AdamW at 2e-3 with steps)
        # leave most source domains near chance.
        Arch("convnext", "convnext_atto", {"dims": [24, 48, 96, 192], "depths": [1, 1, 2, 1],
                                           "kernel_sizes": 3, "ls_init_value": 1.0},
             kind="convnext",
             source=SourceRecipe("adamw", 0.02, 0.05, epochs_factor=3, decay="cosine",
                                 warmup=0.05),
             finetune=ADAMW_FINETUNE),
        # A third family: a 4-block ViT on 4x4 patches (64 tokens at 32 px, about the
        # ResNet's parameter count), trained like the ConvNeXt.
        Arch("vit", "vit_tiny_patch16_224", {"img_size": 32, "patch_size": 4,
                                             "embed_dim": 96, "depth": 4, "num_heads": 3,
                                             "mlp_ratio": 2.0},
             kind="vit",
             source=SourceRecipe("adamw", 0.02, 0.05, epochs_factor=3, decay="cosine",
                                 warmup=0.05),
             finetune=ADAMW_FINETUNE),
    )
}


def get_arch(key: str) -> Arch:
    """The architecture named ``key``."""
    if key not in ARCHS:
        raise UnknownNameError("architecture", key, sorted(ARCHS))
    return ARCHS[key]


def create(arch: Arch, num_classes: int, size: int, seed: int) -> torch.nn.Module:
    """A freshly initialised ``arch`` (seeded) for ``size`` x ``size`` inputs."""
    import timm
    import torch

    torch.manual_seed(seed)
    model = timm.create_model(arch.timm_name, pretrained=False, num_classes=num_classes,
                              **arch.args)
    classifier = model.pretrained_cfg.get("classifier", "fc")
    model.pretrained_cfg = {
        "architecture": arch.timm_name, "input_size": (3, size, size),
        "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "center",
        "mean": MEAN, "std": STD, "num_classes": num_classes, "pool_size": (1, 1),
        "first_conv": model.pretrained_cfg.get("first_conv", "conv1"), "classifier": classifier,
    }
    return model


def load(path: str | Path, num_classes: int | None = None) -> torch.nn.Module:
    """A zoo member from its folder; ``num_classes`` replaces the head with a new one."""
    import timm

    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    return timm.create_model(f"local-dir:{Path(path).resolve()}", pretrained=True, **kwargs)


def save(model: torch.nn.Module, path: str | Path, arch: Arch, classes: Sequence[str],
         meta: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``model`` in Hub layout plus a model card and ``zoo.json`` (``meta`` and the
    weights' SHA-256); returns what ``zoo.json`` holds."""
    from timm.models import save_for_hf

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    model.to("cpu")
    save_for_hf(model, str(out), model_args=dict(arch.args),
                model_config={"label_names": list(classes)}, safe_serialization=True)
    meta = {**meta, "weights_sha256": weights_digest(out)}
    (out / MEMBER_FILE).write_text(json.dumps(dict(meta), indent=1, sort_keys=True) + "\n")
    lines = ["---", "library_name: timm", "tags:", "- image-classification", "- timm",
             "- zoosel-bench", "license: apache-2.0", "---", "",
             f"# {out.name}", "", f"A zoosel benchmark zoo member: `{arch.timm_name}` "
             f"({json.dumps(dict(arch.args))}) trained on {meta.get('source', '?')} "
             f"({meta.get('init', 'scratch')} initialisation).", ""]
    (out / "README.md").write_text("\n".join(lines))
    return meta


def weights_digest(path: str | Path) -> str:
    """SHA-256 of a member's ``model.safetensors``: what its ground truth and scores are of."""
    import hashlib

    digest = hashlib.sha256()
    with (Path(path) / "model.safetensors").open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def member_meta(path: str | Path) -> dict[str, Any]:
    """The ``zoo.json`` of a member folder ({} when there is none)."""
    file = Path(path) / MEMBER_FILE
    return json.loads(file.read_text()) if file.is_file() else {}


def to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) images as the normalised float (N, 3, H, W) batch timm expects.

    The same as timm's evaluation transform for these models (resize to the input size,
    a crop of 1.0, ImageNet mean and std), so scores and fine-tuning see the same input.
    """
    import torch

    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std).contiguous()


def classifier_name(model: torch.nn.Module) -> str:
    """Attribute path of the model's classification layer (``fc``, ``head.fc``)."""
    return str(model.pretrained_cfg.get("classifier", "fc"))


def set_classifier(model: torch.nn.Module, layer: torch.nn.Module) -> None:
    """Put ``layer`` where the model's classifier lives."""
    parent_name, _, leaf = classifier_name(model).rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, leaf, layer)
    model.num_classes = getattr(layer, "out_features", 0)
    model.pretrained_cfg = {**model.pretrained_cfg, "num_classes": model.num_classes}


class MultiBN:
    """One network whose batch-norm layers (scale, bias, statistics) and head are per domain.

    The convolutions are shared; :meth:`use` swaps one domain's batch-norm parameters and
    head into the network, so a training step on a batch of that domain updates the
    shared weights and that domain's own parameters only.
    """

    def __init__(self, model: torch.nn.Module, heads: Mapping[str, int]) -> None:
        import torch

        self.model = model
        self.bns = [m for m in model.modules()
                    if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        if not self.bns:
            raise ValueError("Multi-BN needs a network with batch-norm layers")
        features = model.num_features
        self.domains: dict[str, dict[str, Any]] = {}
        for domain, classes in heads.items():
            self.domains[domain] = {
                "bn": [(torch.nn.Parameter(bn.weight.detach().clone()),
                        torch.nn.Parameter(bn.bias.detach().clone()),
                        bn.running_mean.clone(), bn.running_var.clone(),
                        bn.num_batches_tracked.clone()) for bn in self.bns],
                "head": torch.nn.Linear(features, classes).to(self.bns[0].weight.device),
            }
        self.current: str | None = None

    def parameters(self) -> list[torch.nn.Parameter]:
        """Every trainable parameter once: shared weights, all domains' BN and heads."""
        shared = [p for m in self.model.modules() if m not in self.bns
                  for p in m.parameters(recurse=False)]
        head = dict(self.model.named_modules()).get(classifier_name(self.model))
        head_ids = {id(p) for p in head.parameters()} if head is not None else set()
        params = [p for p in shared if id(p) not in head_ids]
        for state in self.domains.values():
            params += [t for layer in state["bn"] for t in layer[:2]]
            params += list(state["head"].parameters())
        return params

    def use(self, domain: str) -> torch.nn.Module:
        """Swap ``domain``'s batch norm and head in; returns the network."""
        if domain != self.current:
            state = self.domains[domain]
            for bn, (weight, bias, mean, var, count) in zip(self.bns, state["bn"], strict=True):
                bn.weight, bn.bias = weight, bias
                bn.running_mean, bn.running_var, bn.num_batches_tracked = mean, var, count
            set_classifier(self.model, state["head"])
            self.current = domain
        return self.model
