"""mmpretrain's classification stack where torchvision is missing.

mmpretrain 1.2 imports torchvision at the top of four modules a classification config
reaches: ``evaluation/metrics/visual_grounding_eval.py`` (so the package
``mmpretrain.evaluation.metrics``, and through ``ClsHead`` every classification head and
the package ``mmpretrain.models``, fail to import), and ``datasets/transforms/formatting.py``
/ ``processing.py`` (``PackInputs``, ``ResizeEdge``). Its registries import those packages
on every lookup, so without torchvision no mmpretrain config builds.

With torchvision installed nothing here does anything: mmpretrain imports and registers
itself as usual, and our configs use its own classes. Without it, :func:`prepare`
(called once by ``expedite_mm.models``):

* imports the mmpretrain modules a classification config needs one by one
  (:func:`import_stock`: an import that fails is tolerated only if it fails on torchvision
  and the module itself was loaded before -- ``ImageClassifier``, ``VisionTransformer``,
  ``ClsDataPreprocessor``, ``Accuracy``, ``ImageNet``/``CustomDataset``,
  ``UniversalVisualizer``);
* registers mmcv's ``LoadImageFromFile``/``CenterCrop``/... into mmpretrain's
  ``TRANSFORMS`` (what ``mmpretrain.datasets.transforms`` would have done);
* registers stand-ins, under mmpretrain's names, for the three classes that cannot be
  imported without torchvision: ``VisionTransformerClsHead`` (:class:`ClsHeadStandIn`: a
  linear head, optionally with the hidden layer, the same state-dict keys, softmax
  predictions, cross-entropy loss), ``ResizeEdge`` and ``PackInputs`` (the same
  computation on numpy images through mmcv);
* marks mmpretrain's registries whose import location cannot be imported as imported,
  so that lookups serve what is registered instead of re-raising the torchvision error.

Anything else of mmpretrain that needs torchvision stays unavailable (a lookup of such a
name raises mmengine's ``KeyError``: "... is not in the mmpretrain::... registry").
"""
from __future__ import annotations

import importlib
import importlib.util
import math
import sys
from collections import OrderedDict
from types import ModuleType
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from mmcv.transforms import BaseTransform
from torch import Tensor, nn

from ..compat import mark_registry_imported

TORCHVISION_INSTALLED = importlib.util.find_spec("torchvision") is not None

# What a classification config of ours needs from mmpretrain, module by module.
STOCK_MODULES = (
    "mmpretrain.models.backbones.vision_transformer",   # VisionTransformer
    "mmpretrain.models.classifiers.image",              # ImageClassifier
    "mmpretrain.models.utils.data_preprocessor",        # ClsDataPreprocessor
    "mmpretrain.evaluation.metrics.single_label",       # Accuracy
    "mmpretrain.datasets.imagenet",                     # ImageNet (CustomDataset)
    "mmpretrain.visualization",                         # UniversalVisualizer
)
# mmcv transforms mmpretrain re-registers under its own scope
MMCV_TRANSFORMS = ("CenterCrop", "LoadImageFromFile", "Normalize", "RandomFlip",
                   "RandomGrayscale", "RandomResize", "Resize")


def import_stock(name: str) -> ModuleType:
    """Import the mmpretrain module ``name``, tolerating only a missing torchvision.

    Importing a submodule imports its parent packages first; mmpretrain's package
    ``__init__`` files import torchvision-dependent modules after the ones we need, so
    without torchvision the import raises once the module is already loaded. That one
    failure is tolerated (any other is raised).
    """
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        module = sys.modules.get(name)
        if module is None or (error.name or "").split(".")[0] != "torchvision":
            raise
        return module


