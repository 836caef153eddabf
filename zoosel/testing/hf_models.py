"""Tiny, seeded transformers checkpoints of every image-classification architecture.

:func:`make_hf_model_dir` saves one randomly initialised model (any class of transformers'
``MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES``, a bare backbone such as ``Dinov2Model``,
or a full ``CLIPModel`` / ``SiglipModel``) with an image processor, in the layout
``save_pretrained`` gives on the Hub. Sizes are a few layers of width 16-32 on 32-pixel
images, so building, saving and running one takes a fraction of a second on a CPU.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

IMAGE_SIZE = 32
"""Side of the images every tiny model expects (a few families need another, below)."""

_VIT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
            patch_size=8)
_SWIN = dict(embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=2, patch_size=4)
_CLIP_TEXT = dict(vocab_size=99, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                  num_attention_heads=2, max_position_embeddings=16)
_CLIP_VISION = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                    num_attention_heads=2, patch_size=8)
_SEGFORMER = dict(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32],
                  patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 2],
                  mlp_ratios=[2, 2])

# Configuration overrides by model type: a few layers of small width, one per stage.
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "beit": dict(_VIT, use_auxiliary_head=False, use_mean_pooling=True),
    "bit": dict(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], num_groups=4,
                layer_type="bottleneck", out_features=None, out_indices=None),
    "clip": dict(text_config=_CLIP_TEXT, vision_config=_CLIP_VISION, projection_dim=16),
    "convnext": dict(hidden_sizes=[16, 32], depths=[1, 1], num_stages=2),
    "convnextv2": dict(hidden_sizes=[16, 32], depths=[1, 1], num_stages=2),
    "cvt": dict(embed_dim=[8, 16, 32], num_heads=[1, 1, 2], depth=[1, 2, 3]),  # depth[i] > i
    "data2vec-vision": dict(_VIT, use_auxiliary_head=False, use_mean_pooling=True),
    "deit": dict(_VIT),
    "dinat": dict(embed_dim=16, depths=[1, 1], num_heads=[1, 2], kernel_size=3,
                  dilations=[[1], [1]], patch_size=4),
    "dinov2": dict(_VIT, intermediate_size=None, mlp_ratio=2),
    "dinov2_with_registers": dict(_VIT, intermediate_size=None, mlp_ratio=2,
                                  num_register_tokens=2),
    "donut-swin": dict(_SWIN),
    "efficientnet": dict(width_coefficient=0.25, depth_coefficient=0.2, hidden_dim=320,
                         kernel_sizes=[3, 3], in_channels=[32, 16], out_channels=[16, 24],
                         strides=[1, 2], num_block_repeats=[1, 1], expand_ratios=[1, 2],
                         depthwise_padding=[]),
    "focalnet": dict(embed_dim=16, hidden_sizes=[32, 32], depths=[1, 1], patch_size=4),
    "hgnet_v2": dict(embedding_size=16, depths=[1, 1], hidden_sizes=[32, 64],
                     stem_channels=[3, 8, 16], stage_in_channels=[16, 32],
                     stage_mid_channels=[8, 16], stage_out_channels=[32, 64],
                     stage_num_blocks=[1, 1], stage_downsample=[False, True],
                     stage_light_block=[False, True], stage_kernel_size=[3, 3],
                     stage_numb_of_layers=[2, 2], stage_downsample_strides=[2, 2]),
    "hiera": dict(embed_dim=16, image_size=[IMAGE_SIZE, IMAGE_SIZE], patch_size=[3, 3],
                  patch_stride=[2, 2], patch_padding=[1, 1], depths=[1, 1], num_heads=[1, 2],
                  num_query_pool=1, query_stride=[2, 2], masked_unit_size=[4, 4],
                  mlp_ratio=2.0),
    "ijepa": dict(_VIT),
    "imagegpt": dict(n_embd=32, n_layer=2, n_head=2, n_positions=64, vocab_size=17),
    "levit": dict(hidden_sizes=[16, 32], num_attention_heads=[1, 2], depths=[1, 1],
                  key_dim=[8, 8], drop_path_rate=0, mlp_ratio=[2, 2], attention_ratio=[2, 2],
                  patch_size=16, down_ops=[["Subsample", 8, 1, 2, 2, 2]]),
    "metaclip_2": dict(text_config=_CLIP_TEXT, vision_config=_CLIP_VISION, projection_dim=16),
    "mobilenet_v1": dict(depth_multiplier=0.25, min_depth=8),
    "mobilenet_v2": dict(depth_multiplier=0.25, min_depth=8),
    "mobilevit": dict(hidden_sizes=[16, 16, 16], neck_hidden_sizes=[8, 8, 16, 16, 16, 16, 32],
                      num_attention_heads=2, patch_size=2),
    "mobilevitv2": dict(width_multiplier=0.25, n_attn_blocks=[1, 1, 1]),
    "perceiver": dict(num_latents=8, d_latents=32, num_blocks=1, num_self_attends_per_block=1,
                      num_self_attention_heads=2, num_cross_attention_heads=1,
                      image_size=IMAGE_SIZE),
    "poolformer": dict(depths=[1, 1], hidden_sizes=[16, 32], patch_sizes=[7, 3],
                       strides=[4, 2], num_encoder_blocks=2),
    "pp_lcnet": dict(stem_channels=8, class_expand=64, depths=[1, 1, 1, 1, 1],
                     block_configs=[[[3, 8, 8, 1, False]], [[3, 8, 16, 2, False]],
                                    [[3, 16, 16, 2, False]], [[3, 16, 32, 2, False]],
                                    [[5, 32, 32, 2, True]]]),
    "pvt": dict(_SEGFORMER, sequence_reduction_ratios=[2, 1], patch_sizes=[4, 2],
                image_size=IMAGE_SIZE),
    "pvt_v2": dict(_SEGFORMER, image_size=IMAGE_SIZE),
    "regnet": dict(embedding_size=8, hidden_sizes=[16, 32], depths=[1, 1], groups_width=8),
    "resnet": dict(embedding_size=8, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic"),
    "segformer": dict(_SEGFORMER, decoder_hidden_size=16),
    "shieldgemma2": dict(
        text_config=dict(vocab_size=99, hidden_size=16, intermediate_size=24,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         head_dim=8, sliding_window=8, max_position_embeddings=64),
        vision_config=_CLIP_VISION, mm_tokens_per_image=4, image_token_index=98,
        boi_token_index=96, eoi_token_index=97),
    "siglip": dict(text_config=_CLIP_TEXT, vision_config=_CLIP_VISION),
    "siglip2": dict(text_config=_CLIP_TEXT, vision_config=dict(_CLIP_VISION, num_patches=16)),
    "swiftformer": dict(depths=[1, 1, 1, 1], embed_dims=[8, 16, 16, 32]),
    "swin": dict(_SWIN),
    "swinv2": dict(_SWIN),
    "textnet": dict(stem_out_channels=8, hidden_sizes=[8, 8, 16, 16, 32], depths=[1, 1, 1, 1],
                    conv_layer_kernel_sizes=[[[3, 3]], [[3, 3]], [[3, 3]], [[3, 3]]],
                    conv_layer_strides=[[1], [2], [2], [2]], image_size=[IMAGE_SIZE] * 2),
    "timm_wrapper": dict(architecture="test_resnet"),
    "vit": dict(_VIT),
    "vit_mae": dict(_VIT, decoder_hidden_size=16, decoder_num_hidden_layers=1,
                    decoder_num_attention_heads=2, decoder_intermediate_size=24),
    "vit_msn": dict(_VIT),
}

# Families whose image side is not IMAGE_SIZE.
IMAGE_SIDES = {"mobilevit": 64, "mobilevitv2": 64, "levit": 64}

# Image processors of families whose type has none of its own in transformers' mapping.
_FALLBACK_PROCESSOR = "ViTImageProcessor"


def image_side(model_type: str) -> int:
    """Side (pixels) of the images the tiny ``model_type`` model is built for."""
    return IMAGE_SIDES.get(model_type, IMAGE_SIZE)


def tiny_config(model_type: str, num_labels: int = 7, **overrides: Any) -> Any:
    """A tiny configuration of ``model_type`` with ``num_labels`` named classes."""
    from transformers import CONFIG_MAPPING

    kwargs = copy.deepcopy(TINY_CONFIGS[model_type])
    side = image_side(model_type)
    config_class = CONFIG_MAPPING[model_type]
    if "vision_config" in kwargs:
        kwargs["vision_config"].setdefault("image_size", side)
    elif "image_size" not in kwargs and "image_size" in config_class().to_dict():
        kwargs["image_size"] = side
    labels = {i: f"label_{i}" for i in range(num_labels)}
    kwargs.update(num_labels=num_labels, id2label=labels,
                  label2id={v: k for k, v in labels.items()}, **overrides)
    if model_type == "timm_wrapper":
        kwargs["num_classes"] = num_labels
        kwargs["pretrained_cfg"] = {"input_size": [3, side, side], "crop_pct": 1.0,
                                    "mean": [0.5] * 3, "std": [0.5] * 3}
    return config_class(**kwargs)


def tiny_processor(model_type: str, config: Any) -> Any:
    """The image processor of ``model_type``, resizing to the tiny model's image side."""
    import numpy as np
    import transformers as tf
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES

    side = image_side(model_type)
    names = IMAGE_PROCESSOR_MAPPING_NAMES.get(model_type) or {}
    if isinstance(names, str):
        names = {"pil": names}
    name = names.get("torchvision") or names.get("pil") or _FALLBACK_PROCESSOR
    if model_type == "timm_wrapper":  # its preprocessing lives in config.json
        return None
    if model_type == "imagegpt":
        rng = np.random.default_rng(0)
        clusters = rng.uniform(-1, 1, size=(config.vocab_size - 1, 3)).astype(np.float32)
        n = int(config.n_positions ** 0.5)
        return getattr(tf, name)(clusters=clusters, size={"height": n, "width": n})
    if model_type == "siglip2":
        return getattr(tf, name)(patch_size=config.vision_config.patch_size,
                                 max_num_patches=config.vision_config.num_patches)
    defaults = getattr(tf, name)().to_dict()
    sizes = {attr: {k: side for k, v in defaults[attr].items() if v}
             for attr in ("size", "crop_size") if isinstance(defaults.get(attr), dict)}
    return getattr(tf, name)(**sizes)


def make_hf_model_dir(
    path: str | Path, class_name: str, *, model_type: str | None = None, num_labels: int = 7,
    seed: int = 0, save: Any = None, **overrides: Any,
) -> Path:
    """Save a tiny random transformers ``class_name`` model and its image processor at ``path``.

    ``model_type`` defaults to the class's own; ``overrides`` change the configuration.
    ``save`` (a callable taking the model) replaces ``save_pretrained``, to write a
    checkpoint that lacks some weights, for instance. Returns ``path``.
    """
    import torch
    import transformers as tf

    cls = getattr(tf, class_name)
    model_type = model_type or cls.config_class.model_type
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    config = tiny_config(model_type, num_labels, **overrides)
    if not isinstance(config, cls.config_class):  # a vision tower of a CLIP-like model
        config = config.vision_config
    torch.manual_seed(seed)
    model = cls(config).eval()
    if save is not None:
        save(model, out)
    else:
        model.save_pretrained(out)
    processor = tiny_processor(model_type, config)
    if processor is not None:
        processor.save_pretrained(out)
    return out
