"""tools/model_converters/segmenter2mmseg.py (:mod:`expedite_mm.converters.segmenter`)
against an independent re-implementation of the original Segmenter (rstrudel/segmenter)
written here from its architecture.

The proof the key mapping is right: a small original-format Segmenter with random weights
is saved as the original release saves it, converted, loaded with ``strict=True`` into
mmseg's EncoderDecoder built from our base config (dimensions shrunk), and both models
give the same logits.
"""
import os

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmseg.registry import MODELS
from torch import nn

import expedite_mm

expedite_mm.register_all_modules()  # registers ExpeditedViT
from expedite_mm.converters import segmenter as converter
from harness import run_command

from harness import ROOT  # noqa: E402
CONFIGS = os.path.join(ROOT, "configs", "segmenter")
CITYSCAPES_BASE = os.path.join(CONFIGS, "segmenter_vit-l_mask_8xb1-80k_cityscapes-768x768.py")
PASCAL_BASE = os.path.join(CONFIGS, "segmenter_vit-l_mask_8xb2-80k_pascal-context-480x480.py")

DIM, HEADS, DEPTH, DECODER_DEPTH, NUM_CLASSES, PATCH, IMAGE = 32, 2, 3, 2, 5, 8, 64



# --- the original Segmenter, re-derived (pre-norm ViT blocks, mask transformer) ----------

class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        weights = torch.softmax(q @ k.transpose(-1, -2) / (C // self.heads) ** 0.5, dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)   # torch's eps 1e-5
        self.attn, self.mlp = Attention(dim, heads), Mlp(dim, 4 * dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, dim, patch):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, stride=patch)


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch_embed = PatchEmbed(DIM, PATCH)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, DIM))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + (IMAGE // PATCH) ** 2, DIM))
        self.blocks = nn.ModuleList(Block(DIM, HEADS) for _ in range(DEPTH))
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, 7)   # ImageNet classifier: unused for segmentation

    def forward(self, image):
        B, _, H, W = image.shape
        x = self.patch_embed.proj(image).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(B, -1, -1), x], 1)
        pos = self.pos_embed
        native, grid = IMAGE // PATCH, (H // PATCH, W // PATCH)
        if grid != (native, native):   # bilinear resizing of the patch positions
            patch_pos = pos[:, 1:].reshape(1, native, native, DIM).permute(0, 3, 1, 2)
            patch_pos = F.interpolate(patch_pos, size=grid, mode="bilinear", align_corners=False)
            pos = torch.cat([pos[:, :1], patch_pos.flatten(2).transpose(1, 2)], 1)
        x = x + pos
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class MaskTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.cls_emb = nn.Parameter(torch.zeros(1, NUM_CLASSES, DIM))
        self.proj_dec = nn.Linear(DIM, DIM)
        self.blocks = nn.ModuleList(Block(DIM, HEADS) for _ in range(DECODER_DEPTH))
        self.proj_patch = nn.Parameter(torch.zeros(DIM, DIM))     # used as x @ proj_patch
        self.proj_classes = nn.Parameter(torch.zeros(DIM, DIM))
        self.decoder_norm = nn.LayerNorm(DIM)
        self.mask_norm = nn.LayerNorm(NUM_CLASSES)

    def forward(self, patches, grid):
        x = torch.cat([self.proj_dec(patches),
                       self.cls_emb.expand(patches.shape[0], -1, -1)], 1)
        for block in self.blocks:
            x = block(x)
        x = self.decoder_norm(x)
        patch_feats = x[:, :-NUM_CLASSES] @ self.proj_patch
        class_feats = x[:, -NUM_CLASSES:] @ self.proj_classes
        patch_feats = patch_feats / patch_feats.norm(dim=-1, keepdim=True)
        class_feats = class_feats / class_feats.norm(dim=-1, keepdim=True)
        masks = self.mask_norm(patch_feats @ class_feats.transpose(1, 2))   # (B, N, classes)
        return masks.transpose(1, 2).reshape(patches.shape[0], NUM_CLASSES, *grid)


