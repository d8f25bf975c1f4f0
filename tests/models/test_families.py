"""The family table (expedite_mm/models/families.py) is the one description of every
expedited backbone: each backbone class the project registers has exactly one row, each
row is registered where it says, with its stock class where it says, and the config
helpers and the tuner read the table (no list of their own)."""
import importlib

import pytest

import expedite_mm
from expedite_mm.core import ExpediteMixin
from expedite_mm.models.families import BY_NAME, FAMILIES, KINDS, Family, find, stock_package

PACKAGES = ("mmseg", "mmdet", "mmpretrain")


@pytest.fixture(scope="module")
def registered():
    return expedite_mm.register_all_modules()


def registry(package):
    return importlib.import_module(f"{package}.registry").MODELS


def test_names_are_unique_and_kinds_known():
    assert len(BY_NAME) == len(FAMILIES)
    assert all(family.kind in KINDS for family in FAMILIES)
    with pytest.raises(ValueError, match="kind must be one of"):
        Family("X", "Y", "mmseg", {"mmseg": "m:X"}, kind="conv")


def test_every_registered_expedited_backbone_has_exactly_one_row(registered):
    for package in PACKAGES:
        ours = {name for name, cls in registry(package).module_dict.items()
                if isinstance(cls, type) and issubclass(cls, ExpediteMixin)}
        rows = {f.name for f in FAMILIES if package in f.registries}
        assert ours == rows, (package, ours ^ rows)
        assert set(registered[package]) >= rows


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_row_is_registered_where_it_says_on_its_stock_class(registered, family):
    for package in family.registries:
        cls = registry(package).module_dict[family.name]
        assert cls is family.expedited_class(package)
        stock = stock_package(family, package)
        stock_cls = (registry(package).get(family.stock) if stock == "expedite_mm"
                     else registry(stock).get(family.stock))
        assert stock_cls is not None and issubclass(cls, stock_cls), (package, stock_cls)
        for path in family.also_registers:
            name = path.rpartition(":")[2]
            assert registry(package).get(name) is not None, (package, name)


def test_config_helpers_read_the_table():
    """as_expedited maps exactly the table's stock types (and names them when refusing)."""
    from mmengine.config import Config

    from expedite_mm.apis.config import as_expedited, expeditable
    for family in FAMILIES:
        for scope in family.registries:
            cfg = Config(dict(default_scope=scope, model=dict(backbone=dict(type=family.stock))))
            converted, stock = as_expedited(cfg)
            assert (converted.model.backbone.type, stock) == (family.name, family.stock)
    assert len(expeditable()) == len({(stock_package(f, r), f.stock)
                                      for f in FAMILIES for r in f.registries})
    cfg = Config(dict(default_scope="mmseg", model=dict(backbone=dict(type="ResNet"))))
    with pytest.raises(ValueError, match="'ResNet'.*expedites .*mmseg's VisionTransformer"):
        as_expedited(cfg)


def test_find_by_stock_type():
    assert find("SwinTransformer", "mmdet", "mmdet").name == "ExpeditedSwin"
    assert find("VisionTransformer", "mmpretrain", "mmpretrain").name == \
        "ExpeditedVisionTransformer"
    assert find("VisionTransformer", "mmseg", "mmseg").name == "ExpeditedViT"
    assert find("ResNet", "mmseg", "mmseg") is None
    # mmpretrain-only types in detection/segmentation configs, and another package's type
    assert find("SwinTransformerV2", "mmdet", "mmdet").name == "ExpeditedSwinV2"
    assert find("SwinTransformer", "mmdet", "mmseg") is None
    assert find("VisionTransformer", "mmpretrain", "mmseg") is None
