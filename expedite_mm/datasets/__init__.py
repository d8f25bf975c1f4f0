"""Datasets and their transforms, registered in mmseg's registries when imported:
DigitScenes, the accuracy benchmark's segmentation set (:mod:`~expedite_mm.datasets.digit_scenes`;
written by :mod:`~expedite_mm.datasets.digit_scenes_writer`, which needs no OpenMMLab
package), and KITTI depth with its Garg/Kitti-benchmark crop (:mod:`~expedite_mm.datasets.kitti`).

May import ``compat`` and the OpenMMLab packages; nothing else of the package."""
