"""A deliberately naive DPT hybrid (R50+ViT + DPT decoder + monodepth head), for the tests.

Written from the DPT paper and the ViT paper's hybrid, with the *release's* module
names (isl-org/DPT on timm's ``vit_base_resnet50_384``), so that its ``state_dict`` has
the release's keys: ``pretrained.model.patch_embed.backbone.stem.conv.weight``,
``pretrained.model.blocks.N...``, ``pretrained.act_postprocess3...``,
``scratch.refinenetN...``, ``scratch.output_conv...``. The forward is spelled out with
explicit formulas (weight standardisation, TF ``SAME`` padding, attention) and shares
nothing with ``expedite_mm``. Dimensions are parameters, so tests run it small.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn


def _same_pad(x, kernel, stride, value=0.0):
    """TensorFlow 'SAME': output ceil(in / stride), extra padding at the end."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):          # F.pad wants last dim first
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)


def std_conv(x, conv):
    """Weight-standardised convolution (biased variance, eps 1e-8) with SAME padding."""
    w = conv.weight
    mean = w.mean(dim=(1, 2, 3), keepdim=True)
    var = ((w - mean) ** 2).mean(dim=(1, 2, 3), keepdim=True)
    w = (w - mean) / torch.sqrt(var + 1e-8)
    return F.conv2d(_same_pad(x, w.shape[-1], conv.stride[0]), w, None, conv.stride[0])


class Block(nn.Module):                      # timm's non-pre-activation Bottleneck names
    def __init__(self, cin, cout, stride, groups, projection):
        super().__init__()
        mid = cout // 4
        self.downsample = None
        if projection:                               # the first block of every stage
            self.downsample = nn.Module()
            self.downsample.conv = nn.Conv2d(cin, cout, 1, stride, bias=False)
            self.downsample.norm = nn.GroupNorm(groups, cout)
        self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
        self.norm1 = nn.GroupNorm(groups, mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, bias=False)
        self.norm2 = nn.GroupNorm(groups, mid)
        self.conv3 = nn.Conv2d(mid, cout, 1, bias=False)
        self.norm3 = nn.GroupNorm(groups, cout)

    def forward(self, x):
        shortcut = x
        if self.downsample is not None:
            shortcut = self.downsample.norm(std_conv(x, self.downsample.conv))
        y = torch.relu(self.norm1(std_conv(x, self.conv1)))
        y = torch.relu(self.norm2(std_conv(y, self.conv2)))
        y = self.norm3(std_conv(y, self.conv3))
        return torch.relu(y + shortcut)


