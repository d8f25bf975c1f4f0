"""EViT and ToMe as Expedit-SWAG ran them for classification, pure torch (docs/method.md §4.4).

Not one reduction to a budget at one place (those are :mod:`expedite_mm.ops.reducers`),
but steps inside several layers, between the attention and the MLP, with the class token
taking part (Expedit-SWAG's ``models/evit.py`` and its ToMe patch). The backbone computes
the layer's attention (probabilities or keys) and hands it over; the steps are the
reducers' :func:`~expedite_mm.ops.reducers.keep_top_tokens` and
:func:`~expedite_mm.ops.reducers.merge_tokens`.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .cluster import compute_dtype, validate_choice
from .reducers import Entry, build_entry, keep_top_tokens, merge_tokens, parse_spec

EVIT_LAYERWISE_SCORES = ("mean_attention", "cls_attention")


def _validate_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def _validate_layers(layers: Any, depth: int, name: str) -> Tuple[int, ...]:
    try:
        layer_numbers = tuple(layers)
    except TypeError:
        layer_numbers = ()
    if not layer_numbers or not all(_is_count(n) for n in layer_numbers) \
            or not all(1 <= n <= depth for n in layer_numbers) \
            or len(set(layer_numbers)) != len(layer_numbers):
        raise ValueError(f"{name} must be distinct layer numbers in [1, {depth}] (1-based: the "
                         f"layer whose attention is followed by the reduction), got {layers!r}")
    return tuple(sorted(int(n) for n in layer_numbers))


def _is_count(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


class LayerwiseTokenDropping(nn.Module):
    """EViT as Expedit-SWAG ran it on ImageNet: tokens dropped inside several layers.

    In each layer of ``layers`` the attention runs on all tokens; after its residual, the
    ``ceil(keep_rate * n)`` of the ``n`` non-class tokens with the highest score are kept
    (the rate applies to the tokens present, so it compounds) and the layer's MLP and all
    later layers see only those. With ``fuse_token`` the dropped tokens are summed,
    weighted by their raw scores, into one more token that later layers treat like any
    other.

    Args:
        depth: the backbone's number of layers.
        keep_rate: in (0, 1] (Expedit-SWAG's ``base_keep_rate``; default 0.7).
        layers: 1-based numbers of the dropping layers; default the layers after a
            quarter, a half and three quarters of the depth (24 layers: 7, 13, 19), which
            are Expedit-SWAG's per-model ``drop_loc`` defaults (0-based 6, 12, 18) + 1.
        fuse_token: append EViT's fused token (default True, the release's model default).
        score: ``'mean_attention'`` (default; what the release computes: the attention a
            token receives, averaged over heads and over all queries, the class token's
            included) or ``'cls_attention'`` (the EViT paper's: the class token's row,
            averaged over heads).

    ``forward(x (B, 1+n, C), attention (B, heads, 1+n, 1+n)) -> (B, 1+k[+1], C)``: x the
    tokens after the layer's attention residual, class token first; attention the
    layer's softmax probabilities.
    """

    needs: Tuple[str, ...] = ("attention",)

    def __init__(self, depth: int, keep_rate: float = 0.7, layers: Optional[Sequence[int]] = None,
                 fuse_token: bool = True, score: str = "mean_attention") -> None:
        super().__init__()
        if isinstance(keep_rate, bool) or not isinstance(keep_rate, numbers.Real) \
                or not 0 < keep_rate <= 1:
            raise ValueError(f"keep_rate must be a number in (0, 1], got {keep_rate!r}")
        self.keep_rate = float(keep_rate)
        if layers is None:
            layers = sorted({depth // 4 + 1, depth // 2 + 1, 3 * depth // 4 + 1})
        self.layers = _validate_layers(layers, depth, "layers")
        self.fuse_token = _validate_bool(fuse_token, "fuse_token")
        self.score = validate_choice(score, "score", EVIT_LAYERWISE_SCORES)

    def extra_repr(self) -> str:
        return (f"keep_rate={self.keep_rate}, layers={self.layers}, "
                f"fuse_token={self.fuse_token}, score={self.score!r}")

    def acts_in(self, index: int) -> bool:
        """Whether the layer of 0-based ``index`` drops tokens."""
        return index + 1 in self.layers

    def forward(self, x: Tensor, attention: Tensor) -> Tensor:
        n = x.shape[1] - 1
        n_keep = math.ceil(self.keep_rate * n)
        if n_keep >= n:
            return x
        attention = attention.to(compute_dtype(attention.dtype))
        if self.score == "mean_attention":
            score = attention.mean(dim=(1, 2))[:, 1:]
        else:
            score = attention[:, :, 0, 1:].mean(dim=1)
        kept, _ = keep_top_tokens(x[:, 1:], score, n_keep, fuse=self.fuse_token,
                                  normalize_fused=False)
        return torch.cat([x[:, :1], kept], dim=1)


class LayerwiseTokenMerging(nn.Module):
    """ToMe as Expedit-SWAG ran it on ImageNet: ``r`` tokens merged in every layer.

    In every layer, after the attention residual and before the MLP, one round of
    bipartite soft matching (:func:`merge_tokens`, on the layer's keys averaged over
    heads; the class token takes part in the alternation but is never merged) merges
    ``r`` tokens by size-weighted averaging. With ``proportional_attention`` (ToMe's
    off-the-shelf setting, which the release uses) every attention adds ``log(size)`` of
    each key token to its logits once tokens have been merged.

    Args:
        depth: the backbone's number of layers.
        r: tokens merged per layer: an int (every layer) or one int per layer from the
            first (missing ones: 0); capped per layer at half the tokens present.
        proportional_attention: default True.

    ``forward(x (B, n, C), keys (B, n, d), size (B, n), index) -> (x (B, n - r, C), size)``
    in the layer of 0-based ``index``; ``schedule``: r of every layer.
    """

    needs: Tuple[str, ...] = ("keys",)

    def __init__(self, depth: int, r: Any = 0, proportional_attention: bool = True) -> None:
        super().__init__()
        schedule = [r] * depth if _is_count(r) else r
        try:
            schedule = list(schedule)
        except TypeError:
            schedule = None
        if schedule is None or len(schedule) > depth or not all(
                _is_count(v) and v >= 0 for v in schedule):
            raise ValueError(f"r must be an int >= 0 or a list of at most {depth} ints >= 0 "
                             f"(tokens merged in each layer), got {r!r}")
        self.r = int(r) if _is_count(r) else tuple(int(v) for v in schedule)
        self.schedule = tuple(int(v) for v in schedule) + (0,) * (depth - len(schedule))
        self.proportional_attention = _validate_bool(proportional_attention,
                                                     "proportional_attention")

    def extra_repr(self) -> str:
        return f"r={self.r}, proportional_attention={self.proportional_attention}"

    def acts_in(self, index: int) -> bool:
        """Whether the layer of 0-based ``index`` merges tokens."""
        return self.schedule[index] > 0

    def forward(self, x: Tensor, keys: Tensor, size: Tensor, index: int) -> Tuple[Tensor, Tensor]:
        return merge_tokens(x, keys, size, self.schedule[index], protect_first=True)


# Reducers that act inside several layers (classification backbones).
LAYERWISE_REDUCERS: Dict[str, Entry] = {
    "EViT": Entry(LayerwiseTokenDropping, "layerwise",
                  ("keep_rate", "layers", "fuse_token", "score")),
    "ToMe": Entry(LayerwiseTokenMerging, "layerwise", ("r", "proportional_attention")),
}


def build_layerwise_reducer(spec: Optional[Mapping[str, Any]], depth: int
                            ) -> Optional[nn.Module]:
    """A :data:`LAYERWISE_REDUCERS` module from its config dict (``None``: none) for a
    backbone of ``depth`` layers; ``ValueError`` for unknown types, options or values."""
    if spec is None:
        return None
    kind, options = parse_spec(spec, "layerwise_reducer", LAYERWISE_REDUCERS, "")
    return build_entry(LAYERWISE_REDUCERS[kind], "layerwise_reducer", {}, depth=depth, **options)


__all__ = ["LayerwiseTokenDropping", "LayerwiseTokenMerging", "LAYERWISE_REDUCERS",
           "EVIT_LAYERWISE_SCORES", "build_layerwise_reducer"]
