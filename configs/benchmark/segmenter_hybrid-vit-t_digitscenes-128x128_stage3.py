# The accuracy benchmark's third training stage: after stage 2 (6000 steps in all, val mIoU
# 53.16) the stock model still gained about 1.3 mIoU per 500 steps, short of the 60 the
# benchmark asks for before retention is read. Trained 3000 steps more (71 min of both
# cores, so that the poly decay ends inside one working session) from stage 2's last
# checkpoint with the same warm restart (warm-up back to 3e-4, then poly decay); another
# data order (seed 2). Everything else is inherited. Its last checkpoint (val mIoU 56.39)
# was the shipped one until stage 4 (..._stage4.py) trained it further (checkpoints.md).
#
# Stage 2's published checkpoint (sha256 c696b1b4...) holds the same weights as
# load_from below; without stage 2's work dir, take it from git history instead:
#   git show ae7a5c0:checkpoints/segmenter_hybrid-vit-t_digitscenes-128x128.pth > stage2.pth
# and pass --cfg-options load_from=stage2.pth.
_base_ = './segmenter_hybrid-vit-t_digitscenes-128x128_stage2.py'

load_from = 'work_dirs/digitscenes_t128_stage2/best_mIoU_iter_4000.pth'
max_iters = 3000
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=False, begin=0, end=100),
    dict(type='PolyLR', eta_min=1e-6, power=1.0, by_epoch=False, begin=100, end=max_iters),
]
train_cfg = dict(max_iters=max_iters)
randomness = dict(seed=2)