class ReleaseDPTHybrid(nn.Module):
    """DPT hybrid depth model with release key names.

    ``vit_taps`` are the 0-based ViT blocks DPT hooks (8, 11 in the release); the two
    ResNet taps are stages 0 and 1. ``scale``/``shift``: the KITTI/NYU inverse-depth map.
    """

    def __init__(self, depths=(3, 4, 9), stage_channels=(256, 512, 1024), stem=64, groups=32,
                 embed=768, num_layers=12, heads=12, mlp=4, pos_grid=24, vit_taps=(8, 11),
                 features=256, head_channels=32, scale=1.0, shift=0.0, num_classes=1000):
        super().__init__()
        self.heads, self.vit_taps, self.scale, self.shift = heads, vit_taps, scale, shift
        self.pretrained = nn.Module()
        model = self.pretrained.model = nn.Module()
        model.cls_token = nn.Parameter(torch.zeros(1, 1, embed))
        model.pos_embed = nn.Parameter(torch.zeros(1, pos_grid * pos_grid + 1, embed))
        model.patch_embed = nn.Module()
        backbone = model.patch_embed.backbone = nn.Module()
        backbone.stem = nn.Module()
        backbone.stem.conv = nn.Conv2d(3, stem, 7, 2, bias=False)
        backbone.stem.norm = nn.GroupNorm(groups, stem)
        backbone.stages = nn.ModuleList()
        cin = stem
        for s, (depth, cout) in enumerate(zip(depths, stage_channels)):
            stage = nn.Module()
            stage.blocks = nn.ModuleList(
                [Block(cin, cout, 1 if s == 0 else 2, groups, True)] +
                [Block(cout, cout, 1, groups, False) for _ in range(depth - 1)])
            backbone.stages.append(stage)
            cin = cout
        model.patch_embed.proj = nn.Conv2d(cin, embed, 1)
        model.blocks = nn.ModuleList()
        for _ in range(num_layers):
            blk = nn.Module()
            blk.norm1 = nn.LayerNorm(embed, eps=1e-6)
            blk.attn = nn.Module()
            blk.attn.qkv = nn.Linear(embed, 3 * embed)
            blk.attn.proj = nn.Linear(embed, embed)
            blk.norm2 = nn.LayerNorm(embed, eps=1e-6)
            blk.mlp = nn.Module()
            blk.mlp.fc1 = nn.Linear(embed, mlp * embed)
            blk.mlp.fc2 = nn.Linear(mlp * embed, embed)
            model.blocks.append(blk)
        model.norm = nn.LayerNorm(embed, eps=1e-6)      # unused by DPT
        model.head = nn.Linear(embed, num_classes)      # unused by DPT
        for n in (3, 4):
            readout = nn.Module()
            readout.project = nn.Sequential(nn.Linear(2 * embed, embed), nn.GELU())
            post = [readout, nn.Identity(), nn.Identity(), nn.Conv2d(embed, embed, 1)]
            if n == 4:
                post.append(nn.Conv2d(embed, embed, 3, stride=2, padding=1))
            setattr(self.pretrained, f"act_postprocess{n}", nn.Sequential(*post))
        self.scratch = nn.Module()
        for n, c in enumerate((stage_channels[0], stage_channels[1], embed, embed), 1):
            setattr(self.scratch, f"layer{n}_rn", nn.Conv2d(c, features, 3, padding=1, bias=False))
            ref = nn.Module()
            for unit in (1, 2):
                rcu = nn.Module()
                rcu.conv1 = nn.Conv2d(features, features, 3, padding=1)
                rcu.conv2 = nn.Conv2d(features, features, 3, padding=1)
                setattr(ref, f"resConfUnit{unit}", rcu)
            ref.out_conv = nn.Conv2d(features, features, 1)
            setattr(self.scratch, f"refinenet{n}", ref)
        self.scratch.output_conv = nn.Sequential(
            nn.Conv2d(features, features // 2, 3, padding=1), nn.Identity(),
            nn.Conv2d(features // 2, head_channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(head_channels, 1, 1), nn.ReLU(), nn.Identity())

    # ------------------------------------------------------------------ pieces
    def vit_block(self, blk, x):
        B, L, C = x.shape
        h = blk.norm1(x)
        qkv = blk.attn.qkv(h).reshape(B, L, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(C // self.heads), dim=-1)
        x = x + blk.attn.proj((attn @ v).transpose(1, 2).reshape(B, L, C))
        h = blk.norm2(x)
        return x + blk.mlp.fc2(F.gelu(blk.mlp.fc1(h)))

    def rcu(self, unit, x):
        return x + unit.conv2(torch.relu(unit.conv1(torch.relu(x))))

    def refine(self, ref, x, skip=None):
        if skip is not None:
            x = x + self.rcu(ref.resConfUnit1, skip)
        x = self.rcu(ref.resConfUnit2, x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return ref.out_conv(x)

    def reassemble(self, post, tokens, gh, gw):
        readout = tokens[:, :1].expand(-1, tokens.shape[1] - 1, -1)
        x = post[0].project(torch.cat([tokens[:, 1:], readout], dim=-1))
        x = x.transpose(1, 2).reshape(x.shape[0], x.shape[2], gh, gw)
        for layer in list(post)[3:]:
            x = layer(x)
        return x

    # ------------------------------------------------------------------ forward
    def taps(self, img):
        """The four DPT taps: ResNet stages 0 and 1, ViT blocks ``vit_taps`` (tokens)."""
        model = self.pretrained.model
        backbone = model.patch_embed.backbone
        x = torch.relu(backbone.stem.norm(std_conv(img, backbone.stem.conv)))
        x = F.max_pool2d(_same_pad(x, 3, 2, value=-math.inf), 3, 2)
        stage_outs = []
        for stage in backbone.stages:
            for block in stage.blocks:
                x = block(x)
            stage_outs.append(x)
        x = model.patch_embed.proj(x)
        gh, gw = x.shape[-2:]
        tokens = x.flatten(2).transpose(1, 2)
        tokens = torch.cat([model.cls_token.expand(img.shape[0], -1, -1), tokens], dim=1)
        # DPT resizes the position embedding bilinearly to every input's token grid
        old = int(math.sqrt(model.pos_embed.shape[1] - 1))
        grid = model.pos_embed[0, 1:].reshape(1, old, old, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(gh, gw), mode="bilinear", align_corners=False)
        pos = torch.cat([model.pos_embed[:, :1], grid.flatten(2).transpose(1, 2)], dim=1)
        tokens = tokens + pos
        vit_outs = []
        for index, blk in enumerate(model.blocks):
            tokens = self.vit_block(blk, tokens)
            if index in self.vit_taps:
                vit_outs.append(tokens)
        return stage_outs[0], stage_outs[1], vit_outs[0], vit_outs[1], (gh, gw)

    def forward(self, img):
        l1, l2, t3, t4, (gh, gw) = self.taps(img)
        l3 = self.reassemble(self.pretrained.act_postprocess3, t3, gh, gw)
        l4 = self.reassemble(self.pretrained.act_postprocess4, t4, gh, gw)
        s = self.scratch
        path = self.refine(s.refinenet4, s.layer4_rn(l4))
        path = self.refine(s.refinenet3, path, s.layer3_rn(l3))
        path = self.refine(s.refinenet2, path, s.layer2_rn(l2))
        path = self.refine(s.refinenet1, path, s.layer1_rn(l1))
        head = s.output_conv
        out = head[0](path)
        out = F.interpolate(out, scale_factor=2, mode="bilinear", align_corners=True)
        out = torch.relu(head[4](torch.relu(head[2](out))))
        inverse = self.scale * out.squeeze(1) + self.shift          # (B, H, W), as DPT
        return 1.0 / torch.where(inverse < 1e-8, torch.full_like(inverse, 1e-8), inverse)


def randomize_(module, seed=0):
    """Random, well-scaled weights everywhere (norm gains near 1, small biases)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:                                   # norm gains
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith(("cls_token", "pos_embed")):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
    return module
