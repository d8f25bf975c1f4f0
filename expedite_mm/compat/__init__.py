"""Compatibility with the OpenMMLab packages where they need help:
:mod:`~expedite_mm.compat.mmpretrain` makes mmpretrain's classification stack usable
without torchvision."""
