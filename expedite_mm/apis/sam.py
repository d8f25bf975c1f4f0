"""Our SAM image encoder inside Meta's ``segment_anything`` (``tools/sam_predictor.py``):
its ``Sam`` (and so its ``SamPredictor``) with the encoder of one of our ``configs/sam/``
models in place of its own, so the masks show what expediting the encoder changes.

Needs no ``segment_anything`` itself: it only replaces a module of a ``Sam`` it is given.
"""
from __future__ import annotations

import torch
from torch import nn


class EncoderAdapter(nn.Module):
    """Our ``SAMImageEncoder``'s encoder where ``segment_anything`` expects its own:
    ``img_size`` and ``forward(x) -> (B, 256, 64, 64)`` on SAM-preprocessed images.

    Args:
        model: a ``SAMImageEncoder`` (its ``backbone`` is the encoder).
        img_size: the input side SAM resizes images to.
    """

    def __init__(self, model: nn.Module, img_size: int = 1024) -> None:
        super().__init__()
        self.encoder = model.backbone
        self.img_size = img_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)[-1]


def with_encoder(sam: nn.Module, model: nn.Module) -> nn.Module:
    """``sam`` (a ``segment_anything`` ``Sam``) with its image encoder replaced by
    ``model``'s (a ``SAMImageEncoder``), at the same input size.

    Args:
        sam: a ``segment_anything`` ``Sam`` (changed in place and returned).
        model: one of our ``configs/sam/`` models (expedited or stock).
    """
    sam.image_encoder = EncoderAdapter(model, sam.image_encoder.img_size).to(sam.device)
    return sam
