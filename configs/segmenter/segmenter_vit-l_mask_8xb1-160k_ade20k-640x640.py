# DEPRECATED name, kept for one release: looked like an mmseg file; it slides 640 windows at stride 640 as the release (mmseg: 608).
# Use segmenter_vit-l_mask-release-slide_ade20k-640x640.py (same model; docs/model_zoo.md, "Names").
_base_ = './segmenter_vit-l_mask-release-slide_ade20k-640x640.py'
