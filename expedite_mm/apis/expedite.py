"""A stock config in, an expedited config out (``expedite-mm expedite``).

The written file inherits the stock config by the name it was given (``mmseg::...``,
``mmdet::...``, ``mmpretrain::...`` or a path), switches the backbone to the family's
expedited type (:func:`~expedite_mm.apis.config.as_expedited`: every stock key and
state-dict key kept) and sets the expedite keys: the ones given, or the default rule's.

The default rule (docs/tools.md, "expedite"): cluster after ``5/12 * depth`` layers
(rounded half up) of the clustered stack -- all layers of a plain ViT, the blocks of the
clustered stage of a windowed backbone: 10 of ViT-L's 24 and 8 of Swin-L's third stage of
18, as in the released Segmenter and Swin COCO rows -- and the operators' own default
size: a cluster grid of 0.7 of the token grid's side (ViT), clustered windows of
``round(0.7 K)`` (Swin, SAM).
"""
from __future__ import annotations

import copy
import importlib
import inspect
import os.path as osp
import tempfile
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

from mmengine.config import Config

from ..models.families import BY_NAME
from .config import as_expedited, check_config_text, config_text, load_config, set_nested

#: the default rule: cluster after this share of the clustered stack's layers
DEFAULT_CLUSTER_AFTER_SHARE = 5 / 12

#: where a model config nests its backbone, looked at in this order (detectors, SAM-style
#: encoders, distillation wrappers, multimodal models)
BACKBONE_PATHS = ("backbone", "image_encoder", "detector.backbone", "vision_backbone",
                  "visual_encoder", "vision_encoder", "img_backbone")

#: which size key each kind of the family table takes
_SIZE_KEY = {"vit": "cluster_grid", "classification": "cluster_grid", "pyramid": "cluster_grid",
             "window": "clustered_window_size", "sam": "clustered_window_size"}


@dataclass(frozen=True)
class ExpeditedConfig:
    """A written expedited config.

    Args:
        text: the config file's text.
        stock_type: the backbone type the stock config had.
        expedited_type: the expedited type it has now.
        depth: the layers of the clustered stack.
        settings: the expedite keys set (name -> value).
        backbone_path: where the model nests the backbone (:data:`BACKBONE_PATHS`).
    """

    text: str
    stock_type: str
    expedited_type: str
    depth: int
    settings: Tuple[Tuple[str, object], ...]
    backbone_path: str = "backbone"


def find_backbone(model: Any) -> Tuple[str, Optional[dict]]:
    """``(path, backbone dict)`` of the first of :data:`BACKBONE_PATHS` the model config
    has (``('', None)`` if none)."""
    for path in BACKBONE_PATHS:
        node = model
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and "type" in node:
            return path, node
    return "", None


def default_cluster_after(depth: int) -> int:
    """The default rule's ``cluster_after`` for a clustered stack of ``depth`` layers."""
    return max(1, min(depth - 1, int(DEFAULT_CLUSTER_AFTER_SHARE * depth + 0.5)))  # half up


def required_settings(backbone_cfg: Mapping[str, Any]) -> dict:
    """What an expedited backbone config needs beyond ``cluster_after`` to build: a
    classification ViT whose output is not the class token (``out_type`` ``'raw'``,
    ``'featmap'``, ``'avg_featmap'``: every patch token) reconstructs
    (``reconstruct=True``)."""
    family = BY_NAME[str(backbone_cfg["type"]).rpartition(".")[2]]
    if family.kind == "classification" and \
            backbone_cfg.get("out_type", "cls_token") != "cls_token":
        return {"reconstruct": True}
    return {}


def load_stock(config: str) -> Config:
    """A config by path or by mmengine's package name (``mmseg::segmenter/....py``),
    loaded as a file inheriting it loads it (mmengine marks a package's model with its
    ``_scope_``).

    Raises:
        ValueError: no such config (one line).
    """
    if "::" not in config:
        if not osp.isfile(config):
            raise ValueError(f"no config file {config}")
        return load_config(config)
    with tempfile.TemporaryDirectory() as folder:
        stub = osp.join(folder, "stock.py")
        with open(stub, "w") as f:
            f.write(f"_base_ = {config!r}\n")
        try:
            return load_config(stub)
        except (FileNotFoundError, ValueError) as error:   # mmengine: no such package/file
            raise ValueError(f"no config {config} ({str(error).splitlines()[0][:200]})") \
                from None


