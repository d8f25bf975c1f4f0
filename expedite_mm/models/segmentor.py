"""``ExpeditedEncoderDecoder``: mmseg's ``EncoderDecoder`` that reconstructs the decode
head's logits when the backbone keeps the centre map (``docs/method.md`` §4.1).

This is where Expedit-Segmenter's released computation puts token reconstruction: the
backbone (``ExpeditedViT`` with ``reconstruct_placement='logits'``) clusters after layer
alpha and runs every later layer and the final norm on the ``h x w`` centres, the decode
head runs on the centre map, and its class logits ``(B, classes, h, w)`` are
reconstructed to the ``H x W`` token grid before the usual resize to the image. With any
other backbone (stock, expediting disabled, in-backbone reconstruction) the class is
exactly ``EncoderDecoder``. It adds no parameters: state-dict keys are the stock ones.
"""
from __future__ import annotations

from typing import Any, List, Optional

from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from mmseg.utils import add_prefix
from torch import Tensor, nn


def _reads_one_map(head: nn.Module) -> bool:
    """Whether a decode head reads exactly one feature map (and so can run on the centres)."""
    return (isinstance(head, BaseDecodeHead) and head.input_transform is None
            and isinstance(head.in_index, int))


@MODELS.register_module()
class ExpeditedEncoderDecoder(EncoderDecoder):
    """``EncoderDecoder`` with the decode head on the centre map and logit reconstruction.

    Takes every ``EncoderDecoder`` argument. When the backbone reports
    ``reconstructs_logits`` (``ExpeditedViT(..., reconstruct_placement='logits')``), every
    forward (``predict`` in whole and slide mode, each crop clustering on its own;
    ``_forward``; ``loss``) runs the backbone's ``forward_with_state``, the heads on the
    ``(B, C, h, w)`` centre map, and ``backbone.reconstruct_map`` on their logits, giving
    ``(B, classes, H, W)`` on the token grid; ``predict`` then resizes as the stock head
    does. An input too small to cluster runs the stock path. Otherwise it is
    ``EncoderDecoder`` unchanged.

    Raises:
        ValueError: at build, with the logits placement, for a neck or a decode/auxiliary
            head that does not read exactly one feature map (multi-scale heads, DPT,
            UPerNet, ...): those need full-resolution features; use
            ``reconstruct_placement='backbone'``.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.reconstructs_logits:
            self._check_heads()

    @property
    def reconstructs_logits(self) -> bool:
        """Whether heads run on the centre map and their logits are reconstructed."""
        return bool(getattr(self.backbone, "reconstructs_logits", False))

    def _check_heads(self) -> None:
        hint = ("with reconstruct_placement='logits' the backbone hands over only the h x w "
                "centre map after its last layer; {what} needs the full token grid or several "
                "scales: use reconstruct_placement='backbone' (reconstruction inside the backbone)")
        if self.with_neck:
            raise ValueError(hint.format(what=f"the neck {type(self.neck).__name__}"))
        for name, head in self._heads():
            if not _reads_one_map(head):
                what = (f"{name} {type(head).__name__} "
                        f"(in_index={getattr(head, 'in_index', None)!r}, "
                        f"input_transform={getattr(head, 'input_transform', None)!r})")
                raise ValueError(hint.format(what=what))

    def _heads(self) -> List[tuple]:
        heads = [("decode_head", self.decode_head)]
        if self.with_auxiliary_head:
            if isinstance(self.auxiliary_head, nn.ModuleList):
                heads += [(f"auxiliary_head[{i}]", h) for i, h in enumerate(self.auxiliary_head)]
            else:
                heads.append(("auxiliary_head", self.auxiliary_head))
        return heads

    def _head_logits(self, head: nn.Module, features: tuple, state: Optional[Any]) -> Tensor:
        """The head's logits on the token grid: reconstructed when ``state`` is given."""
        logits = head.forward(features)
        return logits if state is None else self.backbone.reconstruct_map(logits, state)

    def encode_decode(self, inputs: Tensor, batch_img_metas: List[dict]) -> Tensor:
        if not self.reconstructs_logits:
            return super().encode_decode(inputs, batch_img_metas)
        features, state = self.backbone.forward_with_state(inputs)
        logits = self._head_logits(self.decode_head, features, state)
        return self.decode_head.predict_by_feat(logits, batch_img_metas)

    def _forward(self, inputs: Tensor, data_samples=None) -> Tensor:
        if not self.reconstructs_logits:
            return super()._forward(inputs, data_samples)
        features, state = self.backbone.forward_with_state(inputs)
        return self._head_logits(self.decode_head, features, state)

    def loss(self, inputs: Tensor, data_samples) -> dict:
        if not self.reconstructs_logits:
            return super().loss(inputs, data_samples)
        features, state = self.backbone.forward_with_state(inputs)
        losses = {}
        for name, head in self._heads():
            prefix = {"decode_head": "decode", "auxiliary_head": "aux"}.get(
                name, name.replace("auxiliary_head[", "aux_").rstrip("]"))
            logits = self._head_logits(head, features, state)
            losses.update(add_prefix(head.loss_by_feat(logits, data_samples), prefix))
        return losses
