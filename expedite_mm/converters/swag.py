"""A SWAG ViT checkpoint in mmpretrain's ``ImageClassifier`` key names
(``tools/model_converters/swag2mmpretrain.py``).

Two layouts hold the released SWAG ViTs, both read here:

* torchvision's ``vit_l_16`` / ``vit_h_14`` (``ViT_L_16_Weights.IMAGENET1K_SWAG_E2E_V1``
  etc., https://download.pytorch.org/models/vit_l_16_swag-4f3808c9.pth):
  ``encoder.layers.encoder_layer_{i}.*``, MLP ``mlp.0`` / ``mlp.3`` (``mlp.linear_1`` /
  ``mlp.linear_2`` in older files), position embedding (1, L, C), classifier
  ``heads.head``;
* SWAG's own release (facebookresearch/SWAG, what its torch hub entry and Expedit-SWAG
  load, https://dl.fbaipublicfiles.com/SWAG/vit_l16_in1k.torch):
  ``encoder.layers.layer_{i}.*``, MLP ``mlp.linear_1`` / ``mlp.linear_2``, position
  embedding (L, 1, C), classifier ``head.layers.head``.

The result loads with ``strict=True`` into mmpretrain's ``ImageClassifier`` with
``VisionTransformer`` + ``VisionTransformerClsHead`` (``configs/swag/``) and, unmodified,
into the expedited configs that inherit them: the attention's packed q/k/v projection
(``in_proj_*``) is mmpretrain's ``qkv`` in the same row order; LayerNorm eps is 1e-6 in
all three. A checkpoint without classifier (the pre-trained trunks ``vit_l16.torch``)
converts to the backbone alone.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any, Dict, Mapping, Tuple

from torch import Tensor

from .keys import convert_file, rename_prefix

_LAYER = re.compile(r"^encoder\.layers\.(?:encoder_layer_|layer_)(\d+)\.(.+)$")

_LAYER_RENAMES = {
    "ln_1": "ln1",
    "self_attention.in_proj_weight": "attn.qkv.weight",   # q, k, v stacked row-wise in both
    "self_attention.in_proj_bias": "attn.qkv.bias",
    "self_attention.out_proj": "attn.proj",
    "ln_2": "ln2",
    "mlp.0": "ffn.layers.0.0",          # torchvision
    "mlp.linear_1": "ffn.layers.0.0",   # SWAG, older torchvision
    "mlp.3": "ffn.layers.1",
    "mlp.linear_2": "ffn.layers.1",
}

_RENAMES = {
    "class_token": "backbone.cls_token",
    "conv_proj.weight": "backbone.patch_embed.projection.weight",
    "conv_proj.bias": "backbone.patch_embed.projection.bias",
    "encoder.pos_embedding": "backbone.pos_embed",
    "encoder.ln": "backbone.ln1",           # the final norm of mmpretrain's ViT
    "heads.head": "head.layers.head",       # torchvision
    "heads.pre_logits": "head.layers.pre_logits",
    "head.layers.head": "head.layers.head",  # SWAG
    "head.layers.pre_logits": "head.layers.pre_logits",
}


class SwagConversionError(ValueError):
    """The checkpoint is not a SWAG ViT in torchvision's or SWAG's layout."""


def convert_swag(state_dict: Mapping[str, Tensor]) -> "OrderedDict[str, Tensor]":
    """SWAG ViT ``state_dict`` (torchvision's or SWAG's layout) -> mmpretrain
    ``ImageClassifier`` ``state_dict``.

    Raises :class:`SwagConversionError` for keys it does not know (e.g. SWAG's optional
    convolutional stem), so no weight is silently dropped.

    Args:
        state_dict: the SWAG ViT's weights, in either layout.
    """
    converted: "OrderedDict[str, Tensor]" = OrderedDict()
    unknown = []
    for name, value in state_dict.items():
        match = _LAYER.match(name)
        if match is not None:
            renamed = rename_prefix(match.group(2), _LAYER_RENAMES)
            new_name = None if renamed is None else f"backbone.layers.{match.group(1)}.{renamed}"
        else:
            new_name = rename_prefix(name, _RENAMES)
        if new_name is None:
            unknown.append(name)
            continue
        if new_name == "backbone.pos_embed":
            value = _pos_embed(value)
        converted[new_name] = value
    if unknown:
        raise SwagConversionError(
            f"keys not in a SWAG ViT checkpoint (torchvision's or SWAG's layout): "
            f"{unknown[:10]}{' ...' if len(unknown) > 10 else ''}")
    missing = [k for k in ("backbone.cls_token", "backbone.pos_embed",
                           "backbone.patch_embed.projection.weight", "backbone.ln1.weight")
               if k not in converted]
    if missing or not any(k.startswith("backbone.layers.") for k in converted):
        raise SwagConversionError(f"not a complete SWAG ViT: missing {missing or 'the layers'}")
    return converted


def _pos_embed(value: Tensor) -> Tensor:
    """(1, L, C) (torchvision) or (L, 1, C) (SWAG) -> mmpretrain's (1, L, C)."""
    if value.dim() != 3 or 1 not in value.shape[:2]:
        raise SwagConversionError(f"position embedding of unexpected shape {tuple(value.shape)}")
    return value if value.shape[0] == 1 else value.transpose(0, 1).contiguous()


def extract_state_dict(checkpoint: Mapping) -> Dict[str, Tensor]:
    """The weights of a SWAG checkpoint: a bare state dict (both releases), or one under
    ``"state_dict"`` / ``"model"``.

    Args:
        checkpoint: what the checkpoint file holds.
    """
    for key in ("state_dict", "model"):
        if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
    if not isinstance(checkpoint, Mapping) or "class_token" not in checkpoint:
        from ..apis.checkpoint import describe_payload
        raise SwagConversionError(f"expected a SWAG ViT checkpoint: a state dict with "
                                  f"'class_token', 'conv_proj.*' and 'encoder.*' weights, got "
                                  f"{describe_payload(checkpoint)}")
    return dict(checkpoint)


def _convert(checkpoint: Any) -> Tuple["OrderedDict[str, Tensor]", Dict[str, Any]]:
    state_dict = convert_swag(extract_state_dict(checkpoint))
    meta: Dict[str, Any] = {"converter": "swag2mmpretrain"}
    head = state_dict.get("head.layers.head.weight")
    if head is not None:
        meta["num_classes"] = int(head.shape[0])
    else:
        print("note: no classifier in the checkpoint; converted the backbone only")
    return state_dict, meta


def convert_checkpoint(src: str, dst: str, trust_checkpoint: bool = False) -> Dict[str, Any]:
    """Convert the SWAG ViT checkpoint ``src`` and save it to ``dst``.

    Args:
        src: the SWAG checkpoint (torchvision's or SWAG's layout): a path or URL.
        dst: the converted checkpoint (mmengine's layout; its ``meta`` names the source
            and, with a classifier, the number of classes).
        trust_checkpoint: load ``src`` with arbitrary objects (unsafe unpickling).

    Returns:
        The ``meta`` written.
    """
    return convert_file(src, dst, trust_checkpoint, _convert)
