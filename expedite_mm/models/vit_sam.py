"""``ExpeditedViTSAM``: mmpretrain's ``ViTSAM`` (SAM's image encoder) + window clustering.

SAM's ViT attends within ``K x K`` windows (14) in most layers and globally in a few
(ViT-H: layers 8, 16, 24, 32). Expedited (``docs/method.md`` §4.3), every window is
clustered to ``k x k`` centres after layer α -- the window clustering of the Swin
backbones (:func:`~expedite_mm.ops.window.cluster_windows`) -- so the centres form a map
on which a window-``k`` partition gives back one clustered window per window. The windowed
layers after clustering attend within windows of ``k``, the global layers attend over the
whole clustered map, and every window is reconstructed from its own centres after layer
α+β (default: the last layer), before the neck (``channel_reduction``).

Set up once at ``__init__``; the clustered layers run :func:`sam_layer`, the stock layer's
computation from its own submodules with an explicit window size. SAM's decomposed
relative positions need nothing else: the stock attention takes its query/key sizes from
its input and linearly resizes the ``rel_pos_h`` / ``rel_pos_w`` tables to them on every
call (``get_rel_pos``), so a k-window sees the (2K-1)-row tables resized to 2k-1 rows and
the global layers the (2S-1)-row tables (S the full token map) resized to the clustered
map's size -- what Expedit-SAM's ``hourglass_image_encoder.py`` computes.

The model wrapper :class:`SAMImageEncoder` (preprocessing + encoder -> image embeddings)
lets the encoder run through our FLOPs/latency tools: mmpretrain's own ``ImageClassifier``
cannot be built here without torchvision (see :mod:`~expedite_mm.models.mmpretrain_compat`).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

from mmengine.model import BaseModel
from mmengine.registry import MODELS
from mmengine.structures import BaseDataElement
from torch import Tensor, nn

from ..core import WINDOWED_VIT, ExpediteMixin, WindowTokens
from ..ops.reducers import GRID_REDUCERS
from ..ops.window import WindowClusterState, clustered_window_hw
from .mmpretrain_compat import import_stock

STOCK_MODULE = "mmpretrain.models.backbones.vit_sam"
_stock = import_stock(STOCK_MODULE)   # tolerates a missing torchvision only
ViTSAM = _stock.ViTSAM


def sam_layer(layer: nn.Module, x: Tensor, window_size: int) -> Tensor:
    """mmpretrain's SAM ``TransformerEncoderLayer`` on ``x`` (B, H, W, C), attending within
    windows of ``window_size`` (zero-padded right/bottom as the stock layer pads), or over
    the whole map for ``window_size=0`` -- the stock forward with the window made explicit.
    Returns (B, H, W, C)."""
    shortcut = x
    x = layer.ln1(x)
    if window_size > 0:
        H, W = x.shape[1:3]
        windows, padded_hw = _stock.window_partition(x, window_size)
        x = _stock.window_unpartition(layer.attn(windows), window_size, padded_hw, (H, W))
    else:
        x = layer.attn(x)
    x = shortcut + x
    return layer.ffn(layer.ln2(x), identity=x)


class SAMTokens(WindowTokens):
    """SAM's encoder: a ``(B, H, W, C)`` map, windows of K in most layers and global
    attention in a few; on the centres the windowed layers attend within windows of k and
    the global ones over the map of centres; outputs through the neck."""

    def embed(self, inputs: Tensor):
        """Patch embedding and absolute positions, exactly as the stock forward."""
        sam = self.model
        B = inputs.shape[0]
        x, patch_resolution = sam.patch_embed(inputs)
        x = x.view(B, patch_resolution[0], patch_resolution[1], sam.embed_dims)
        if sam.use_abs_pos:
            pos_embed = _stock.resize_pos_embed(
                sam.pos_embed.flatten(1, 2), sam.patch_resolution, patch_resolution,
                mode=sam.interpolate_mode, num_extra_tokens=0)
            x = sam.drop_after_pos(x + pos_embed.view(1, *patch_resolution, sam.embed_dims))
        return x, tuple(x.shape[1:3])

    def layer(self, index: int, layer: nn.Module, x: Tensor, state) -> Tensor:
        if state is None:
            return layer(x)
        return sam_layer(layer, x, self.model.clustered_window_size if layer.window_size > 0 else 0)

    def cluster(self, x: Tensor, hw):
        B, H, W, C = x.shape
        centers, state = super().cluster(x.reshape(B, H * W, C), hw)
        return centers.view(B, *state.clustered_hw, C), state

    def reconstruct(self, x: Tensor, state: WindowClusterState) -> Tensor:
        B, C = x.shape[0], x.shape[-1]
        return super().reconstruct(x.reshape(B, -1, C), state).view(B, *state.hw, C)

    def output(self, x: Tensor, hw) -> Tensor:
        """(B, H, W, C) -> the stock output: the neck's (B, out_channels, H, W) map."""
        x = x.permute(0, 3, 1, 2)
        if self.model.out_channels > 0:
            x = self.model.channel_reduction(x)
        return self.model._format_output(x)