# --------------------------------------------------------------------------- stand-ins
class ClsHeadStandIn(nn.Module):
    """Stands in for mmpretrain's ``VisionTransformerClsHead`` without torchvision.

    The same arguments, state-dict keys (``layers.head``, and ``layers.pre_logits`` with
    ``hidden_dim``) and computation: the class token of the last backbone output (the
    last item if it is a list), through ``pre_logits`` + ``act`` when ``hidden_dim`` is
    set, then the linear ``head``; ``predict`` sets ``pred_score`` (softmax) and
    ``pred_label`` (argmax) on mmpretrain ``DataSample``s; ``loss`` is the cross-entropy
    (``loss=dict(type='CrossEntropyLoss', loss_weight=w)``, or ``LabelSmoothLoss`` in its
    ``'original'`` mode: cross-entropy with ``label_smoothing``).
    """

    def __init__(self, num_classes: int, in_channels: int, hidden_dim: Optional[int] = None,
                 act_cfg: dict = dict(type="Tanh"),
                 loss: dict = dict(type="CrossEntropyLoss", loss_weight=1.0),
                 topk: Sequence[int] = (1,), init_cfg: Optional[dict] = None) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        loss = dict(loss)
        kind = loss.pop("type", None)
        # LabelSmoothLoss 'original': the one-hot target mixed with the uniform one by
        # label_smooth_val, which is cross-entropy's label_smoothing
        smooth = kind == "LabelSmoothLoss" and loss.get("mode", "original") == "original" \
            and not set(loss) - {"label_smooth_val", "mode", "loss_weight", "num_classes"}
        if not (smooth or kind == "CrossEntropyLoss" and not set(loss) - {"loss_weight"}):
            raise ValueError(f"without torchvision the classification head supports "
                             f"loss=dict(type='CrossEntropyLoss', loss_weight=...) and "
                             f"dict(type='LabelSmoothLoss', label_smooth_val=..., "
                             f"mode='original', loss_weight=...) only, got {dict(loss, type=kind)!r}")
        self.label_smoothing = float(loss.get("label_smooth_val", 0.0))
        if act_cfg.get("type") != "Tanh":
            raise ValueError(f"without torchvision the classification head supports "
                             f"act_cfg=dict(type='Tanh') only, got {act_cfg!r}")
        self.num_classes, self.in_channels, self.hidden_dim = num_classes, in_channels, hidden_dim
        self.loss_weight = float(loss.get("loss_weight", 1.0))
        self.topk = tuple(topk)
        if hidden_dim is None:
            layers = [("head", nn.Linear(in_channels, num_classes))]
        else:
            layers = [("pre_logits", nn.Linear(in_channels, hidden_dim)), ("act", nn.Tanh()),
                      ("head", nn.Linear(hidden_dim, num_classes))]
        self.layers = nn.Sequential(OrderedDict(layers))

    def init_weights(self) -> None:
        """As mmpretrain: the classifier zero-initialised, ``pre_logits`` LeCun-normal."""
        nn.init.zeros_(self.layers.head.weight)
        nn.init.zeros_(self.layers.head.bias)
        if self.hidden_dim is not None:
            nn.init.trunc_normal_(self.layers.pre_logits.weight,
                                  std=math.sqrt(1 / self.layers.pre_logits.in_features))
            nn.init.zeros_(self.layers.pre_logits.bias)

    def pre_logits(self, feats: Tuple) -> Tensor:
        feat = feats[-1]
        cls_token = feat[-1] if isinstance(feat, list) else feat
        if self.hidden_dim is None:
            return cls_token
        return self.layers.act(self.layers.pre_logits(cls_token))

    def forward(self, feats: Tuple) -> Tensor:
        return self.layers.head(self.pre_logits(feats))

    def loss(self, feats: Tuple, data_samples: List) -> dict:
        score = self(feats)
        target = torch.cat([sample.gt_label for sample in data_samples]).to(score.device)
        return {"loss": self.loss_weight * F.cross_entropy(score, target,
                                                            label_smoothing=self.label_smoothing)}

    def predict(self, feats: Tuple, data_samples: Optional[List] = None) -> List:
        from mmpretrain.structures import DataSample
        scores = F.softmax(self(feats), dim=1)
        labels = scores.argmax(dim=1, keepdim=True).detach()
        samples = data_samples if data_samples is not None else [None] * len(scores)
        out = []
        for sample, score, label in zip(samples, scores, labels):
            sample = DataSample() if sample is None else sample
            out.append(sample.set_pred_score(score).set_pred_label(label))
        return out


