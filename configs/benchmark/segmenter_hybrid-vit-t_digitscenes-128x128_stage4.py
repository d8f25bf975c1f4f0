# The accuracy benchmark's fourth training stage: after stage 3 (9000 steps in all, val
# mIoU 56.39) the stock model was still gaining (55.18 -> 56.39 over its last 1000 steps),
# short of the 60 the benchmark asks for before retention is read. Trained 3000 steps more
# from stage 3's last checkpoint with the same warm restart (warm-up back to 3e-4, then
# poly decay) and another data order (seed 3); 60 min of both cores. Everything else is
# inherited. Its last checkpoint (val mIoU 58.53) was the shipped one until stage 5
# (..._stage5.py) trained it further (checkpoints.md).
#
# Stage 3's published checkpoint (sha256 f39cef4b...) holds the same weights as
# load_from below; without stage 3's work dir, take it from git history instead:
#   git show cf3f559:checkpoints/segmenter_hybrid-vit-t_digitscenes-128x128.pth > stage3.pth
# and pass --cfg-options load_from=stage3.pth.
_base_ = './segmenter_hybrid-vit-t_digitscenes-128x128_stage3.py'

# stage 3's length (3000 steps) and schedule are inherited as they are
load_from = 'work_dirs/digitscenes_t128_stage3/best_mIoU_iter_3000.pth'
randomness = dict(seed=3)
