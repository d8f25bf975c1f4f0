"""DPT (Ranftl et al., ICCV 2021) in mmseg, as the Expedit-DPT release runs it: the
R50+ViT-B/16 hybrid backbone (:mod:`~expedite_mm.dpt.hybrid_vit`, stock and expedited,
on :mod:`~expedite_mm.dpt.bit_resnet`), the reassemble/fusion depth head
(:mod:`~expedite_mm.dpt.head`), the KITTI dataset with its Garg/Kitti-benchmark crop
(:mod:`~expedite_mm.dpt.kitti`) and DPT's evaluation protocol
(:mod:`~expedite_mm.dpt.metric`). Importing it registers them in mmseg's registries."""
from .head import DPTDepthHead
from .hybrid_vit import ExpeditedHybridViT, HybridViT
from .kitti import KB_CROP_SIZE, KBCrop, KITTIDepthDataset
from .metric import MonoDepthMetric

__all__ = ["HybridViT", "ExpeditedHybridViT", "DPTDepthHead", "KITTIDepthDataset", "KBCrop",
           "KB_CROP_SIZE", "MonoDepthMetric"]
