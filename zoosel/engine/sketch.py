"""Gradient sketches: randomly projected per-sample gradients, without per-sample gradients.

The empirical neural tangent kernel of chosen layers, Theta_ij = <J_i, J_j>, is what LGC
and ``linft_grad`` correlate with the labels (Deshpande et al. 2021, arXiv 2102.00084,
section 3). This module returns, for each sample, a k-dimensional vector s_i with
E[s_i . s_j] = Theta_ij, streaming batch by batch and never forming a per-sample gradient.

Per-sample gradient of a layer
    A linear layer y_t = W a_t + b applied at positions/tokens t has the per-sample
    gradient G = sum_t g_t [a_t; 1]^T (d_out x (d_in + 1): the bias is the last column),
    g_t = d out / d y_t the back-propagated signal. A convolution is the same with a_t the
    input patch (c_in/groups x kernel) seen by output position t. The model runs in eval
    mode, so each sample's scalar output depends only on its own input, and ONE backward
    of sum_i out_i gives every sample its own g.

Projection (Kronecker blocks)
    k is split across the chosen layers (see below). A layer with budget k_l uses R
    independent blocks, each a Kronecker product R1_r (b1 x d_out) (x) R2_r (b2 x n2),
    n2 = d_in + 1 (times the kernel size for convolutions), R = k_l // (b1 b2),
    b1 = min(block, d_out), b2 = min(block, n2), and

        s = concat_r vec(R1_r G R2_r^T) = concat_r vec(sum_t (R1_r g_t)(R2_r [a_t; 1])^T)

    computed from the two projected factors. R1 entries are N(0, 1 / (R b1)) and R2
    entries N(0, 1 / b2), so E[s(G) . s(H)] = <G, H>_F. Because the R blocks are
    independent, the variance of the kernel estimate falls like 1 / R, i.e. like 1 / k
    (the relative error like 1 / sqrt(k)), whatever the block size. The block size
    trades cost for accuracy: projecting costs O(T (d_out + n2) k / block) per sample,
    and for nearly rank-one gradients (one token, or a global-pooled CNN with a linear
    head) the error is about sqrt(block + 1) times that of a dense Gaussian projection
    of the same k. A single Kronecker product (``block = 0``: b1 b2 ~ k_l, the cheapest)
    has an error that falls only like k^(-1/4) for such gradients. The default block of
    2 measured 2.3x (ResNet-50) and 2.8x (ViT-S) the dense error at k = 10,000, for
    about a tenth to a fifth of a forward pass (benchmarks/results/sketch.md). The
    projection matrices of a layer hold (k_l / block)(d_out + n2) floats; for very wide
    layers the block grows so that they stay under ~64 MB.
    Convolutions project their input patches by convolving the input with the R2 rows
    reshaped as filters (no unfolding). A layer whose whole gradient fits in its budget
    (d_out n2 <= k_l) uses identity matrices: its part of the sketch is the exact
    flattened gradient, weight then bias, row by row.

Several layers
    The kernel of a concatenation is the sum of the per-layer kernels, which is the
    kernel of the gradient with respect to all chosen parameters. k is split evenly
    ("water-filling"): layers whose exact gradient is smaller than an even share get it
    exactly, the rest of k is shared evenly by the others. Columns left over by the
    rounding to whole blocks are zero, so the output always has exactly k columns.

Heads (``SketchConfig.head``): the scalar per-sample output whose gradient is taken.
    * ``random`` (default): out_i = r . f(x_i), r a seeded random unit vector over the
      penultimate features f;
    * ``pretrained``: out_i = log softmax(z(x_i))[argmax z(x_i)], the log-probability of
      the source head's own top class (z the source logits); models without a source
      head are refused;
    * ``label``: out_i = W[y_i] . f(x_i), W a seeded random C x D matrix with unit rows:
      a random new head read at each sample's target label.

Memory: O(B k + model) plus the layers' activations (kept by autograd anyway) and the
projected factors, processed in chunks of at most ~64 MB (~200 MB with temporaries):
independent of the layers' parameter counts. Parameters outside the chosen layers stop
requiring gradients (restored by :meth:`GradientSketcher.close`), so the backward pass
stops at the first chosen layer and computes no weight gradient at all. Linear layers
skip the positions where the back-propagated signal is zero for the whole batch (in the
last block of a ViT whose head reads the CLS token, the MLP sees a signal at one token).
"""

