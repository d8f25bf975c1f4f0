"""Config helpers shared by our tools: load, switch expediting off, build, synthetic inputs.

Everything goes through mmengine (``Config``, the registries of the config's default
scope), so a config works here exactly as it does in ``tools/test.py``.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import tempfile
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.config import Config, ConfigDict, DictAction

from ..compat import EXTRAS, missing_part
from ..models.families import BY_NAME, FAMILIES, find, stock_package

# the backbone keys that switch expediting on (classification: also layerwise_reducer)
EXPEDITE_SWITCHES = ("cluster_after", "reconstruct_after", "layerwise_reducer")


class CfgOptionsAction(DictAction):
    """mmengine's ``--cfg-options key=value ...`` parser, with a usage error naming the
    item when one is not ``key=value`` (mmengine fails with a bare unpacking error)."""

    def __call__(self, parser, namespace, values, option_string=None):
        for item in [values] if isinstance(values, str) else values or []:
            key = item.split("=", 1)[0]
            if "=" not in item or not key:
                raise argparse.ArgumentError(
                    self, f"expected key=value (e.g. model.backbone.cluster_after=8), "
                          f"got {item!r}")
        super().__call__(parser, namespace, values, option_string)


def load_config(config: Union[str, Config], cfg_options: Optional[dict] = None) -> Config:
    """A config from a path (or a copy of one already loaded), with overrides merged in."""
    if isinstance(config, str):
        with warnings.catch_warnings():
            # mmengine 0.10 resolves `mmseg::`/`mmdet::` bases through pkg_resources, which
            # setuptools >= 67 deprecates loudly when it is first imported; harmless
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated",
                                    category=UserWarning)
            cfg = Config.fromfile(config)
    else:
        cfg = copy.deepcopy(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def is_expedited(cfg: Config) -> bool:
    """Whether the config's backbone has expediting switched on."""
    backbone = cfg.model.get("backbone", {})
    return any(backbone.get(key) is not None for key in ("cluster_after", "layerwise_reducer"))


def as_expedited(cfg: Config) -> Tuple[Config, Optional[str]]:
    """A copy of ``cfg`` whose backbone is our expedited type, every stock key kept.

    A stock backbone (mmseg's ``VisionTransformer``, ``BEiT``, ``MAE``, mmseg's or mmdet's
    ``SwinTransformer``, mmpretrain's ``SwinTransformerV2`` / ``ViTSAM`` in an mmseg or
    mmdet config, mmpretrain's ``VisionTransformer`` in an mmpretrain config,
    ``HybridViT``) gets the expedited type of the same package (expediting disabled until
    ``cluster_after`` is set; the same state-dict keys) and ``expedite_mm`` in
    ``custom_imports``; an already expedited backbone is kept as it is.

    Returns:
        ``(config, stock_type)``: ``stock_type`` is the type that was replaced, ``None``
        if the backbone was expedited already.

    Raises:
        ValueError: one line naming the backbone type when it cannot be expedited.
    """
    cfg = copy.deepcopy(cfg)
    backbone = (cfg.get("model") or {}).get("backbone")
    if not isinstance(backbone, dict) or "type" not in backbone:
        raise ValueError("the config's model has no backbone (model.backbone.type) to expedite")
    scope = cfg.get("default_scope", "mmseg")
    given = str(backbone["type"])
    package, _, name = given.rpartition(".")
    package = package or scope
    if name in BY_NAME:
        return cfg, None
    family = find(name, package, scope)
    if family is None:
        raise ValueError(f"backbone type {given!r} ({package}) in a {scope} config cannot be "
                         f"expedited; expedite-mm expedites " + ", ".join(expeditable()))
    backbone["type"] = family.name
    imports = cfg.get("custom_imports") or {}
    names = list(imports.get("imports", []))
    if "expedite_mm" not in names:
        cfg.custom_imports = dict(imports, imports=names + ["expedite_mm"],
                                  allow_failed_imports=imports.get("allow_failed_imports", False))
    return cfg, given


def expeditable() -> List[str]:
    """``"<package>'s <stock type>"`` for every stock backbone a family expedites."""
    return sorted({f"{stock_package(f, r) if f.stock_package != 'expedite_mm' else r}'s "
                   f"{f.stock}" for f in FAMILIES for r in f.registries})


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
                trust_checkpoint: bool = False, allow_partial_load: bool = False
                ) -> torch.nn.Module:
    """Build ``cfg.model`` in the config's default scope (eval mode), optionally loaded.

    Without a checkpoint the weights are the random initialisation of the modules
    (``init_cfg``/``pretrained`` downloads are not triggered). A checkpoint (path or URL)
    loads safely (:func:`~expedite_mm.apis.checkpoint.load_checkpoint_file`) and must fit
    the model exactly unless ``allow_partial_load``
    (:func:`~expedite_mm.apis.checkpoint.load_state_dict_checked`).
    """
    from .checkpoint import load_checkpoint_file, load_state_dict_checked

    model = _build_modules(cfg)
    if checkpoint is not None:
        loaded = load_checkpoint_file(checkpoint, map_location="cpu", trust=trust_checkpoint)
        load_state_dict_checked(model, loaded, allow_partial=allow_partial_load,
                                source=checkpoint)
    return model.to(device).eval()


