# DEPRECATED name, kept for one release: a8 counted the blocks of stage 3 only; aN now counts every block before clustering.
# Use htc++_swinv2-l_expedite-a12-w23_coco.py (same model; docs/model_zoo.md, "Names").
_base_ = './htc++_swinv2-l_expedite-a12-w23_coco.py'