from __future__ import annotations

import difflib
import fnmatch
import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zoosel.errors import CandidateError, UsageError

if TYPE_CHECKING:
    import torch

    from zoosel.types import LoadedModel

__all__ = [
    "HEADS",
    "GradientSketcher",
    "SketchConfig",
    "SketchLayerError",
    "default_layers",
    "resolve_layers",
]

HEADS = ("random", "pretrained", "label")
_CHUNK_FLOATS = 1 << 24  # per chunk of projected factors: ~64 MB of float32
_MATRIX_FLOATS = 1 << 24  # projection matrices of one layer: ~64 MB of float32
_CLASSIFIER_NAMES = {"fc", "head", "classifier", "last_linear", "logits", "cls"}


class SketchLayerError(CandidateError, ValueError):
    """The chosen layers cannot be found in, or sketched for, this model."""


@dataclass(frozen=True)
class SketchConfig:
    """Options of a gradient sketch.

    :param k: output dimension (columns of the sketch).
    :param layers: module names or fnmatch patterns (``"blocks.11.*"``); a pattern that
        names a container selects every linear / conv layer inside it. ``()`` selects
        :func:`default_layers`.
    :param head: ``"random"``, ``"pretrained"`` or ``"label"``: the scalar output whose
        gradient is sketched (see the module documentation).
    :param seed: seed of the projections and of the random heads.
    :param block: side of each Kronecker block of the projection; ``0`` uses a single
        Kronecker product per layer (cheapest, largest error).
    """

    k: int = 10_000
    layers: tuple[str, ...] = ()
    head: str = "random"
    seed: int = 0
    block: int = 2

    def __post_init__(self) -> None:
        if int(self.k) < 1:
            raise UsageError(f"the sketch dimension k must be at least 1, got {self.k}.")
        if self.head not in HEADS:
            raise UsageError(
                f"unknown sketch head {self.head!r}; choose one of {', '.join(HEADS)}."
            )
        if int(self.block) < 0:
            raise UsageError(f"the sketch block size must be >= 0, got {self.block}.")
        if isinstance(self.layers, str):
            object.__setattr__(self, "layers", (self.layers,))


# ------------------------------------------------------------------------------ layers


def _is_supported(module: torch.nn.Module) -> bool:
    import torch

    return isinstance(module, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d,
                               torch.nn.Conv3d))


def _classifier_names(module: torch.nn.Module) -> set[str]:
    """Names of the source classification layer(s): excluded from the default layers."""
    import torch

    named = list(module.named_modules())
    get_classifier = getattr(module, "get_classifier", None)
    if callable(get_classifier):  # timm
        try:
            clf = get_classifier()
        except Exception:
            clf = None
        if isinstance(clf, torch.nn.Module):
            return {n for n, m in named if m is clf or (n and _within(n, _name_of(named, clf)))}
    config = getattr(module, "config", None)  # transformers *ForImageClassification
    num_labels = getattr(config, "num_labels", None)
    if num_labels and type(module).__name__.endswith("ForImageClassification"):
        last = [n for n, m in named
                if isinstance(m, torch.nn.Linear) and m.out_features == num_labels]
        return {last[-1]} if last else set()
    # a plain module: a final linear layer with a classifier's usual name
    last = [(n, m) for n, m in named if _is_supported(m)]
    if last and isinstance(last[-1][1], torch.nn.Linear) and (
        last[-1][0].rsplit(".", 1)[-1] in _CLASSIFIER_NAMES
    ):
        return {last[-1][0]}
    return set()


def _name_of(named: list[tuple[str, Any]], target: Any) -> str | None:
    return next((n for n, m in named if m is target), None)


def _within(name: str, parent: str | None) -> bool:
    return parent is not None and parent != "" and name.startswith(parent + ".")


