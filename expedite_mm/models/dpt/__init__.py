"""DPT (Ranftl et al., ICCV 2021) in mmseg, as the Expedit-DPT release runs it: the
R50+ViT-B/16 hybrid backbone (:mod:`~expedite_mm.models.dpt.hybrid_vit`, stock and
expedited, on :mod:`~expedite_mm.models.dpt.bit_resnet`) and the reassemble/fusion depth
head (:mod:`~expedite_mm.models.dpt.head`). Its KITTI dataset is in
:mod:`expedite_mm.datasets.kitti`, its evaluation protocol in
:mod:`expedite_mm.evaluation.depth_metric`."""
from .head import DPTDepthHead
from .hybrid_vit import ExpeditedHybridViT, HybridViT

__all__ = ["HybridViT", "ExpeditedHybridViT", "DPTDepthHead"]