def _build_modules(cfg: Config) -> torch.nn.Module:
    """``cfg.model`` built in the config's default scope, as the Runner builds it."""
    from mmengine.registry import MODELS, init_default_scope
    scope = cfg.get("default_scope", "mmseg")
    if scope in EXTRAS and importlib.util.find_spec(scope) is None:
        raise missing_part(scope, EXTRAS[scope], f"this config (default_scope={scope!r})")
    import_custom_modules(cfg)
    init_default_scope(scope)
    model_cfg = copy.deepcopy(cfg.model)              # builders may edit the dict they get
    if cfg.get("data_preprocessor") is not None:      # as the Runner does (mmpretrain configs)
        model_cfg.setdefault("data_preprocessor", copy.deepcopy(cfg.data_preprocessor))
    return MODELS.build(model_cfg)


def build_model_sharing(cfg: Config, source: torch.nn.Module) -> torch.nn.Module:
    """Build ``cfg.model`` with the weights of ``source`` (the same architecture, e.g. the
    stock model of an expedited config), sharing its tensors rather than copying them:
    many candidate models of one network then take the memory of one, and take no time
    for initialising weights that are replaced anyway.

    While the modules are built, ``torch.empty`` (what parameters are allocated with)
    allocates on the ``meta`` device, so the default initialisations do nothing; then the
    state dict of ``source`` is assigned (strictly: only keys the model's own load hooks
    drop, e.g. SwinV2's derived position tables, may be missing). Where a tensor is left on
    ``meta`` (a buffer or attribute outside the state dict) or the modules cannot be built
    so, the
    model is built the ordinary way and gets ``source``'s tensors assigned. Buffers
    outside the state dict (non-persistent ones, e.g. a preprocessor's mean/std) are the
    new model's own. Only for inference: an in-place update of one model's weights
    changes the other's too. Returns the model on ``source``'s device, in eval mode.
    """
    from .checkpoint import load_state_dict_checked
    device = next(source.parameters()).device
    try:
        with _EmptyOnMeta():
            model = _build_modules(cfg)
        load_state_dict_checked(model, source.state_dict(), assign=True)
        if _holds_meta(model):
            raise RuntimeError("tensors outside the state dict")
        model = model.to(device)
    except Exception:  # noqa: BLE001 - whatever the fast path trips on, build it plainly
        model = build_model(cfg, device=str(device))
        load_state_dict_checked(model, source.state_dict(), assign=True)
    return model.eval()