class OriginalSegmenter(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder, self.decoder = Encoder(), MaskTransformer()

    def forward(self, image):
        """Logits at the token grid (before upsampling); pads like the original."""
        H, W = image.shape[-2:]
        image = F.pad(image, (0, -W % PATCH, 0, -H % PATCH))
        tokens = self.encoder(image)[:, 1:]
        return self.decoder(tokens, (image.shape[-2] // PATCH, image.shape[-1] // PATCH))


def random_original_segmenter():
    model = OriginalSegmenter()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                param.copy_(1 + 0.3 * torch.randn_like(param))
            else:
                param.normal_(0, 0.2)
        # Tiny embeddings: the first LayerNorm sees a variance ~2e-4, so a wrong eps
        # (mmseg's usual 1e-6 instead of the original's 1e-5) changes the logits visibly.
        for param in (model.encoder.patch_embed.proj.weight, model.encoder.patch_embed.proj.bias,
                      model.encoder.cls_token, model.encoder.pos_embed):
            param.mul_(5e-3)
    return model.eval()


def save_original_format(model, path):
    """The original release's checkpoint layout (segm/train.py's snapshot)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "n_cls": NUM_CLASSES, "lr_scheduler": {"last_epoch": 215, "base_lrs": [0.01]},
                "epoch": 215}, path)


def small_mmseg_segmenter(config_path, **backbone):
    """The model of one of our configs with its dimensions shrunk to the reference's."""
    init_default_scope("mmseg")
    cfg = Config.fromfile(config_path).model
    cfg.pretrained = None
    cfg.backbone.update(img_size=(IMAGE, IMAGE), patch_size=PATCH, embed_dims=DIM,
                        num_layers=DEPTH, num_heads=HEADS, mlp_ratio=4, **backbone)
    cfg.decode_head.update(in_channels=DIM, channels=DIM, embed_dims=DIM, num_heads=HEADS,
                           num_layers=DECODER_DEPTH, num_classes=NUM_CLASSES)
    return MODELS.build(cfg).eval()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    torch.manual_seed(0)
    original = random_original_segmenter()
    folder = tmp_path_factory.mktemp("segmenter")
    src, dst = folder / "checkpoint.pth", folder / "converted" / "segmenter_mmseg.pth"
    save_original_format(original, src)
    run_command("convert-segmenter", src, dst)            # the CLI, as documented
    return original, dst


@pytest.mark.parametrize("config", [CITYSCAPES_BASE, PASCAL_BASE])
def test_converted_checkpoint_gives_the_original_logits(converted, config):
    original, dst = converted
    model = small_mmseg_segmenter(config)
    load_checkpoint(model, str(dst), map_location="cpu", strict=True)   # no missing/unexpected
    # the native size, another size (bilinear position resizing) and one that needs padding
    for shape in [(2, 3, IMAGE, IMAGE), (1, 3, 48, 80), (1, 3, 60, 90)]:
        image = torch.randn(*shape)
        with torch.no_grad():
            expected = original(image)
            logits = model.decode_head(model.extract_feat(image))
        assert logits.shape == expected.shape == (shape[0], NUM_CLASSES,
                                                  -(-shape[2] // PATCH), -(-shape[3] // PATCH))
        torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


def test_converted_keys_and_values(converted):
    original, dst = converted
    state = torch.load(dst, map_location="cpu", weights_only=True)["state_dict"]
    sd = original.state_dict()
    assert all(k.startswith(("backbone.", "decode_head.")) for k in state)
    assert not any(".head." in k for k in state)
    assert torch.equal(state["decode_head.patch_proj.weight"], sd["decoder.proj_patch"].t())
    assert torch.equal(state["backbone.layers.1.attn.attn.in_proj_weight"],
                       sd["encoder.blocks.1.attn.qkv.weight"])
    assert torch.equal(state["backbone.ln1.weight"], sd["encoder.norm.weight"])
    # everything but the ImageNet classifier is carried over, nothing is invented
    assert len(state) == len(sd) - 2


def test_converted_checkpoint_loads_into_the_expedited_config(converted):
    _, dst = converted
    config = os.path.join(CONFIGS, "segmenter_vit-l_expedite-a12-32x32_cityscapes-768x768.py")
    model = small_mmseg_segmenter(config, cluster_after=1, cluster_grid=(5, 5))
    assert type(model.backbone).__name__ == "ExpeditedViT"
    assert model.backbone.reconstruction.normalize == "l2"
    assert model.reconstructs_logits        # the released computation: head on the centres
    load_checkpoint(model, str(dst), map_location="cpu", strict=True)
    with torch.no_grad():
        logits = model._forward(torch.randn(1, 3, IMAGE, IMAGE))
    assert logits.shape == (1, NUM_CLASSES, IMAGE // PATCH, IMAGE // PATCH)
    assert torch.isfinite(logits).all()


def test_rejects_what_it_cannot_convert():
    sd = random_original_segmenter().state_dict()
    with pytest.raises(converter.SegmenterConversionError, match="distill"):
        converter.convert_segmenter({**sd, "encoder.dist_token": torch.zeros(1, 1, DIM)})
    with pytest.raises(converter.SegmenterConversionError, match="decoder.head.weight"):
        converter.convert_segmenter({**sd, "decoder.head.weight": torch.zeros(5, DIM)})
    with pytest.raises(converter.SegmenterConversionError, match="original Segmenter"):
        converter.extract_state_dict({"state_dict": {"backbone.ln1.weight": torch.zeros(2)}})


def test_untrusted_checkpoint_is_refused_without_the_flag(tmp_path):
    from expedite_mm.apis.checkpoint import UntrustedCheckpointError

    src = tmp_path / "checkpoint.pth"
    torch.save({"model": random_original_segmenter().state_dict(),
                "variant": Config(dict(a=1))}, src)    # an object outside the allow-list
    with pytest.raises(UntrustedCheckpointError, match="--trust-checkpoint"):
        run_command("convert-segmenter", src, tmp_path / "out.pth")
    run_command("convert-segmenter", src, tmp_path / "out.pth", "--trust-checkpoint")
    assert (tmp_path / "out.pth").exists()
