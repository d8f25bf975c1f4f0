# DEPRECATED name, kept for one release: a8 counted the blocks of stage 3 only; aN now counts every block before clustering.
# Use mask-rcnn_swinv2-b-w16_expedite-a12-w12_fpn_ms-crop-3x_coco.py (same model; docs/model_zoo.md, "Names").
_base_ = './mask-rcnn_swinv2-b-w16_expedite-a12-w12_fpn_ms-crop-3x_coco.py'