class ResizeEdgeStandIn(BaseTransform):
    """Stands in for mmpretrain's ``ResizeEdge`` without torchvision: resize so that the
    ``edge`` ('short', 'long', 'width' or 'height') becomes ``scale`` and the other side
    ``int(scale * other / edge)`` (torchvision's ``Resize(int)`` sizes), with mmcv's
    ``imresize`` (``backend``: 'cv2' or 'pillow'). Sets img, img_shape, scale and
    scale_factor."""

    EDGES = ("short", "long", "width", "height")

    def __init__(self, scale: int, edge: str = "short", backend: str = "cv2",
                 interpolation: str = "bilinear") -> None:
        if edge not in self.EDGES:
            raise ValueError(f"edge must be one of {self.EDGES}, got {edge!r}")
        self.scale, self.edge = scale, edge
        self.backend, self.interpolation = backend, interpolation

    def transform(self, results: dict) -> dict:
        import mmcv
        h, w = results["img"].shape[:2]
        along_width = {"short": w < h, "long": w > h, "width": True, "height": False}[self.edge]
        if along_width:
            size = (self.scale, int(self.scale * h / w))
        else:
            size = (int(self.scale * w / h), self.scale)
        img, w_scale, h_scale = mmcv.imresize(results["img"], size, return_scale=True,
                                              interpolation=self.interpolation,
                                              backend=self.backend)
        results.update(img=img, img_shape=img.shape[:2], scale=img.shape[:2][::-1],
                       scale_factor=(w_scale, h_scale))
        return results

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(scale={self.scale}, edge={self.edge!r}, "
                f"backend={self.backend!r}, interpolation={self.interpolation!r})")


class PackInputsStandIn(BaseTransform):
    """Stands in for mmpretrain's ``PackInputs`` without torchvision: the image (H, W, C)
    becomes a (C, H, W) tensor ``inputs``; ``data_samples`` is a ``DataSample`` with the
    ``gt_label`` (when present) and the ``meta_keys`` found in the results."""

    DEFAULT_META_KEYS = ("sample_idx", "img_path", "ori_shape", "img_shape", "scale_factor",
                         "flip", "flip_direction")

    def __init__(self, input_key: str = "img", algorithm_keys: Sequence[str] = (),
                 meta_keys: Sequence[str] = DEFAULT_META_KEYS) -> None:
        if algorithm_keys:
            raise ValueError("without torchvision PackInputs supports no algorithm_keys")
        self.input_key, self.meta_keys = input_key, tuple(meta_keys)

    def transform(self, results: dict) -> dict:
        from mmpretrain.structures import DataSample
        packed = {}
        if self.input_key in results:
            img = results[self.input_key]
            if isinstance(img, np.ndarray):
                img = img[..., None] if img.ndim == 2 else img
                img = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
            packed["inputs"] = img
        sample = DataSample()
        if "gt_label" in results:
            sample.set_gt_label(results["gt_label"])
        sample.set_metainfo({k: results[k] for k in self.meta_keys if k in results})
        packed["data_samples"] = sample
        return packed

    def __repr__(self) -> str:
        return f"{type(self).__name__}(input_key={self.input_key!r}, meta_keys={self.meta_keys})"


STAND_INS = (("MODELS", "VisionTransformerClsHead", ClsHeadStandIn),
             ("TRANSFORMS", "ResizeEdge", ResizeEdgeStandIn),
             ("TRANSFORMS", "PackInputs", PackInputsStandIn))


# --------------------------------------------------------------------------- setup
_prepared: Optional[List[str]] = None


def prepare() -> List[str]:
    """Make mmpretrain's registries usable for classification configs (module docstring);
    does nothing with torchvision installed. Idempotent. Returns the names of the
    stand-ins registered (``[]`` with torchvision)."""
    global _prepared
    if _prepared is not None:
        return _prepared
    if TORCHVISION_INSTALLED:
        _prepared = []
        return _prepared
    for name in STOCK_MODULES:
        import_stock(name)
    from mmcv import transforms as mmcv_transforms
    from mmengine.registry import Registry
    from mmpretrain import registry as mmpretrain_registry
    registries = {name: value for name, value in vars(mmpretrain_registry).items()
                  if isinstance(value, Registry) and value.scope == "mmpretrain"}
    transforms = registries["TRANSFORMS"]
    for name in MMCV_TRANSFORMS:
        if name not in transforms.module_dict:
            transforms.register_module(module=getattr(mmcv_transforms, name))
    registered = []
    for registry_name, name, cls in STAND_INS:
        registry = registries[registry_name]
        if name not in registry.module_dict:
            registry.register_module(name=name, module=cls)
            registered.append(name)
    for registry in registries.values():
        try:
            registry.import_from_location()
        except ModuleNotFoundError as error:
            if (error.name or "").split(".")[0] != "torchvision":
                raise
            mark_registry_imported(registry)   # serve what is registered (docstring)
    _prepared = registered
    return _prepared


__all__ = ["TORCHVISION_INSTALLED", "import_stock", "prepare", "ClsHeadStandIn",
           "ResizeEdgeStandIn", "PackInputsStandIn", "STOCK_MODULES"]
