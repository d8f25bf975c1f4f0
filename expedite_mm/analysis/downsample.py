"""The uniform-downsampling baseline (paper Figure 6): the stock network on a smaller input.

:func:`uniform_downsample` rescales everything in a config that fixes the size the network
sees at test time: the test pipeline's ``Resize`` (``scale`` / ``scale_factor``), the
sliding-window ``crop_size`` / ``stride`` and the data preprocessor's pad ``size``. The
predictions are still resized back to, and evaluated at, the original image size by
mmseg/mmdet, so the metric of a downsampled config is directly comparable. Weights are
untouched (a ViT's position embedding is interpolated to the token grid at run time).
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Tuple

from mmengine.config import Config

from ..apis.config import default_input_shape

RESIZE_TYPES = ("Resize", "RandomResize", "mmseg.Resize", "mmdet.Resize", "mmcv.Resize")


def _scaled(value: Any, factor: float) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return max(1, int(round(value * factor)))
    if isinstance(value, float):
        return value * factor
    if isinstance(value, (list, tuple)):
        return type(value)(_scaled(v, factor) for v in value)
    return value


def _pipelines(cfg: Config) -> List[list]:
    """The pipelines of the test and val dataloaders (through dataset wrappers)."""
    found = []
    for loader_key in ("test_dataloader", "val_dataloader"):
        dataset = (cfg.get(loader_key) or {}).get("dataset") or {}
        while "pipeline" not in dataset and "dataset" in dataset:
            dataset = dataset["dataset"]
        if dataset.get("pipeline") is not None:
            found.append(dataset["pipeline"])
    return found


def uniform_downsample(cfg: Config, size: int) -> Tuple[Config, Dict[str, Any]]:
    """A copy of ``cfg`` whose network sees inputs scaled by ``size / base`` (``base``: the
    short side of the config's test input, e.g. 640 for a 640x640 crop).

    Returns ``(config, info)`` with ``info = {'base': (H, W), 'size': (h, w), 'factor',
    'changed': [the keys rewritten]}``. Raises ``ValueError`` for a bad ``size`` or a
    config whose test input size cannot be told or whose test pipeline has no ``Resize``
    (nothing would make the image smaller).
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be an int >= 1 (the new short side of the test input), "
                         f"got {size!r}")
    cfg = copy.deepcopy(cfg)
    base = tuple(default_input_shape(cfg))
    factor = size / min(base)
    changed: List[str] = []
    for p_index, pipeline in enumerate(_pipelines(cfg)):
        for step in pipeline:
            if step.get("type") not in RESIZE_TYPES:
                continue
            for key in ("scale", "scale_factor"):
                if step.get(key) is not None:
                    step[key] = _scaled(step[key], factor)
                    changed.append(f"pipeline[{p_index}].{step['type']}.{key}")
    test_cfg = cfg.model.get("test_cfg") or {}
    for key in ("crop_size", "stride"):
        if test_cfg.get(key) is not None:
            test_cfg[key] = _scaled(test_cfg[key], factor)
            changed.append(f"model.test_cfg.{key}")
    preprocessor = cfg.model.get("data_preprocessor") or {}
    if preprocessor.get("size") is not None:
        preprocessor["size"] = _scaled(preprocessor["size"], factor)
        changed.append("model.data_preprocessor.size")
    if not any(key.startswith("pipeline[") for key in changed):
        # a pad size or a sliding window alone does not make the image smaller: without a
        # Resize the "downsampled" row would silently be the stock model at full size
        raise ValueError("uniform downsampling rescales the test pipeline's Resize step, and "
                         "this config's test/val pipeline has none (with a 'scale' or "
                         "'scale_factor'); add e.g. dict(type='Resize', scale=(W, H), "
                         "keep_ratio=True) after LoadImageFromFile")
    new = tuple(default_input_shape(cfg))
    return cfg, {"base": base, "size": new, "factor": factor, "changed": changed}


__all__ = ["uniform_downsample"]
