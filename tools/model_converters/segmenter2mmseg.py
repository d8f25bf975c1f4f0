"""Convert an original Segmenter checkpoint (rstrudel/segmenter) to mmseg's key names.

The original release saves ``{"model": state_dict, "optimizer": ..., "n_cls": ...,
"lr_scheduler": ..., "epoch": ...}`` with an ``encoder.*`` ViT (timm-style names) and a
``decoder.*`` mask transformer. The result loads with ``strict=True`` into mmseg's
``EncoderDecoder`` with ``VisionTransformer`` + ``SegmenterMaskTransformerHead`` (our
``configs/segmenter/segmenter_vit-l_mask_*`` base configs) and, unmodified, into the
expedited configs that inherit them.

Usage::

    python tools/model_converters/segmenter2mmseg.py \
        https://www.rocq.inria.fr/cluster-willow/rstrudel/segmenter/checkpoints/cityscapes/seg_large_mask/checkpoint.pth \
        checkpoints/segmenter_vit-l_mask_8xb1-80k_cityscapes-768x768_rstrudel.pth

The original models use torch's default LayerNorm eps (1e-5) and bilinear
position-embedding resizing; the base configs set both (mmseg's own Segmenter configs use
1e-6 and bicubic, matching mmseg-trained weights).
"""
from __future__ import annotations

import os.path as osp
import re
import sys
from collections import OrderedDict
from typing import Any, Dict, Mapping, Optional

from torch import Tensor

# A transformer block: the same layout in the encoder (timm-style) and in the decoder.
_BLOCK_RENAMES = {
    "norm1": "ln1",
    "attn.qkv.weight": "attn.attn.in_proj_weight",   # q, k, v stacked row-wise in both
    "attn.qkv.bias": "attn.attn.in_proj_bias",
    "attn.proj": "attn.attn.out_proj",
    "norm2": "ln2",
    "mlp.fc1": "ffn.layers.0.0",
    "mlp.fc2": "ffn.layers.1",
}

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


def _rename(name: str, renames: Mapping[str, str]) -> Optional[str]:
    """``renames`` applied to a parameter name (prefix match on whole dotted parts)."""
    for old, new in renames.items():
        if name == old or name.startswith(old + "."):
            return new + name[len(old):]
    return None


def _convert_block(name: str) -> Optional[str]:
    match = re.match(r"^blocks\.(\d+)\.(.+)$", name)
    if match is None:
        return None
    renamed = _rename(match.group(2), _BLOCK_RENAMES)
    return None if renamed is None else f"layers.{match.group(1)}.{renamed}"


def convert_segmenter(state_dict: Mapping[str, Tensor]) -> "OrderedDict[str, Tensor]":
    """Original Segmenter ``state_dict`` -> mmseg ``EncoderDecoder`` ``state_dict``.

    Raises :class:`SegmenterConversionError` for keys it does not know (e.g. the
    ``dist_token`` of DeiT-based Segmenters, or a linear decoder), so no weight is
    silently dropped.
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
            renamed = _convert_block(part) or _rename(part, _ENCODER_RENAMES)
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
                renamed = _convert_block(part) or _rename(part, _DECODER_RENAMES)
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
    state dict."""
    from expedite_mm.utils.checkpoint import describe_payload
    state_dict = checkpoint.get("model", checkpoint) if isinstance(checkpoint, Mapping) \
        else checkpoint
    if not isinstance(state_dict, Mapping) or not any(
            str(k).startswith("encoder.") for k in state_dict):
        raise SegmenterConversionError(
            f"expected an original Segmenter checkpoint: a dict with 'model' holding "
            f"'encoder.*' and 'decoder.*' weights, got {describe_payload(state_dict)}")
    return dict(state_dict)


def main(argv=None) -> None:
    # Run as a script from anywhere: make the repository's expedite_mm importable.
    sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), "..", "..")))
    from expedite_mm.utils.checkpoint import load_checkpoint_file
    from expedite_mm.utils.convert import converter_parser, save_converted

    args = converter_parser("Convert an original Segmenter checkpoint (rstrudel/segmenter) "
                            "to MMSegmentation key names.", "original checkpoint").parse_args(argv)
    checkpoint = load_checkpoint_file(args.src, map_location="cpu", trust=args.trust_checkpoint)
    state_dict = convert_segmenter(extract_state_dict(checkpoint))
    meta = {"converted_from": str(args.src), "converter": "segmenter2mmseg"}
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("n_cls"), int):
        meta["num_classes"] = checkpoint["n_cls"]
    save_converted(state_dict, args.dst, meta)


if __name__ == "__main__":
    main()
