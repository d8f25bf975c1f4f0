# DEPRECATED name, kept for one release: this name is mmseg's own file's, whose test slides at stride 480 (ours: 512, as the release).
# Use segmenter_vit-b_mask-release-slide_ade20k-512x512.py (same model; docs/model_zoo.md, "Names").
_base_ = './segmenter_vit-b_mask-release-slide_ade20k-512x512.py'