def default_layers(module: torch.nn.Module) -> list[str]:
    """The linear / conv layers of the last block before the classifier.

    The last supported layer (registration order) that is not the source classifier
    is located, and its block is the deepest enclosing module whose name ends in an
    index (``layer4.2``, ``blocks.11``, ``stages.3.blocks.2``, ``vit.encoder.layer.11``)
    and that holds at least two such layers; without one, the layer's parent (or the
    layer alone). The block's dense layers are returned, in registration order; grouped
    (e.g. depthwise) convolutions are left out unless nothing else remains, since their
    sketch costs more than their few parameters are worth.
    """
    excluded = _classifier_names(module)
    layers = [n for n, m in module.named_modules() if n and _is_supported(m) and n not in excluded]
    if not layers:
        raise SketchLayerError(
            f"{type(module).__name__} has no linear or convolutional layer outside its "
            "classifier: nothing to sketch."
        )
    last = layers[-1]
    parts = last.split(".")
    block = None
    for cut in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:cut])
        if parts[cut - 1].isdigit() and sum(_within(n, prefix) for n in layers) >= 2:
            block = prefix
            break
    if block is None and len(parts) > 1:
        block = ".".join(parts[:-1])
    chosen = [n for n in layers if _within(n, block)] if block else [last]
    modules = dict(module.named_modules())
    dense = [n for n in chosen if getattr(modules[n], "groups", 1) == 1]
    return dense or chosen


def resolve_layers(module: torch.nn.Module, patterns: tuple[str, ...] | list[str]) -> list[str]:
    """Names of the linear / conv layers that ``patterns`` select, in registration order.

    Each pattern is an exact module name or an fnmatch pattern; a match that is a
    container contributes every supported layer inside it. An empty ``patterns`` gives
    :func:`default_layers`.

    :raises SketchLayerError: when a pattern matches nothing, or only modules without a
        linear / conv layer; the message lists the closest layer names.
    """
    if not patterns:
        return default_layers(module)
    modules = dict(module.named_modules())
    supported = [n for n, m in modules.items() if n and _is_supported(m)]
    picked: set[str] = set()
    for pattern in patterns:
        hits = [n for n in modules if n and (n == pattern or fnmatch.fnmatchcase(n, pattern))]
        found = set()
        for name in hits:
            if _is_supported(modules[name]):
                found.add(name)
            else:
                found.update(n for n in supported if _within(n, name))
        if not found:
            what = "matches no module" if not hits else (
                f"matches {', '.join(hits[:3])}{'...' if len(hits) > 3 else ''}, which hold "
                "no linear or convolutional layer"
            )
            close = difflib.get_close_matches(pattern, supported, n=5, cutoff=0.3)
            tail = supported[-5:]
            hint = ", ".join(close or tail)
            raise SketchLayerError(
                f"sketch layer {pattern!r} {what} in {type(module).__name__}. "
                f"{'Close' if close else 'Last'} layer names: {hint}."
            )
        picked |= found
    return [n for n in supported if n in picked]


def _split_budget(k: int, sizes: list[int]) -> list[int]:
    """k split across layers: exact for those under an even share, the rest evenly."""
    alloc = [0] * len(sizes)
    remaining, open_ = k, list(range(len(sizes)))
    while open_:
        share = remaining // len(open_)
        small = [i for i in open_ if sizes[i] <= share]
        if not small:
            break
        for i in small:
            alloc[i] = sizes[i]
            remaining -= sizes[i]
        open_ = [i for i in open_ if i not in small]
    if open_:
        share, extra = divmod(remaining, len(open_))
        if share < 1:
            raise UsageError(f"k = {k} is too small to sketch {len(sizes)} layers.")
        for j, i in enumerate(open_):
            alloc[i] = share + (1 if j < extra else 0)
    return alloc