class ExpeditedViTSAM(ExpediteMixin, ViTSAM):
    """mmpretrain's ``ViTSAM`` with window token clustering (``docs/method.md`` §4.3).

    Takes every ``ViTSAM`` argument, with the same state-dict keys (mmpretrain's converted
    SAM checkpoints load unmodified), plus the expedite arguments of
    :data:`~expedite_mm.core.args.WINDOWED_VIT`: ``cluster_after`` (α, layers before
    clustering), ``reconstruct_after`` (default: the last layer),
    ``clustered_window_size`` (k; default ``round(0.7 K)``), ``cluster_padding`` and the
    operator settings (``cluster_window``, ``cluster_iters``, ``temperature``,
    ``reconstruct_k``, ``reconstruct_normalize``, ``reconstruct_neighbours``,
    ``reconstruct_ties``, ``reducer`` / ``reconstructor``). Expedit-SAM's ViT-H setting
    "clustering location 6, 81 clusters" is ``cluster_after=6, clustered_window_size=9``.

    Every output in ``out_indices`` comes back at full resolution, through the neck; one
    taken inside the clustered span is reconstructed with the same weights. An input
    whose windows would not give fewer centres than tokens runs the stock forward (one
    warning).
    """

    expedite_family = WINDOWED_VIT
    adapter = SAMTokens

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        windows = self.expedite_args.windows
        sizes = sorted({layer.window_size for layer in self.layers if layer.window_size > 0})
        window_size = sizes[0] if len(sizes) == 1 else None
        if window_size is None and self.expedite_args.cluster_after is not None:
            raise ValueError(f"ExpeditedViTSAM clusters inside the attention windows, so the "
                             f"windowed layers need one window_size > 0, got {sizes or 0}")
        k = windows.clustered_window_size
        if window_size is not None:
            k = windows.resolve_k(window_size)  # default 14 -> 10
        self.window_size, self.clustered_window_size = window_size, k
        self.cluster_padding = windows.cluster_padding
        self._setup_expedite(len(self.layers), (k or 1, k or 1), what="layers",
                             allowed_reducers=GRID_REDUCERS)

    def clustered_hw(self, hw: Tuple[int, int]) -> Tuple[int, int]:
        """The map of window centres an ``hw`` token map is clustered to."""
        k = self.clustered_window_size
        return clustered_window_hw(hw, self.window_size, (k, k), self.cluster_padding)

    def forward(self, inputs: Tensor) -> Tuple[Tensor, ...]:
        result = self._expedited_outputs(inputs, self.out_indices) if self.expedited else None
        return super().forward(inputs) if result is None else tuple(result[0])


class SAMImageEncoder(BaseModel):
    """SAM's image encoder as an OpenMMLab model: preprocessing and a ``ViTSAM`` (or
    ``ExpeditedViTSAM``) backbone, whose output (the neck's 256-channel map) is the image
    embedding SAM's prompt encoder and mask decoder take (see ``tools/sam_predictor.py``).

    Args:
        backbone: the encoder config (``type='ViTSAM'`` or ``'ExpeditedViTSAM'``); its
            weights are the ``backbone.`` entries of mmpretrain's converted SAM checkpoints.
        data_preprocessor: e.g. ``ImgDataPreprocessor`` with SAM's mean/std, BGR -> RGB
            and ``pad_size_divisor=1024`` (SAM pads the normalised image, long side
            resized to 1024, with zeros at the bottom/right to 1024 x 1024).
        init_cfg: mmengine initialisation config.
    """

    def __init__(self, backbone: dict, data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)

    def forward(self, inputs: Tensor, data_samples: Optional[Sequence] = None,
                mode: str = "tensor") -> Union[Tuple[Tensor, ...], List[BaseDataElement]]:
        """``mode='tensor'``: the backbone outputs; ``'predict'``: the data samples with
        an ``image_embedding`` field. Training SAM is out of scope (no ``'loss'``)."""
        if mode == "tensor":
            return self._forward(inputs, data_samples)
        if mode == "predict":
            return self.predict(inputs, data_samples)
        raise ValueError(f"SAMImageEncoder runs mode 'tensor' or 'predict', got {mode!r}")

    def _forward(self, inputs: Tensor, data_samples: Optional[Sequence] = None
                 ) -> Tuple[Tensor, ...]:
        return self.backbone(inputs)

    def predict(self, inputs: Tensor, data_samples: Optional[Sequence] = None
                ) -> List[BaseDataElement]:
        """The image embeddings (the backbone's last output), one per sample:
        ``sample.image_embedding`` of shape (C, H/16, W/16)."""
        embeddings = self.backbone(inputs)[-1]
        samples = list(data_samples) if data_samples is not None else \
            [BaseDataElement() for _ in range(len(inputs))]
        for sample, embedding in zip(samples, embeddings):
            sample.set_field(embedding, "image_embedding")
        return samples


__all__ = ["ExpeditedViTSAM", "SAMImageEncoder", "SAMTokens", "ViTSAM", "sam_layer"]
