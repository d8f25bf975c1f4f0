"""An original Segmenter checkpoint (rstrudel/segmenter) in mmseg's key names
(``tools/model_converters/segmenter2mmseg.py``).

The original release saves ``{"model": state_dict, "optimizer": ..., "n_cls": ...,
"lr_scheduler": ..., "epoch": ...}`` with an ``encoder.*`` ViT (timm-style names) and a
``decoder.*`` mask transformer. The result loads with ``strict=True`` into mmseg's
``EncoderDecoder`` with ``VisionTransformer`` + ``SegmenterMaskTransformerHead`` (our
``configs/segmenter/segmenter_vit-l_mask_*`` base configs) and, unmodified, into the
expedited configs that inherit them.

The original models use torch's default LayerNorm eps (1e-5) and bilinear
position-embedding resizing; the base configs set both (mmseg's own Segmenter configs use
1e-6 and bicubic, matching mmseg-trained weights).
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any, Dict, Mapping, Optional, Tuple

from torch import Tensor

from .keys import TIMM_BLOCK_RENAMES, convert_file, release_weights, rename_prefix

_ENCODER_RENAMES = {
    "patch_embed.proj": "patch_embed.projection",
    "cls_token": "cls_token",
    "pos_embed": "pos_embed",
    "norm": "ln1",          # the final norm of mmseg's ViT is ``ln1`` (its ``norm1_name``)
}

_DECODER_RENAMES = {
    "cls_emb": "cls_emb",
    "proj_dec": "dec_proj",
    "decoder_norm": "decoder_norm",
    "mask_norm": "mask_norm",
}

# ``x @ proj`` (a raw (d, d) parameter in the original) is ``Linear(bias=False)`` with
# ``weight = proj.T`` in mmseg.
_DECODER_TRANSPOSED = {
    "proj_patch": "patch_proj.weight",
    "proj_classes": "classes_proj.weight",
}

# The ImageNet classifier of the encoder is not part of the segmentation model.
_UNUSED = re.compile(r"^encoder\.head\.")


# What convert_segmenter accepts, for error messages.
_EXPECTED_LAYOUT = (
    "encoder.{patch_embed.proj.*, cls_token, pos_embed, norm.*, head.* (dropped), "
    "blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}.*} and "
    "decoder.{cls_emb, proj_dec.*, proj_patch, proj_classes, decoder_norm.*, mask_norm.*, "
    "blocks.N.*}")


class SegmenterConversionError(ValueError):
    """The checkpoint is not an original Segmenter ViT + mask-transformer checkpoint."""


def _convert_block(name: str) -> Optional[str]:
    """A transformer block's key (the same layout in the encoder and in the decoder)."""
    match = re.match(r"^blocks\.(\d+)\.(.+)$", name)
    if match is None:
        return None
    renamed = rename_prefix(match.group(2), TIMM_BLOCK_RENAMES)
    return None if renamed is None else f"layers.{match.group(1)}.{renamed}"


def convert_segmenter(state_dict: Mapping[str, Tensor]) -> "OrderedDict[str, Tensor]":
    """Original Segmenter ``state_dict`` -> mmseg ``EncoderDecoder`` ``state_dict``.

    Raises :class:`SegmenterConversionError` for keys it does not know (e.g. the
    ``dist_token`` of DeiT-based Segmenters, or a linear decoder), so no weight is
    silently dropped.

    Args:
        state_dict: the original ``"model"`` entry: ``encoder.*`` and ``decoder.*`` tensors.
    """
    if "encoder.dist_token" in state_dict:
        raise SegmenterConversionError(
            "this is a distilled (DeiT) Segmenter: mmseg's VisionTransformer has no "
            "distillation token; only the ViT backbones (seg_*_mask) are supported")
    converted: "OrderedDict[str, Tensor]" = OrderedDict()
    unknown = []
    for name, value in state_dict.items():
        if _UNUSED.match(name):
            continue
        if not isinstance(value, Tensor):
            raise SegmenterConversionError(
                f"{name}: expected a tensor, got a {type(value).__name__} (an original "
                f"Segmenter 'model' entry maps names to tensors)")
        new_name = None
        if name.startswith("encoder."):
            part = name[len("encoder."):]
            renamed = _convert_block(part) or rename_prefix(part, _ENCODER_RENAMES)
            new_name = None if renamed is None else "backbone." + renamed
        elif name.startswith("decoder."):
            part = name[len("decoder."):]
            if part in _DECODER_TRANSPOSED:
                if value.dim() != 2 or value.shape[0] != value.shape[1]:
                    raise SegmenterConversionError(
                        f"{name}: expected a square (d, d) matrix (the original applies it "
                        f"as x @ {part}), got shape {tuple(value.shape)}")
                new_name = "decode_head." + _DECODER_TRANSPOSED[part]
                value = value.t().contiguous()
            else:
                renamed = _convert_block(part) or rename_prefix(part, _DECODER_RENAMES)
                new_name = None if renamed is None else "decode_head." + renamed
        if new_name is None:
            unknown.append(name)
            continue
        converted[new_name] = value
    if unknown:
        raise SegmenterConversionError(
            f"keys not in an original Segmenter ViT + mask-transformer checkpoint: "
            f"{unknown[:10]}{' ...' if len(unknown) > 10 else ''}; expected "
            f"{_EXPECTED_LAYOUT}")
    if not any(k.startswith("decode_head.") for k in converted):
        raise SegmenterConversionError("no mask-transformer decoder (decoder.*) weights found")
    return converted


def extract_state_dict(checkpoint: Any) -> Dict[str, Tensor]:
    """The model weights of an original Segmenter checkpoint (``"model"``) or a bare
    state dict.

    Args:
        checkpoint: what the checkpoint file holds.
    """
    return release_weights(checkpoint, "encoder.", SegmenterConversionError,
                           "an original Segmenter checkpoint: a dict with 'model' holding "
                           "'encoder.*' and 'decoder.*' weights")


def _convert(checkpoint: Any) -> Tuple["OrderedDict[str, Tensor]", Dict[str, Any]]:
    meta: Dict[str, Any] = {"converter": "segmenter2mmseg"}
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("n_cls"), int):
        meta["num_classes"] = checkpoint["n_cls"]
    return convert_segmenter(extract_state_dict(checkpoint)), meta


def convert_checkpoint(src: str, dst: str, trust_checkpoint: bool = False) -> Dict[str, Any]:
    """Convert the original Segmenter checkpoint ``src`` and save it to ``dst``.

    Args:
        src: the original checkpoint: a path or URL.
        dst: the converted checkpoint (mmengine's layout; its ``meta`` names the source
            and the number of classes).
        trust_checkpoint: load ``src`` with arbitrary objects (unsafe unpickling).

    Returns:
        The ``meta`` written.
    """
    return convert_file(src, dst, trust_checkpoint, _convert)
