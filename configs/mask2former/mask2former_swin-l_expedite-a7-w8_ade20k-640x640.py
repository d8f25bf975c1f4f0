# Checkpoint: https://download.openmmlab.com/mmsegmentation/v0.5/mask2former/mask2former_swin-l-in22k-384x384-pre_8xb2-160k_ade20k-640x640/mask2former_swin-l-in22k-384x384-pre_8xb2-160k_ade20k-640x640_20221203_235933-7120c214.pth
# Mask2Former Swin-L (IN-22k, window 12), ADE20K semantic segmentation at 640x640,
# expedited without fine-tuning: released mIoU 55.8 -> 55.5, backbone 937 -> 620 GFLOPs
# (paper's counter, 1152x1152 input).
_base_ = 'mmseg::mask2former/mask2former_swin-l-in22k-384x384-pre_8xb2-160k_ade20k-640x640.py'
custom_imports = dict(imports=['expedite_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        type='ExpeditedSwin',
        # The released config (Expedit-Mask2Former's ADE20K semantic yaml) sets
        # CLUSTERING_LOCATION 7, counted over all Swin-L blocks (depths 2, 2, 18, 2): after
        # the 3rd block of the third stage; its other 15 blocks run on 8x8 windows. (The
        # paper's table labels this row alpha 8; location 7 is what the release runs, and it
        # reproduces the released 620 GFLOPs: fvcore 618.3 of 936.9, `python
        # tools/analysis/get_flops.py CONFIG --shape 1152 --backbone-only`.)
        stage=2,
        cluster_after=3,
        clustered_window_size=8,
        # That yaml's operator settings (not our defaults): lambda 5x5, 5 iterations,
        # tau 100 (its TEMPERATURE 0.01), k 10, and L2-normalised reconstruction weights as
        # in the released code (docs/method.md §2).
        cluster_window=5,
        cluster_iters=5,
        temperature=100.0,
        reconstruct_k=10,
        reconstruct_normalize='l2',
        # Expedit-Mask2Former's code masks the shifted clustered windows with the stage's
        # own shift (6) while rolling them by 4, and its reconstruction keeps every centre
        # tied with the 10th (pure-padding centres tie): reproduced on purpose, so that
        # these weights compute what the release computed (docs/method.md §4.2).
        attention_mask_shift='stock',
        reconstruct_ties='keep'))

load_from = 'https://download.openmmlab.com/mmsegmentation/v0.5/mask2former/mask2former_swin-l-in22k-384x384-pre_8xb2-160k_ade20k-640x640/mask2former_swin-l-in22k-384x384-pre_8xb2-160k_ade20k-640x640_20221203_235933-7120c214.pth'  # noqa