def build_backbone(backbone_cfg: Mapping[str, Any], scope: str) -> Any:
    """A backbone built with random weights from the registry of package ``scope``, in
    that scope (as the config's ``default_scope`` would), every family registered. A
    ``pretrained`` key its class does not take is left out: it is its wrapper's
    (mmpretrain's multimodal models pop it from their vision encoder and load it)."""
    from mmengine.registry import DefaultScope
    from ..registration import register_all_modules
    register_all_modules()
    registry = importlib.import_module(f"{scope}.registry").MODELS
    with DefaultScope.overwrite_default_scope(scope):
        cls = registry.get(backbone_cfg["type"])
        if "pretrained" in backbone_cfg and cls is not None and \
                not _takes_argument(cls, "pretrained"):
            backbone_cfg = {k: v for k, v in backbone_cfg.items() if k != "pretrained"}
        return registry.build(backbone_cfg)


def _takes_argument(cls: type, name: str) -> bool:
    """Whether ``cls(name=...)`` reaches an ``__init__`` that names ``name`` (through the
    ``**kwargs`` of mixins and subclasses)."""
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters
        if name in parameters:
            return True
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            return False
    return False


def clustered_depth(cfg: Config) -> int:
    """The layers of the stack ``cluster_after`` counts in (``expedite_depth``: a plain
    ViT's layers, a hierarchical backbone's blocks of its expedited stage), read off the
    backbone built with random weights."""
    return build_backbone(cfg.model.backbone, cfg.get("default_scope") or "mmseg"
                          ).expedite_depth


def expedite_config(config: str, cluster_after: Optional[int] = None,
                    size: Union[None, float, Sequence[int], int] = None,
                    header: Sequence[str] = ()) -> ExpeditedConfig:
    """The expedited config of a stock one, at a given setting or the default rule's.

    Args:
        config: the stock config: a path or ``<package>::<path>``.
        cluster_after: layers before clustering (of the clustered stack); None: the
            default rule.
        size: ViT families: the cluster grid (a ratio of the token grid's side, or
            ``(h, w)``); windowed families (Swin, SwinV2, SAM): the clustered window size
            k. None: the operators' default (0.7 of the side).
        header: comment lines for the top of the file.

    Raises:
        ValueError: one line: a backbone no family expedites (naming its type and what is
            supported), a config already expedited, or a setting out of range (naming the
            parameter); nothing is written.
    """
    stock = load_stock(config)
    path, found = find_backbone(stock.get("model") or {})
    if found is None:
        raise ValueError(f"{config}: the model has no backbone to expedite (looked at "
                         f"model.{', model.'.join(BACKBONE_PATHS)})")
    # the backbone alone, in the config's scope: what as_expedited and the builds read
    alone = dict(default_scope=stock.get("default_scope") or "mmseg",
                 model=dict(backbone=copy.deepcopy(found)))
    if stock.get("custom_imports"):
        alone["custom_imports"] = copy.deepcopy(stock.custom_imports)
    part, stock_type = as_expedited(Config(alone))
    if stock_type is None:
        raise ValueError(f"{config}: the backbone is expedited already ({found['type']})")
    cfg = copy.deepcopy(stock)
    cfg.custom_imports = part.custom_imports
    backbone = part.model.backbone
    family = BY_NAME[str(backbone.type)]
    settings = {} if cluster_after is None else {"cluster_after": cluster_after}
    settings.update(required_settings(backbone))
    if size is not None:
        key = _SIZE_KEY[family.kind]
        if isinstance(size, (list, tuple)):
            size = tuple(size)
            if key == "clustered_window_size" and len(set(size)) == 1:
                size = size[0]          # windows are square: k
        if key == "clustered_window_size" and not isinstance(size, int):
            raise ValueError(f"{config}: {family.name} clusters windows; give the clustered "
                             f"window side k as one integer, not {size!r}")
        settings[key] = size
    backbone.update(settings)
    try:                    # the backbone's own checks name the parameter and its range
        depth = clustered_depth(part)
        if cluster_after is None:
            settings = {"cluster_after": default_cluster_after(depth), **settings}
            backbone.update(settings)
            if size is not None:                # checked again, now switched on
                clustered_depth(part)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{config}: {error}") from None
    set_nested(cfg.model, path, backbone)
    base = config if "::" in config else osp.abspath(config)
    text = config_text(base, stock, cfg, header)
    check_config_text(text, cfg)
    return ExpeditedConfig(text, stock_type, family.name, depth, tuple(settings.items()), path)


__all__ = ["ExpeditedConfig", "BACKBONE_PATHS", "DEFAULT_CLUSTER_AFTER_SHARE",
           "find_backbone", "default_cluster_after", "required_settings", "build_backbone",
           "load_stock", "clustered_depth", "expedite_config"]
