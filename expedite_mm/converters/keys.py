"""What the checkpoint converters share: renaming keys by dotted prefix, the timm-style
transformer block's names in mmseg, a release file's weights, and converting one file
(load safely, convert, save in mmengine's layout)."""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Type

# A timm-style pre-norm transformer block (the Segmenter encoder and decoder, DPT's ViT) as
# mmseg's ``TransformerEncoderLayer`` names it.
TIMM_BLOCK_RENAMES = {
    "norm1": "ln1",
    "attn.qkv.weight": "attn.attn.in_proj_weight",   # q, k, v stacked row-wise in both
    "attn.qkv.bias": "attn.attn.in_proj_bias",
    "attn.proj": "attn.attn.out_proj",
    "norm2": "ln2",
    "mlp.fc1": "ffn.layers.0.0",
    "mlp.fc2": "ffn.layers.1",
}


def rename_prefix(name: str, renames: Mapping[str, str]) -> Optional[str]:
    """``renames`` applied to a parameter name (prefix match on whole dotted parts).

    Args:
        name: the parameter name, e.g. ``'norm1.weight'``.
        renames: old prefix -> new prefix, tried in order; the first match wins.

    Returns:
        The renamed key, or None where no prefix matches.
    """
    for old, new in renames.items():
        if name == old or name.startswith(old + "."):
            return new + name[len(old):]
    return None


def release_weights(checkpoint: Any, prefix: str, error: Type[Exception],
                    expected: str) -> Dict[str, Any]:
    """The weights of a release file: its ``"model"`` entry, or the file itself where it is
    a bare state dict.

    Args:
        checkpoint: what the file holds.
        prefix: a key of the release's weights starts with it (e.g. ``'encoder.'``).
        error: the converter's error, raised where no key starts with ``prefix``.
        expected: what the file should hold, for the error's message.
    """
    from ..apis.checkpoint import describe_payload
    state_dict = checkpoint.get("model", checkpoint) if isinstance(checkpoint, Mapping) \
        else checkpoint
    if not isinstance(state_dict, Mapping) or not any(
            str(k).startswith(prefix) for k in state_dict):
        raise error(f"expected {expected}, got {describe_payload(state_dict)}")
    return dict(state_dict)


def convert_file(src: str, dst: str, trust_checkpoint: bool,
                 convert: Callable[[Any], Tuple[Dict[str, Any], Dict[str, Any]]]
                 ) -> Dict[str, Any]:
    """Load ``src`` safely, convert it and save the result to ``dst`` (mmengine's layout).

    Args:
        src: the checkpoint to convert: a path or URL (http(s)://, open-mmlab://, ...).
        dst: where the converted checkpoint goes (written whole or not at all).
        trust_checkpoint: load ``src`` with ``weights_only=False`` (only for files you
            trust); by default only tensors and an allow-list of safe types are unpickled.
        convert: the loaded checkpoint -> (converted state dict, extra ``meta`` entries).

    Returns:
        The ``meta`` written with the weights.
    """
    from ..apis.checkpoint import load_checkpoint_file
    from ..apis.convert import save_converted
    checkpoint = load_checkpoint_file(src, map_location="cpu", trust=trust_checkpoint)
    state_dict, extra = convert(checkpoint)
    meta = {"converted_from": str(src), **extra}
    save_converted(state_dict, dst, meta)
    return meta
