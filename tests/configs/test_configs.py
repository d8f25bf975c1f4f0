"""Every config in configs/ parses and builds; expedited configs change only what they say.

One parametrised test over ``configs/**/*.py``, so a new config is covered automatically:
* it parses (``_base_`` inheritance from mmseg/mmdet resolves) and its model builds with
  random weights in the config's default scope, through ``custom_imports``;
* an expedited config (backbone ``cluster_after`` set) differs from its ``_base_`` only
  in the backbone type, the expedited backbone's own arguments (those its class takes
  beyond the stock class), ``custom_imports``, ``load_from``, the pretrained-weights
  pointers that a test-time config drops and the segmentor type -- only to a subclass of
  the base's segmentor (``ExpeditedEncoderDecoder`` for the logits placement, which adds
  no parameters, so the official checkpoint still fits); the built backbone is expedited
  with exactly the configured operator settings, built on the stock class of the config's
  package.
"""
import ast
import contextlib
import glob
import importlib
import inspect
import os.path as osp
import textwrap
from unittest import mock

import pytest
import torch
from mmengine.config import Config

from expedite_mm.core import ExpediteMixin
from expedite_mm.apis.config import build_model, is_expedited

from harness import ROOT  # noqa: E402
# configs/_base_/ holds fragments (model definitions) that only make sense inherited
CONFIGS = sorted(p for p in glob.glob(osp.join(ROOT, "configs", "**", "*.py"), recursive=True)
                 if "_base_" not in osp.relpath(p, ROOT).split(osp.sep))
ALLOWED_TOP_LEVEL = {"custom_imports", "load_from"}
# a test-time config may drop the ImageNet-pretrained pointers of the training recipe
ALLOWED_MODEL_KEYS = {"pretrained"}
ALLOWED_BACKBONE_KEYS = {"type", "init_cfg", "pretrained"}


def _base_of(path):
    """The config's ``_base_`` alone (mmseg::/mmdet:: or relative paths), loaded."""
    tree = ast.parse(open(path).read())
    bases = [ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
             and any(getattr(t, "id", None) == "_base_" for t in node.targets)]
    assert bases, f"{path} has no _base_"
    bases = bases[0] if isinstance(bases[0], list) else [bases[0]]
    resolved = [b if "::" in b else osp.normpath(osp.join(osp.dirname(path), b)) for b in bases]
    return Config.fromstring(textwrap.dedent(f"_base_ = {resolved!r}\n"), ".py")


def _flatten(node, prefix=""):
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def _stock_class(cls):
    """The stock backbone an expedited backbone subclasses (first non-mixin base)."""
    return next(c for c in cls.__mro__[1:] if not issubclass(c, ExpediteMixin)
                and c is not object and "expedite_mm" not in c.__module__)


def _init_params(cls):
    return set(inspect.signature(cls.__init__).parameters) - {"self", "args", "kwargs"}


@contextlib.contextmanager
def _no_weight_init():
    """Modules keep their allocated (unfilled) weights: what is tested here is the built
    structure and arguments, and filling ViT-H's 630M random weights takes seconds."""
    names = ("kaiming_uniform_", "uniform_", "normal_", "trunc_normal_", "xavier_uniform_")
    with contextlib.ExitStack() as stack:
        for name in names:
            stack.enter_context(mock.patch.object(torch.nn.init, name, lambda t, *a, **k: t))
        yield


def test_there_are_configs():
    assert len(CONFIGS) >= 1


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: osp.relpath(p, osp.join(ROOT, "configs")))
def test_config_builds_and_changes_only_the_backbone(path):
    cfg = Config.fromfile(path)
    with _no_weight_init():
        model = build_model(cfg)
    assert sum(p.numel() for p in model.parameters()) > 0
    if not is_expedited(cfg):
        return

    backbone = model.backbone
    assert isinstance(backbone, ExpediteMixin) and backbone.expedited
    settings = cfg.model.backbone
    assert backbone.cluster_after == settings.get("cluster_after")
    if settings.get("layerwise_reducer"):     # classification: EViT / ToMe inside layers
        assert backbone.layerwise is not None
        for name, value in settings.layerwise_reducer.items():
            if name != "type":
                value = tuple(value) if isinstance(value, list) else value
                assert getattr(backbone.layerwise, name) == value, name
    for name, attribute in (("cluster_window", "window"), ("cluster_iters", "iters"),
                            ("temperature", "temperature")):
        if name in settings:
            assert getattr(backbone.clustering, attribute) == settings[name], name
    for name, attribute in (("reconstruct_k", "k"), ("reconstruct_normalize", "normalize")):
        if name in settings:
            assert getattr(backbone.reconstruction, attribute) == settings[name], name

    stock_class = _stock_class(type(backbone))
    expedite_keys = set(type(backbone).expedite_family.names())
    assert not expedite_keys & _init_params(stock_class), "an expedite argument shadows a stock one"
    assert expedite_keys, type(backbone)
    base = _base_of(path)
    if cfg.model.type != base.model.type:       # a subclass of the base's segmentor only
        registry = importlib.import_module(f"{cfg.default_scope}.registry").MODELS
        stock_segmentor = registry.get(base.model.type)
        assert isinstance(model, stock_segmentor) and type(model) is not stock_segmentor, \
            f"{osp.basename(path)} changes model.type to a class that is not a {stock_segmentor}"
        # no weights of its own: the state-dict keys are those of its stock parts
        assert not [*model.named_parameters(recurse=False), *model.named_buffers(recurse=False)]
        assert {name for name, _ in model.named_children()} <= {
            "data_preprocessor", "backbone", "neck", "decode_head", "auxiliary_head"}
    ours, theirs = _flatten(cfg.to_dict()), _flatten(base.to_dict())
    changed = {k for k in ours.keys() | theirs.keys() if ours.get(k, object()) != theirs.get(k, object())}
    for key in changed:
        parts = key.split(".")
        allowed = (parts[0] in ALLOWED_TOP_LEVEL
                   or parts == ["model", "type"]           # checked above: a subclass
                   or parts[:2] == ["model", parts[1]] and parts[1] in ALLOWED_MODEL_KEYS
                   or parts[:2] == ["model", "backbone"] and len(parts) > 2
                   and (parts[2] in ALLOWED_BACKBONE_KEYS or parts[2] in expedite_keys))
        assert allowed, f"{osp.basename(path)} changes {key} (only the backbone may change)"
    # loads the official checkpoint; where no public one exists (HTC++ SwinV2-L, ADE20K
    # panoptic / YouTube-VIS 2019 Mask2Former Swin-L), it at least initialises the backbone
    # (or, as the VIS recipe, the whole model) from official pretrained weights
    assert cfg.get("load_from") or (settings.get("init_cfg") or {}).get("checkpoint") \
        or (cfg.model.get("init_cfg") or {}).get("checkpoint"), \
        "an expedited config loads the official checkpoint"
    assert "expedite_mm" in cfg.custom_imports["imports"]

    # the expedited backbone subclasses the stock one of the config's own package
    assert stock_class.__module__.split(".")[0] in (cfg.default_scope, "mmpretrain"), stock_class
