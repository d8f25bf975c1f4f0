"""An official DPT hybrid checkpoint (isl-org/DPT) in our mmseg key names
(``tools/model_converters/dpt2mmseg.py``).

Supported: the R50+ViT-B/16 hybrid monodepth releases, e.g.
``dpt_hybrid_kitti-cb926ef4.pt`` and ``dpt_hybrid_nyu-2ce69ec7.pt``
(https://github.com/isl-org/DPT/releases/tag/1_0; also ``dpt_hybrid-midas-501f0c75.pt``,
whose weights have the same layout). The result loads with ``strict=True`` into the
``DepthEstimator`` of ``configs/dpt/dpt_hybrid-r50-vitb16_*`` (``HybridViT`` +
``DPTDepthHead``) and, unmodified, into the expedited configs that inherit them.

What the release holds and how it maps (assumptions, from the DPT paper, the ViT paper's
R50+ViT-B/16 hybrid and timm's ``vit_base_resnet50_384`` that DPT builds on):

* ``pretrained.model.*`` is timm's hybrid ViT. Its ``patch_embed.backbone`` is a
  ResNet "v2" built with ``preact=False``: weight-standardised convolutions
  (eps 1e-8, biased variance inside the square root) with TensorFlow ``SAME`` padding,
  GroupNorm(32) and post-activation bottlenecks, stages of (3, 4, 9) blocks; it maps to
  ``backbone.resnet.*`` (``stages.S.blocks.B`` -> ``stages.S.B``). ``patch_embed.proj`` (a
  1x1 conv from 1024 to 768 channels, with bias) is ``backbone.patch_embed.projection``;
  the twelve pre-norm blocks (LayerNorm eps 1e-6) map to mmseg's ``layers.N`` (``qkv`` is
  ``in_proj``: q, k, v stacked row-wise in both). The final ``norm`` and the ImageNet
  ``head`` are not used by DPT (its taps are block outputs before the final norm) and
  are dropped.
* DPT taps the outputs of ResNet stages 1 and 2 (256 and 512 channels, strides 4 and 8)
  and of ViT blocks 9 and 12 (0-based hooks 8 and 11). ``pretrained.act_postprocess3``
  and ``4`` reassemble the two ViT taps: readout projection (``0.project.0``: Linear over
  [token, class token] + GELU), 1x1 conv (``3``) and, for tap 4, a 3x3 stride-2 conv
  (``4``); they map to ``decode_head.reassemble.2`` / ``3``. ``act_postprocess1``/``2``
  are parameter-free identities in the hybrid.
* ``scratch.layerN_rn`` (3x3, no bias) -> ``decode_head.convs.N-1``;
  ``scratch.refinenetN`` (``resConfUnit1``/``2`` with biased convs, ``out_conv``) ->
  ``decode_head.fusion_blocks.N-1`` (``res_unit1``/``2``, ``project``). ``refinenet4``'s
  ``resConfUnit1`` is never called (the coarsest fusion has no skip input): dropped.
* ``scratch.output_conv.{0,2,4}`` (3x3 to 128, 3x3 to 32, 1x1 to 1) ->
  ``decode_head.depth_head.{0,2,4}``. The affine inverse-depth mapping of the KITTI
  (scale 6.016e-5, shift 0.00579) and NYU (scale 3.05e-4, shift 0.1378) models is not a
  weight: the configs set it (``depth_scale``/``depth_shift``, ``invert=True``).

Every other key raises :class:`DPTConversionError`, so nothing is dropped silently; the
dropped keys are listed on stdout.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Tuple

from torch import Tensor

from .keys import TIMM_BLOCK_RENAMES, convert_file, release_weights, rename_prefix

# (release pattern, our name template); tried in order, first match wins.
_RULES: List[Tuple[re.Pattern, str]] = [(re.compile(p), t) for p, t in [
    (r"^pretrained\.model\.(cls_token|pos_embed)$", r"backbone.\1"),
    (r"^pretrained\.model\.patch_embed\.backbone\.stem\.(conv|norm)\.(\w+)$",
     r"backbone.resnet.stem.\1.\2"),
    (r"^pretrained\.model\.patch_embed\.backbone\.stages\.(\d+)\.blocks\.(\d+)\.(.+)$",
     r"backbone.resnet.stages.\1.\2.\3"),
    (r"^pretrained\.model\.patch_embed\.proj\.(weight|bias)$",
     r"backbone.patch_embed.projection.\1"),
    (r"^pretrained\.act_postprocess3\.0\.project\.0\.(weight|bias)$",
     r"decode_head.reassemble.2.readout.0.\1"),
    (r"^pretrained\.act_postprocess3\.3\.(weight|bias)$", r"decode_head.reassemble.2.project.\1"),
    (r"^pretrained\.act_postprocess4\.0\.project\.0\.(weight|bias)$",
     r"decode_head.reassemble.3.readout.0.\1"),
    (r"^pretrained\.act_postprocess4\.3\.(weight|bias)$", r"decode_head.reassemble.3.project.\1"),
    (r"^pretrained\.act_postprocess4\.4\.(weight|bias)$",
     r"decode_head.reassemble.3.resample.\1"),
    (r"^scratch\.output_conv\.([024])\.(weight|bias)$", r"decode_head.depth_head.\1.\2"),
]]
# Weights DPT's forward never uses.
_UNUSED = re.compile(r"^(pretrained\.model\.(norm|head)\.|"
                     r"scratch\.refinenet4\.resConfUnit1\.)")


# What convert_dpt_hybrid accepts, for error messages.
_EXPECTED_LAYOUT = (
    "pretrained.model.{cls_token, pos_embed, patch_embed.backbone.{stem, stages.S.blocks.B}.*, "
    "patch_embed.proj.*, blocks.N.*, norm.*, head.*}, "
    "pretrained.act_postprocess{3,4}.*, scratch.layerN_rn.weight, "
    "scratch.refinenetN.{resConfUnit1, resConfUnit2, out_conv}.*, scratch.output_conv.{0,2,4}.*")


class DPTConversionError(ValueError):
    """The checkpoint is not an official DPT hybrid (R50+ViT-B/16) checkpoint."""


def _convert_name(name: str) -> str:
    """Our name for a release key, or '' if there is none."""
    block = re.match(r"^pretrained\.model\.blocks\.(\d+)\.(.+)$", name)
    if block:
        layer, rest = block.groups()
        renamed = rename_prefix(rest, TIMM_BLOCK_RENAMES)
        return "" if renamed is None else f"backbone.layers.{layer}.{renamed}"
    match = re.match(r"^scratch\.layer(\d)_rn\.weight$", name)
    if match:
        return f"decode_head.convs.{int(match.group(1)) - 1}.weight"
    match = re.match(r"^scratch\.refinenet(\d)\.(resConfUnit(\d)\.conv\d|out_conv)\.(weight|bias)$",
                     name)
    if match:
        block, module, unit, param = match.groups()
        part = f"res_unit{unit}.{module.split('.')[-1]}" if unit else "project"
        return f"decode_head.fusion_blocks.{int(block) - 1}.{part}.{param}"
    for pattern, template in _RULES:
        if pattern.match(name):
            return pattern.sub(template, name)
    return ""


def convert_dpt_hybrid(state_dict: Mapping[str, Tensor]
                       ) -> Tuple["OrderedDict[str, Tensor]", List[str]]:
    """Release ``state_dict`` -> (our ``DepthEstimator`` state dict, dropped release keys).

    Args:
        state_dict: the release's weights (``pretrained.*`` and ``scratch.*`` tensors).
    """
    if not any(k.startswith("pretrained.model.patch_embed.backbone.") for k in state_dict):
        raise DPTConversionError(
            "not a DPT hybrid checkpoint (no pretrained.model.patch_embed.backbone.* weights); "
            "only the R50+ViT-B/16 hybrid releases are supported")
    converted: "OrderedDict[str, Tensor]" = OrderedDict()
    dropped, unknown = [], []
    for name, value in state_dict.items():
        if _UNUSED.match(name):
            dropped.append(name)
            continue
        if not isinstance(value, Tensor):
            raise DPTConversionError(f"{name}: expected a tensor, got a {type(value).__name__} "
                                     f"(a DPT release maps names to tensors)")
        new_name = _convert_name(name)
        if not new_name:
            unknown.append(name)
        else:
            converted[new_name] = value
    if unknown:
        raise DPTConversionError(
            f"keys not in a DPT hybrid checkpoint: {unknown[:10]}"
            f"{' ...' if len(unknown) > 10 else ''}; expected {_EXPECTED_LAYOUT}")
    return converted, dropped


def extract_state_dict(checkpoint: Any) -> Dict[str, Tensor]:
    """The weights of a release file: a bare state dict or ``{"model": ..., ...}``.

    Args:
        checkpoint: what the release file holds.
    """
    return release_weights(checkpoint, "pretrained.", DPTConversionError,
                           "an official DPT checkpoint: a state dict (or a dict with 'model') "
                           "holding 'pretrained.*' and 'scratch.*'")


def _convert(checkpoint: Any) -> Tuple["OrderedDict[str, Tensor]", Dict[str, Any]]:
    state_dict, dropped = convert_dpt_hybrid(extract_state_dict(checkpoint))
    return state_dict, {"converter": "dpt2mmseg", "dropped": dropped}


def convert_checkpoint(src: str, dst: str, trust_checkpoint: bool = False) -> Dict[str, Any]:
    """Convert the DPT release ``src`` and save it to ``dst``; the keys DPT's forward does
    not use are dropped, and listed on stdout.

    Args:
        src: the official checkpoint: a path or URL.
        dst: the converted checkpoint (mmengine's layout; its ``meta`` names the source and
            the dropped keys).
        trust_checkpoint: load ``src`` with arbitrary objects (unsafe unpickling).

    Returns:
        The ``meta`` written.
    """
    meta = convert_file(src, dst, trust_checkpoint, _convert)
    dropped = meta["dropped"]
    if dropped:
        print(f"dropped {len(dropped)} tensors DPT's forward does not use: "
              f"{', '.join(sorted({re.sub(r'[.]weight|[.]bias', '', k) for k in dropped}))}")
    return meta