class _EmptyOnMeta(torch.overrides.TorchFunctionMode):
    """``torch.empty`` on the meta device (a parameter's storage before its
    initialisation); every other function as usual."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.empty:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


def _holds_meta(model: torch.nn.Module) -> bool:
    tensors = [t for _, t in model.named_parameters()] + [t for _, t in model.named_buffers()]
    tensors += [v for m in model.modules() for v in vars(m).values()
                if isinstance(v, torch.Tensor)]
    return any(t.is_meta for t in tensors)


def import_custom_modules(cfg: Config) -> None:
    """Honour ``custom_imports`` as the Runner does (our configs import expedite_mm).

    ``import expedite_mm`` registers only when mmengine is already loaded; a process that
    imported ``expedite_mm`` (e.g. this module) before mmengine gets the registration here.
    """
    from mmengine.utils import import_modules_from_strings
    custom = cfg.get("custom_imports")
    if custom:
        import_modules_from_strings(**custom)
        if any(str(name).split(".")[0] == "expedite_mm" for name in custom.get("imports", ())):
            # a no-op import if expedite_mm was imported before mmengine (then it did not
            # register): register now
            from ..registration import register_all_modules
            register_all_modules()


def default_input_shape(cfg: Config) -> Tuple[int, int]:
    """The (H, W) a network sees at test time: the slide crop, else the preprocessor size,
    else the test pipeline's last ``CenterCrop`` (classification), else its ``Resize``
    (``FixScaleResize``, ``FixShapeResize``) scale (with ``keep_ratio``: short side x long
    side), else the backbone's
    ``img_size`` (e.g. SAM's encoder, which has no test pipeline)."""
    test_cfg = cfg.model.get("test_cfg") or {}
    if test_cfg.get("mode") == "slide" and test_cfg.get("crop_size"):
        return tuple(test_cfg["crop_size"])
    size = (cfg.model.get("data_preprocessor") or {}).get("size")
    if size:
        return tuple(size)
    crops = [step["crop_size"] for step in inference_pipeline(cfg)
             if step.get("type") in ("CenterCrop", "mmcv.CenterCrop") and step.get("crop_size")]
    if crops:   # mmcv's crop_size is (w, h) or an int
        crop = crops[-1]
        return (crop, crop) if isinstance(crop, int) else (crop[1], crop[0])
    for step in inference_pipeline(cfg):
        kind = str(step.get("type")).rpartition(".")[2]
        if kind == "FixShapeResize" and step.get("width") and step.get("height"):
            return step["height"], step["width"]
        if kind in ("Resize", "RandomResize", "FixScaleResize") and step.get("scale"):
            scale = step["scale"]
            if isinstance(scale, int):
                return scale, scale
            w, h = scale  # mmcv scales are (w, h); with keep_ratio the short side bounds
            return (min(w, h), max(w, h)) if step.get("keep_ratio") else (h, w)
    img_size = (cfg.model.get("backbone") or {}).get("img_size")
    if img_size:
        return (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    raise ValueError("cannot infer the input shape from the config; pass --shape H W")


def inference_pipeline(cfg: Config) -> List[dict]:
    """The steps of the config's test pipeline (through dataset wrappers; a concatenation's
    first dataset), else its top-level ``test_pipeline``; a video pipeline's per-frame
    steps (``TransformBroadcaster``) follow their wrapper."""
    loader = cfg.get("test_dataloader") or {}
    dataset = loader.get("dataset") or {}
    while "pipeline" not in dataset and (dataset.get("dataset") or dataset.get("datasets")):
        dataset = dataset.get("dataset") or dataset["datasets"][0]          # wrappers
    steps = []
    for step in dataset.get("pipeline") or cfg.get("test_pipeline") or []:
        steps.append(step)                    # and the steps a wrapper runs on every frame
        if isinstance(step, dict) and \
                str(step.get("type")).rpartition(".")[2] == "TransformBroadcaster":
            steps.extend(step.get("transforms") or [])
    return steps


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
    if module.startswith("mmpretrain"):
        from mmpretrain.structures import DataSample
        return DataSample
    from mmseg.structures import SegDataSample
    return SegDataSample


def tensor_forward(model: torch.nn.Module, inputs: torch.Tensor, data_samples: List[Any]) -> Any:
    """The network without post-processing: ``model._forward`` (mmseg, mmdet), or
    ``model(inputs, data_samples, mode='tensor')`` (mmpretrain classifiers: the logits)."""
    if hasattr(model, "_forward"):
        return model._forward(inputs, data_samples)
    return model(inputs, data_samples, mode="tensor")


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


# --------------------------------------------------------------------------- writing configs
def config_text(base: str, base_cfg: Config, cfg: Config, header: Sequence[str] = ()) -> str:
    """The text of a config file that inherits ``base`` and writes only what ``cfg``
    changes in it: the model's keys that differ and ``custom_imports``.

    Args:
        base: what ``_base_`` says: a path or an mmengine package name (``mmseg::...``).
        base_cfg: that config, loaded.
        cfg: the config the written file must read back as (its model).
        header: comment lines at the top.
    """
    lines = [f"# {line}" for line in header]
    lines.append(f"_base_ = {base!r}")
    imports = dict(cfg.get("custom_imports") or {})
    if imports != dict(base_cfg.get("custom_imports") or {}):
        lines.append(f"custom_imports = dict(imports={list(imports.get('imports', []))!r}, "
                     f"allow_failed_imports={imports.get('allow_failed_imports', False)!r})")
    changed = _diff(base_cfg.model.to_dict(), cfg.model.to_dict())
    lines.append(f"model = {_py(changed)}")
    return "\n".join(lines) + "\n"


def check_config_text(text: str, cfg: Config) -> None:
    """A written config must read back as ``cfg``'s model (else: a bug, nothing written).

    Args:
        text: the config file's text (:func:`config_text`).
        cfg: the config it must read back as.

    Raises:
        RuntimeError: it reads back as another model.
    """
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "config.py")
        with open(path, "w") as f:
            f.write(text)
        back = load_config(path)
    if back.model.to_dict() != cfg.model.to_dict():
        raise RuntimeError("the written config does not read back as the expedited model")


_MISSING = object()


def _diff(base: dict, new: dict) -> dict:
    """What to write over ``base`` so that mmengine's merge gives ``new`` (dicts merge key
    by key; a key ``new`` lacks is set to None)."""
    out = {}
    for key in list(new) + [k for k in base if k not in new]:
        old, value = base.get(key, _MISSING), new.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            inner = _diff(old, value)
            if inner:
                out[key] = inner
        elif old is _MISSING or old != value:
            out[key] = value
    return out


def _py(value: Any) -> str:
    """A config value as Python source (dicts as ``dict(...)``)."""
    if isinstance(value, dict):
        return "dict(" + ", ".join(f"{k}={_py(v)}" for k, v in value.items()) + ")"
    if isinstance(value, list):
        return "[" + ", ".join(_py(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(_py(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return repr(value)
