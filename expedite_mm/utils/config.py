"""Config helpers shared by our tools: load, switch expediting off, build, synthetic inputs.

Everything goes through mmengine (``Config``, the registries of the config's default
scope), so a config works here exactly as it does in ``tools/test.py``.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.config import Config, ConfigDict

EXPEDITE_SWITCHES = ("cluster_after", "reconstruct_after")


def load_config(config: Union[str, Config], cfg_options: Optional[dict] = None) -> Config:
    """A config from a path (or a copy of one already loaded), with overrides merged in."""
    cfg = Config.fromfile(config) if isinstance(config, str) else copy.deepcopy(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def is_expedited(cfg: Config) -> bool:
    """Whether the config's backbone has expediting switched on."""
    return cfg.model.get("backbone", {}).get("cluster_after") is not None


def disable_expedite(cfg: Config) -> Config:
    """A copy of ``cfg`` whose backbone runs the stock forward (``cluster_after=None``).

    The backbone type stays ours: disabled, it is bit-identical to the stock backbone and
    takes the same weights, so the two models can share one ``state_dict``.
    """
    cfg = copy.deepcopy(cfg)
    backbone = cfg.model.backbone
    for key in EXPEDITE_SWITCHES:
        if key in backbone:
            backbone[key] = None
    return cfg


def build_model(cfg: Config, checkpoint: Optional[str] = None, device: str = "cpu",
                trust_checkpoint: bool = False) -> torch.nn.Module:
    """Build ``cfg.model`` in the config's default scope (eval mode), optionally loaded.

    Without a checkpoint the weights are the random initialisation of the modules
    (``init_cfg``/``pretrained`` downloads are not triggered).
    """
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.runner.checkpoint import load_checkpoint

    from .checkpoint import checkpoint_policy

    import_custom_modules(cfg)
    init_default_scope(cfg.get("default_scope", "mmseg"))
    model = MODELS.build(copy.deepcopy(cfg.model))   # builders may edit the dict they get
    if checkpoint is not None:
        with checkpoint_policy(trust_checkpoint, source=checkpoint):
            load_checkpoint(model, checkpoint, map_location="cpu", strict=False)
    return model.to(device).eval()


def import_custom_modules(cfg: Config) -> None:
    """Honour ``custom_imports`` as the Runner does (our configs import expedite_mm)."""
    from mmengine.utils import import_modules_from_strings
    custom = cfg.get("custom_imports")
    if custom:
        import_modules_from_strings(**custom)
        if "expedite_mm" in (custom.get("imports") or ()):
            # a no-op import if expedite_mm was imported before mmengine (then it did not
            # register): register now
            from expedite_mm import register_all_modules
            register_all_modules()


def default_input_shape(cfg: Config) -> Tuple[int, int]:
    """The (H, W) a network sees at test time: the slide crop, else the test ``Resize``
    scale (short side x long side as a square-ish canvas), else the preprocessor size."""
    test_cfg = cfg.model.get("test_cfg") or {}
    if test_cfg.get("mode") == "slide" and test_cfg.get("crop_size"):
        return tuple(test_cfg["crop_size"])
    size = (cfg.model.get("data_preprocessor") or {}).get("size")
    if size:
        return tuple(size)
    for step in _test_pipeline(cfg):
        if step.get("type") in ("Resize", "mmdet.Resize", "RandomResize") and step.get("scale"):
            scale = step["scale"]
            if isinstance(scale, int):
                return scale, scale
            w, h = scale  # mmcv scales are (w, h); with keep_ratio the short side bounds
            return (min(w, h), max(w, h)) if step.get("keep_ratio") else (h, w)
    raise ValueError("cannot infer the input shape from the config; pass --shape H W")


def _test_pipeline(cfg: Config) -> List[dict]:
    loader = cfg.get("test_dataloader") or {}
    dataset = loader.get("dataset") or {}
    while "pipeline" not in dataset and "dataset" in dataset:   # wrappers
        dataset = dataset["dataset"]
    return list(dataset.get("pipeline", []))


def synthetic_batch(model: torch.nn.Module, shape: Tuple[int, int], batch_size: int = 1,
                    device: str = "cpu") -> Tuple[torch.Tensor, List[Any]]:
    """Random preprocessed inputs ``(B, 3, H, W)`` and matching data samples.

    The samples carry the meta information the heads read at test time (image/pad/
    original shape, scale factor), for mmseg, mmdet and depth models alike.
    """
    h, w = shape
    inputs = torch.rand(batch_size, 3, h, w, device=device)
    meta: Dict[str, Any] = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                                batch_input_shape=(h, w), scale_factor=(1.0, 1.0),
                                flip=False, flip_direction=None, img_id=0)
    sample_type = _data_sample_type(model)
    return inputs, [sample_type(metainfo=meta) for _ in range(batch_size)]


def _data_sample_type(model: torch.nn.Module):
    module = type(model).__module__
    if module.startswith("mmdet"):
        from mmdet.structures import DetDataSample
        return DetDataSample
    from mmseg.structures import SegDataSample
    return SegDataSample


def set_nested(cfg: Union[Config, ConfigDict, dict], dotted: str, value: Any) -> None:
    """``cfg['a']['b']['c'] = value`` for ``dotted='a.b.c'``."""
    *parents, last = dotted.split(".")
    node = cfg
    for key in parents:
        node = node[key]
    node[last] = value


def flatten_outputs(outputs: Any) -> Tuple[torch.Tensor, ...]:
    """All tensors in a nested output (tuples, lists, dicts), in order, for tracing."""
    if isinstance(outputs, torch.Tensor):
        return (outputs,)
    if isinstance(outputs, dict):
        outputs = list(outputs.values())
    if isinstance(outputs, Sequence) and not isinstance(outputs, str):
        return tuple(t for item in outputs for t in flatten_outputs(item))
    return ()
