"""tools/model_converters/swag2mmpretrain.py (:mod:`expedite_mm.converters.swag`) against
models of the released layouts, written here: torchvision's VisionTransformer (what its SWAG
E2E weights hold) and SWAG's own."""
from collections import OrderedDict

import pytest
import torch
from torch import nn

import expedite_mm

expedite_mm.register_all_modules()  # mmpretrain registries usable without torchvision
from harness import run_command

HIDDEN, HEADS, LAYERS, MLP, PATCH, IMAGE, CLASSES = 32, 4, 3, 64, 8, 48, 10


class TorchvisionBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1 = nn.LayerNorm(HIDDEN, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(HIDDEN, HEADS, batch_first=True)
        self.ln_2 = nn.LayerNorm(HIDDEN, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(HIDDEN, MLP), nn.GELU(), nn.Dropout(0.0),
                                 nn.Linear(MLP, HIDDEN), nn.Dropout(0.0))

    def forward(self, x):
        h = self.ln_1(x)
        x = x + self.self_attention(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class TorchvisionLayoutViT(nn.Module):
    """torchvision.models.VisionTransformer's parameter names and computation: conv patch
    projection, class token first, learned position embedding (1, L, C), pre-norm blocks,
    final LayerNorm, linear head on the class token."""

    def __init__(self):
        super().__init__()
        self.conv_proj = nn.Conv2d(3, HIDDEN, PATCH, PATCH)
        self.class_token = nn.Parameter(torch.randn(1, 1, HIDDEN))
        self.encoder = nn.Module()
        self.encoder.pos_embedding = nn.Parameter(
            0.5 * torch.randn(1, (IMAGE // PATCH) ** 2 + 1, HIDDEN))
        self.encoder.layers = nn.Sequential(OrderedDict(
            (f"encoder_layer_{i}", TorchvisionBlock()) for i in range(LAYERS)))
        self.encoder.ln = nn.LayerNorm(HIDDEN, eps=1e-6)
        self.heads = nn.Sequential(OrderedDict(head=nn.Linear(HIDDEN, CLASSES)))
        with torch.no_grad():
            for name, param in self.named_parameters():
                if "ln" in name or name.endswith("bias"):
                    param.add_(0.1 * torch.randn_like(param))

    def forward(self, images):
        x = self.conv_proj(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.encoder.ln(self.encoder.layers(x + self.encoder.pos_embedding))
        return self.heads(x[:, 0])


def swag_layout(torchvision_state):
    """The same weights under SWAG's own names (its VisionTransformer)."""
    out = {}
    for name, value in torchvision_state.items():
        name = name.replace("encoder_layer_", "layer_").replace("mlp.0.", "mlp.linear_1.")
        name = name.replace("mlp.3.", "mlp.linear_2.").replace("heads.head", "head.layers.head")
        if name == "encoder.pos_embedding":
            value = value.transpose(0, 1)       # SWAG keeps (L, 1, C)
        out[name] = value
    return out


def classifier(**backbone):
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    init_default_scope("mmpretrain")
    arch = dict(embed_dims=HIDDEN, num_layers=LAYERS, num_heads=HEADS, feedforward_channels=MLP)
    model = MODELS.build(dict(
        type="ImageClassifier",
        backbone=dict(dict(type="VisionTransformer", arch=arch, img_size=IMAGE,
                           patch_size=PATCH), **backbone),
        head=dict(type="VisionTransformerClsHead", num_classes=CLASSES, in_channels=HIDDEN)))
    model.eval()
    return model


@pytest.fixture(scope="module")
def converter():
    from expedite_mm.converters import swag
    return swag


def test_both_layouts_convert_to_the_same_weights_and_logits(converter, tmp_path):
    reference = TorchvisionLayoutViT().eval()
    state = reference.state_dict()
    converted = converter.convert_swag(state)
    from_swag = converter.convert_swag(swag_layout(state))
    assert list(converted) == list(from_swag)
    assert all(torch.equal(converted[k], from_swag[k]) for k in converted)

    model = classifier()
    assert set(converted) == set(model.state_dict())
    model.load_state_dict(converted, strict=True)
    images = torch.randn(2, 3, IMAGE, IMAGE)
    with torch.no_grad():
        torch.testing.assert_close(model(images, mode="tensor"), reference(images),
                                   rtol=1e-4, atol=1e-5)

    # the command line: a torchvision-format file in, an mmengine checkpoint out, which
    # loads strictly into the expedited classifier too (the stock keys)
    src, dst = tmp_path / "vit_swag.pth", tmp_path / "converted.pth"
    torch.save(state, src)
    run_command("convert-swag", src, dst)
    saved = torch.load(dst, weights_only=True)
    assert saved["meta"]["num_classes"] == CLASSES
    expedited = classifier(type="ExpeditedVisionTransformer", cluster_after=1,
                           cluster_grid=(4, 4))
    expedited.load_state_dict(saved["state_dict"], strict=True)


def test_rejects_what_it_does_not_know(converter):
    state = TorchvisionLayoutViT().state_dict()
    with pytest.raises(converter.SwagConversionError, match="conv_proj.conv_0"):
        converter.convert_swag({**state, "conv_proj.conv_0.weight": torch.zeros(1)})
    with pytest.raises(converter.SwagConversionError, match="missing"):
        converter.convert_swag({k: v for k, v in state.items() if k != "encoder.ln.weight"})
    with pytest.raises(converter.SwagConversionError, match="expected a SWAG ViT checkpoint"):
        converter.extract_state_dict({"model": {"blocks.0.norm1.weight": torch.zeros(1)}})
    assert converter.extract_state_dict({"state_dict": state}).keys() == state.keys()
