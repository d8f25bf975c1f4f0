"""Metrics, registered in mmseg's registries when imported: DPT's monocular-depth protocol
(:mod:`~expedite_mm.evaluation.depth_metric`).

May import ``compat`` and the OpenMMLab packages; nothing else of the package."""