def _factor(budget: int, m: int, n: int) -> tuple[int, int]:
    """b1 <= m, b2 <= n with the largest b1 b2 <= budget, as square as possible."""
    best = (0, 0, 0)
    for b1 in range(1, min(m, budget) + 1):
        b2 = min(n, budget // b1)
        best = max(best, (b1 * b2, -abs(b1 - b2), b1))
    return best[2], best[0] // best[2]


def _generator(seed: int, *tag: int) -> torch.Generator:
    import numpy as np
    import torch

    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *tag]).generate_state(2, np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


# ---------------------------------------------------------------------- per-layer state


class _Layer:
    """One chosen layer: its projection and the tensors captured during a forward pass."""

    def __init__(self, name: str, module: torch.nn.Module, budget: int, block: int,
                 seed: int, device: str) -> None:
        import torch

        self.name, self.module = name, module
        self.is_conv = not isinstance(module, torch.nn.Linear)
        weight = module.weight
        self.dtype = torch.promote_types(weight.dtype, torch.float32)
        self.has_bias = getattr(module, "bias", None) is not None
        self.d_out = int(weight.shape[0])
        self.groups = int(getattr(module, "groups", 1))
        self.n_w = int(math.prod(weight.shape[1:]))  # c_in / groups x kernel (or d_in)
        self.n2 = self.n_w + int(self.has_bias)
        self.size = self.d_out * self.n2  # parameters of the layer
        self.calls: list[tuple[torch.Tensor, int, torch.Tensor]] = []
        self.active = False

        m, n = self.d_out, self.n2
        if m * n <= budget and m * m + n * n <= _MATRIX_FLOATS:
            self.exact, self.blocks, self.b1, self.b2 = True, 1, m, n
            r1 = torch.eye(m, dtype=self.dtype)
            r2 = torch.eye(n, dtype=self.dtype)
        else:
            self.exact = False
            if block > 0:  # the matrices hold (budget / block)(m + n) floats: cap them
                block = max(block, math.ceil(budget * (m + n) / _MATRIX_FLOATS))
            b1, b2 = min(block, m), min(block, n)
            if block == 0 or b1 * b2 > budget:  # one block filling the budget
                b1, b2 = _factor(budget, m, n)
            self.blocks, self.b1, self.b2 = max(1, budget // (b1 * b2)), b1, b2
            gen = _generator(seed, 1, zlib.crc32(name.encode()))
            rows1, rows2 = self.blocks * b1, self.blocks * b2
            r1 = torch.randn(rows1, m, generator=gen).mul_(1.0 / math.sqrt(self.blocks * b1))
            r2 = torch.randn(rows2, n, generator=gen).mul_(1.0 / math.sqrt(b2))
        self.width = self.blocks * self.b1 * self.b2
        self.r1 = r1.to(device=device, dtype=self.dtype)  # (R b1, d_out)
        r2 = r2.to(device=device, dtype=self.dtype)  # (R b2, n2)
        if self.is_conv:
            self.r2_weight = r2[:, : self.n_w].reshape(r2.shape[0], *weight.shape[1:]).contiguous()
        else:
            self.r2_weight = r2[:, : self.n_w].contiguous()
        self.r2_bias = r2[:, self.n_w].contiguous() if self.has_bias else None

    # forward hook: keep the input, hand a copy of the output downstream so that in-place
    # operations after the layer cannot change the tensor whose gradient is taken
    def hook(self, _module: Any, args: tuple[Any, ...], output: torch.Tensor) -> Any:
        if not self.active:  # forward passes outside GradientSketcher.__call__
            return None
        a = args[0]
        self.calls.append((a.detach(), a._version, output))
        return output.clone()

    def sketch(self, a: torch.Tensor, version: int, g: torch.Tensor, batch: int) -> torch.Tensor:
        """(B, width) sketch of this call's contribution to the per-sample gradients."""
        if a._version != version:
            raise SketchLayerError(
                f"the input of layer {self.name!r} was modified in place after the layer "
                "ran; its gradient cannot be sketched."
            )
        if a.shape[0] % batch or g.shape[0] != a.shape[0]:
            raise SketchLayerError(
                f"layer {self.name!r} runs on {a.shape[0]} rows for a batch of {batch}: "
                "its rows cannot be attributed to samples."
            )
        a, g = a.to(self.dtype), g.to(self.dtype)
        if self.is_conv:
            return self._conv(a, g, batch)
        return self._linear(a, g, batch)

    def _chunk(self, rows: int, positions: int) -> int:
        """Blocks projected at a time, so that the projected factors stay ~_CHUNK_FLOATS."""
        per_block = max(1, rows * (self.b1 + self.b2) * positions)
        return max(1, min(self.blocks, _CHUNK_FLOATS // per_block))

    def _linear(self, a: torch.Tensor, g: torch.Tensor, batch: int) -> torch.Tensor:
        import torch

        a = a.reshape(batch, -1, a.shape[-1])  # (B, T, d_in), rows sample-major
        g = g.reshape(batch, -1, g.shape[-1])  # (B, T, d_out)
        live = g.abs().amax(dim=(0, 2)) > 0  # positions the head depends on (e.g. CLS only)
        if not bool(live.all()):
            a, g = a[:, live], g[:, live]
        t = g.shape[1]
        out = torch.zeros(batch, self.blocks, self.b1, self.b2, dtype=self.dtype, device=g.device)
        if t == 0:
            return out.reshape(batch, self.width)
        at, gt = a.transpose(1, 2), g.transpose(1, 2)  # (B, d, T)
        b1, b2 = self.b1, self.b2
        step = self._chunk(batch, t)
        for r0 in range(0, self.blocks, step):
            r_end = min(self.blocks, r0 + step)
            q = self.r2_weight[r0 * b2:r_end * b2] @ at  # (B, nr b2, T)
            if self.r2_bias is not None:
                q = q + self.r2_bias[r0 * b2:r_end * b2, None]
            p = self.r1[r0 * b1:r_end * b1] @ gt  # (B, nr b1, T)
            nr = r_end - r0
            out[:, r0:r_end] = _contract(p.reshape(batch, nr, b1, t), q.reshape(batch, nr, b2, t))
        return out.reshape(batch, self.width)

    def _conv(self, a: torch.Tensor, g: torch.Tensor, batch: int) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        mod = self.module
        nd = a.ndim - 2
        conv = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
        padding = mod.padding
        if mod.padding_mode != "zeros":
            a = F.pad(a, mod._reversed_padding_repeated_twice, mode=mod.padding_mode)
            padding = 0
        rows, u = a.shape[0], a.shape[0] // batch
        positions = int(math.prod(g.shape[2:]))
        groups = self.groups
        cpg, opg = a.shape[1] // groups, self.d_out // groups
        b1, b2, nb = self.b1, self.b2, self.blocks
        kernel = tuple(self.r2_weight.shape[2:])
        g = g.reshape(rows, groups, opg, positions)
        r1 = self.r1.reshape(nb, b1, groups, opg)
        r2w = self.r2_weight.reshape(nb, b2, cpg, *kernel)
        r2b = self.r2_bias.reshape(nb, b2) if self.r2_bias is not None else None
        step = self._chunk(rows, positions)
        group_step = max(1, min(groups, _CHUNK_FLOATS // max(
            1, rows * step * (b1 + b2) * positions)))
        out = torch.empty(batch, nb, b1, b2, dtype=self.dtype, device=g.device)
        for r0 in range(0, nb, step):
            r_end = min(nb, r0 + step)
            nr = r_end - r0
            w = r2w[r0:r_end].reshape(nr * b2, cpg, *kernel)
            bias = r2b[r0:r_end].reshape(-1) if r2b is not None else None
            acc = None
            for g0 in range(0, groups, group_step):
                ng = min(group_step, groups - g0)
                a_c = a[:, g0 * cpg:(g0 + ng) * cpg] if groups > 1 else a
                w_c = w.repeat(ng, *([1] * (nd + 1))) if ng > 1 else w
                b_c = bias.repeat(ng) if bias is not None and ng > 1 else bias
                q = conv(a_c, w_c, b_c, mod.stride, padding, mod.dilation, ng)
                q = q.reshape(batch, u, ng, nr, b2, positions)
                p = torch.einsum("rigo,xgot->xgrit", r1[r0:r_end, :, g0:g0 + ng],
                                 g[:, g0:g0 + ng])
                p = p.reshape(batch, u, ng, nr, b1, positions)
                # (B, nr, b, u ng positions): sum over row multiples, groups and positions
                p = p.permute(0, 3, 4, 1, 2, 5).reshape(batch, nr, b1, -1)
                q = q.permute(0, 3, 4, 1, 2, 5).reshape(batch, nr, b2, -1)
                part = _contract(p, q)
                acc = part if acc is None else acc + part
            out[:, r0:r_end] = acc
        return out.reshape(batch, self.width)


def _contract(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """sum_t p[..., i, t] q[..., j, t]: (B, R, b1, T), (B, R, b2, T) -> (B, R, b1, b2)."""
    import torch

    b1, b2 = p.shape[2], q.shape[2]
    if b1 * b2 > 16:
        return p @ q.transpose(-1, -2)
    if b1 <= b2:  # small blocks: a few fused multiply-sums beat many tiny matrix products
        return torch.stack([(p[:, :, i:i + 1] * q).sum(-1) for i in range(b1)], dim=2)
    return torch.stack([(p * q[:, :, j:j + 1]).sum(-1) for j in range(b2)], dim=3)


# ----------------------------------------------------------------------------- sketcher


class GradientSketcher:
    """Projected per-sample gradients of chosen layers of ``model``, one batch at a time.

    Use as a context manager (or call :meth:`close`): construction puts the model in
    eval mode, registers forward hooks on the chosen layers and turns off
    ``requires_grad`` everywhere else; :meth:`close` undoes all three.

    :param model: the loaded candidate; its ``forward`` gives (features, logits).
    :param config: the sketch options.
    :param num_classes: number of target classes (the ``label`` head's rows).
    :param device: where the model runs (the model must already be there).
    :raises SketchLayerError: when the layers cannot be resolved, or the ``pretrained``
        head is asked of a model without a source head.
    """

    def __init__(self, model: LoadedModel, config: SketchConfig, num_classes: int,
                 device: str = "cpu") -> None:
        if config.head == "pretrained" and not model.has_head:
            raise SketchLayerError(
                "the 'pretrained' sketch head needs a source classification head, and this "
                "model has none; use head='random' or head='label'."
            )
        if config.head == "label" and num_classes < 1:
            raise UsageError("the 'label' sketch head needs num_classes >= 1.")
        self.model, self.config, self.num_classes = model, config, int(num_classes)
        self.device = str(device)
        self.k = int(config.k)
        module = model.module
        self.layer_names = resolve_layers(module, tuple(config.layers))
        modules = dict(module.named_modules())
        sizes = []
        for name in self.layer_names:
            mod = modules[name]
            n_w = int(math.prod(mod.weight.shape[1:])) + int(getattr(mod, "bias", None) is not None)
            sizes.append(int(mod.weight.shape[0]) * n_w)
        budgets = _split_budget(self.k, sizes)
        self.layers = [
            _Layer(name, modules[name], budget, int(config.block), config.seed, self.device)
            for name, budget in zip(self.layer_names, budgets, strict=True)
        ]
        self.offsets, offset = [], 0
        for layer in self.layers:
            self.offsets.append(offset)
            offset += layer.width
        self.used = offset  # columns past this one are zero
        self.head_weight: torch.Tensor | None = None  # (D,) random or (C, D) label head

        self._training = {m: m.training for m in module.modules()}
        module.eval()
        chosen = {id(p) for layer in self.layers for p in layer.module.parameters(recurse=False)}
        self._requires_grad = {p: p.requires_grad for p in module.parameters()}
        for p in module.parameters():
            p.requires_grad_(id(p) in chosen)
        self._handles = [layer.module.register_forward_hook(layer.hook) for layer in self.layers]
        self._closed = False

    # -- heads
    def _head(self, dim: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        import torch

        if self.head_weight is None or self.head_weight.shape[-1] != dim:
            gen = _generator(self.config.seed, 2, HEADS.index(self.config.head))
            rows = self.num_classes if self.config.head == "label" else 1
            w = torch.randn(rows, dim, generator=gen, dtype=torch.float64)
            w /= w.norm(dim=1, keepdim=True)
            self.head_weight = w[0] if self.config.head == "random" else w
        return self.head_weight.to(device=device, dtype=dtype)

    def scalar_output(self, features: torch.Tensor, logits: torch.Tensor | None,
                      labels: torch.Tensor) -> torch.Tensor:
        """The per-sample scalar outputs (B,) whose gradients are sketched."""
        import torch

        head = self.config.head
        if head == "pretrained":
            if logits is None:
                raise SketchLayerError("the model gave no source logits for the 'pretrained' head.")
            logp = torch.log_softmax(logits.flatten(1), dim=-1)
            top = logp.detach().argmax(dim=-1, keepdim=True)
            return logp.gather(1, top)[:, 0]
        f = features.flatten(1)
        w = self._head(f.shape[1], f.dtype, f.device)
        if head == "random":
            return f @ w
        labels = labels.to(device=f.device, dtype=torch.int64).reshape(-1)
        return (f * w[labels]).sum(dim=1)

    # -- sketching
    def __call__(self, batch: Any, labels: torch.Tensor) -> torch.Tensor:
        """(B, k) float32 sketches of one batch (a tensor or a mapping of tensors, as the
        model's ``forward`` takes it), on the CPU; rows are samples."""
        import torch

        from zoosel.engine.preprocess import batch_length

        if self._closed:
            raise RuntimeError("this GradientSketcher is closed.")
        if self.config.head == "label":
            labels = torch.as_tensor(labels).reshape(-1)
            if labels.shape[0] != batch_length(batch):
                raise UsageError(f"{labels.shape[0]} labels for a batch of "
                                 f"{batch_length(batch)}.")
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
                raise UsageError(
                    f"labels must lie in 0..{self.num_classes - 1} for the 'label' head."
                )
        for layer in self.layers:
            layer.calls.clear()
            layer.active = True
        try:
            with torch.inference_mode(False), torch.enable_grad():
                batch = ({k: v.to(self.device).clone() for k, v in batch.items()}
                         if isinstance(batch, Mapping) else batch.to(self.device).clone())
                features, logits = self.model.forward(batch)
                out = self.scalar_output(features, logits, labels)
                b = out.shape[0]
                outputs = [o for layer in self.layers for (_, _, o) in layer.calls]
                silent = [layer.name for layer in self.layers if not layer.calls]
                if silent:
                    raise SketchLayerError(
                        f"layer(s) {', '.join(silent)} did not run in the forward pass (their "
                        "parent may use the weights directly); choose other layers."
                    )
                if not all(o.requires_grad for o in outputs):
                    raise SketchLayerError("the forward pass does not track gradients.")
                if not out.requires_grad:
                    raise SketchLayerError(
                        f"none of the layers {', '.join(self.layer_names)} influences the "
                        f"{self.config.head!r} head's output (a classifier under a feature head?)."
                    )
                grads = torch.autograd.grad(out.sum(), outputs, allow_unused=True)
                result = torch.zeros(b, self.k, dtype=torch.float32, device=self.device)
                index = 0
                for layer, offset in zip(self.layers, self.offsets, strict=True):
                    used = False
                    part = None
                    for a, version, _ in layer.calls:
                        g = grads[index]
                        index += 1
                        if g is None:
                            continue
                        used = True
                        s = layer.sketch(a, version, g.detach(), b)
                        part = s if part is None else part + s
                    if not used:
                        raise SketchLayerError(
                            f"layer {layer.name!r} does not influence the {self.config.head!r} "
                            "head's output (a classifier under a feature head?)."
                        )
                    result[:, offset:offset + layer.width] = part.to(torch.float32)
        finally:
            for layer in self.layers:
                layer.calls.clear()
                layer.active = False
        return result.cpu()

    def close(self) -> None:
        """Remove the hooks; restore ``requires_grad`` and the train/eval flags."""
        if self._closed:
            return
        self._closed = True
        for handle in self._handles:
            handle.remove()
        for p, flag in self._requires_grad.items():
            p.requires_grad_(flag)
        for m, flag in self._training.items():
            m.training = flag

    def __enter__(self) -> GradientSketcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
