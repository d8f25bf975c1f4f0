"""Golden outputs: what every shipped backbone family computes, recorded once, compared
by ``tests/e2e/test_golden.py`` after every change.

Every case builds a tiny model through the public surface only (registered type names,
config keys; nothing of the code's internals), gives it weights that depend on the
parameter *names* alone (so the construction order of modules cannot change them), runs
fixed inputs (odd, non-square, batched) in float64 and returns its outputs flattened to a
list of tensors. ``tests/golden/outputs.pt`` holds what the recording run returned: the
sha256 digest of every output's float64 bytes (bit identity) and a float32 copy (to say
how far apart, should they differ).

Record (only when a change of behaviour is intended, and say so in the commit)::

    PYTHONPATH=$PWD python tests/helpers/golden_cases.py --record

or, where only some cases change, only those (the other entries are kept as they are)::

    PYTHONPATH=$PWD python tests/helpers/golden_cases.py --record NAME [NAME ...]
"""
from __future__ import annotations

import hashlib
import importlib
import os
import os.path as osp
import sys
import warnings
import zlib
from typing import Callable, Dict, List

import torch

GOLDEN = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), "golden", "outputs.pt")
DTYPE = torch.float64
# Sums are split across threads, so the last bits of an output depend on the thread count
# (and on the CPU's kernels): every case runs with this many threads.
THREADS = 2


# --------------------------------------------------------------------------- helpers
def fill_by_name(model: torch.nn.Module) -> torch.nn.Module:
    """Deterministic weights from each parameter's name (not from the RNG's history)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            generator = torch.Generator().manual_seed(zlib.crc32(name.encode()))
            noise = torch.randn(param.shape, generator=generator, dtype=torch.float64)
            if any(key in name for key in ("pos_embed", "cls_token", "rel_pos",
                                           "relative_position_bias_table")):
                value = 0.5 * noise
            elif "logit_scale" in name:
                value = 2.3 + 0.1 * noise
            elif name.endswith("bias") or param.dim() == 0:
                value = 0.1 * noise
            elif param.dim() == 1:                        # norm / layer-scale weights
                value = 1.0 + 0.2 * noise
            else:
                fan_in = max(1, param[0].numel())
                value = noise / fan_in ** 0.5
            param.copy_(value.to(param.dtype))
    model.to(DTYPE)
    model.eval()        # (mmseg's/mmpretrain's backbones' train() returns None: no chaining)
    return model


def images(batch: int, h: int, w: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, h, w, generator=generator, dtype=torch.float64).to(DTYPE)


def flatten(outputs) -> List[torch.Tensor]:
    if isinstance(outputs, torch.Tensor):
        return [outputs.detach().clone()]
    if isinstance(outputs, (list, tuple)):
        return [t for item in outputs for t in flatten(item)]
    if isinstance(outputs, dict):
        return [t for key in sorted(outputs) for t in flatten(outputs[key])]
    raise TypeError(type(outputs))


def registry(package: str):
    import expedite_mm
    expedite_mm.register_all_modules()
    return importlib.import_module(f"{package}.registry").MODELS


def build(package: str, cfg: dict) -> torch.nn.Module:
    from mmengine.registry import init_default_scope
    init_default_scope(package)
    return fill_by_name(registry(package).build(cfg))


def run(model: torch.nn.Module, *inputs) -> List[torch.Tensor]:
    outs = []
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for x in inputs:
            outs += flatten(model(x))
    return outs


# --------------------------------------------------------------------------- families
VIT = dict(type="ExpeditedViT", img_size=(64, 64), patch_size=8, embed_dims=16, num_layers=6,
           num_heads=2, mlp_ratio=2, final_norm=True, norm_cfg=dict(type="LN", eps=1e-6),
           drop_path_rate=0.0)
VIT_OPS = dict(cluster_window=3, cluster_iters=3, temperature=2.0, reconstruct_k=6)
# 9x11 tokens (batch 2) and 7x5 tokens (batch 1)
VIT_INPUTS = ((2, 72, 88, 1), (1, 56, 40, 2))


def vit(**kwargs) -> Callable[[], List[torch.Tensor]]:
    def case():
        model = build("mmseg", {**VIT, **kwargs})
        return run(model, *(images(*shape) for shape in VIT_INPUTS))
    return case


SEG_VIT = dict(VIT, num_layers=4, with_cls_token=True, out_indices=-1)
SEG_HEAD = dict(type="SegmenterMaskTransformerHead", in_channels=16, channels=16,
                num_classes=3, num_layers=1, num_heads=2, embed_dims=16, dropout_ratio=0.0,
                loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0))


def segmentor(test_cfg: dict, predict: bool = False, **backbone
              ) -> Callable[[], List[torch.Tensor]]:
    """ExpeditedEncoderDecoder: ``_forward`` (logits on the token grid) and, with
    ``predict``, ``encode_decode`` / ``slide_inference`` (the logits at image size)."""
    def case():
        from mmengine.config import ConfigDict
        model = build("mmseg", dict(type="ExpeditedEncoderDecoder",
                                    backbone={**SEG_VIT, **backbone}, decode_head=SEG_HEAD,
                                    test_cfg=ConfigDict(test_cfg)))
        outs = []
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for batch, h, w, seed in ((2, 48, 56, 3), (1, 64, 72, 4)):
                x = images(batch, h, w, seed)
                outs += flatten(model._forward(x))
                if predict:
                    metas = [dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w))] * batch
                    outs.append(model.encode_decode(x, metas) if test_cfg["mode"] == "whole"
                                else model.slide_inference(x, metas))
        return outs
    return case


CLS_VIT = dict(type="ExpeditedVisionTransformer", arch=dict(embed_dims=24, num_layers=6,
               num_heads=2, feedforward_channels=48), img_size=64, patch_size=8)


def classification(**kwargs) -> Callable[[], List[torch.Tensor]]:
    def case():
        model = build("mmpretrain", {**CLS_VIT, **kwargs})
        return run(model, images(2, 72, 56, 5), images(1, 64, 88, 6))   # 9x7, 8x11 tokens
    return case


SAM = dict(type="ExpeditedViTSAM", arch=dict(embed_dims=24, num_layers=6, num_heads=2,
           feedforward_channels=48, global_attn_indexes=[2, 5]), img_size=160, patch_size=16,
           out_channels=8, window_size=6)


def sam(**kwargs) -> Callable[[], List[torch.Tensor]]:
    def case():
        model = build("mmseg", {**SAM, **kwargs})
        return run(model, images(2, 144, 176, 7), images(1, 160, 160, 8))  # 9x11, 10x10
    return case


HYBRID = dict(type="ExpeditedHybridViT", img_size=64, resnet_depths=(1, 2, 1),
              resnet_channels=(16, 32, 32), resnet_stem_channels=8, resnet_num_groups=4,
              embed_dims=16, num_layers=4, num_heads=2, mlp_ratio=2, out_indices=(1, 2, 3),
              final_norm=False, with_cls_token=True, output_cls_token=True,
              norm_cfg=dict(type="LN", eps=1e-6))
DPT_HEAD = dict(type="DPTDepthHead", in_channels=(16, 32, 16, 16, 16), channels=8,
                post_process_channels=(16, 32, 8, 16, 16),
                reassemble_factors=(None, None, 2, 1, 0.5), readout_type="project",
                head_channels=8, invert=True, depth_scale=0.5, depth_shift=0.1)


def dpt(with_head: bool = False, **kwargs) -> Callable[[], List[torch.Tensor]]:
    """The hybrid backbone's ViT outputs (the ResNet taps do not change) and the DPT head."""
    def case():
        backbone = build("mmseg", {**HYBRID, **kwargs})
        head = build("mmseg", DPT_HEAD)
        outs = []
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for x in (images(2, 80, 112, 9), images(1, 112, 80, 10)):   # 5x7, 7x5 tokens
                features = backbone(x)
                outs += flatten(features[2:]) + ([head(features)] if with_head else [])
        return outs
    return case


SWIN = dict(type="ExpeditedSwin", embed_dims=8, depths=(2, 2, 6, 2), num_heads=(1, 2, 2, 4),
            window_size=6, mlp_ratio=2, drop_path_rate=0.0, out_indices=(2,))


def swin(package: str, **kwargs) -> Callable[[], List[torch.Tensor]]:
    def case():
        model = build(package, {**SWIN, **kwargs})
        # stage 3 maps of 13x11 (batch 2) and 7x9 (batch 1) tokens
        return run(model, images(2, 208, 176, 11), images(1, 112, 144, 12))
    return case


SWINV2 = dict(type="ExpeditedSwinV2", arch=dict(embed_dims=8, depths=[2, 2, 6, 2],
              num_heads=[1, 2, 2, 4], extra_norm_every_n_blocks=0),
              window_size=[8, 8, 8, 4], pretrained_window_sizes=[6, 6, 6, 3],
              out_indices=(2,), pad_small_map=True, drop_path_rate=0.0)


def swinv2(package: str, **kwargs) -> Callable[[], List[torch.Tensor]]:
    def case():
        model = build(package, {**SWINV2, **kwargs})
        return run(model, images(2, 208, 176, 13), images(1, 144, 112, 14))  # 13x11, 9x7
    return case


EVIT_LAYERWISE = dict(type="EViT", keep_rate=0.7, layers=(2, 4, 5), fuse_token=True)

CASES: Dict[str, Callable[[], List[torch.Tensor]]] = {
    # ---- mmseg ViT, reconstruction inside the backbone
    "vit/disabled": vit(out_indices=(1, 5)),
    "vit/backbone": vit(cluster_after=2, cluster_grid=(5, 6), out_indices=(1, 3, 5), **VIT_OPS),
    "vit/span_cls_out": vit(cluster_after=1, reconstruct_after=4, cluster_grid=0.6,
                            out_indices=(0, 2, 4), output_cls_token=True, **VIT_OPS),
    "vit/a0_no_cls_origin": vit(cluster_after=0, cluster_grid=(4, 3), with_cls_token=False,
                                out_indices=(2, 5), out_origin=True, pre_norm=True, **VIT_OPS),
    "vit/l2_keep_ties": vit(cluster_after=3, cluster_grid=(4, 4), reconstruct_normalize="l2",
                            reconstruct_ties="keep", out_indices=(4, 5), **VIT_OPS),
    "vit/local_neighbours": vit(cluster_after=2, cluster_grid=(5, 4),
                                reconstruct_neighbours="local", out_indices=(2, 5), **VIT_OPS),
    "vit/default_ops": vit(cluster_after=2, out_indices=(3, 5)),
    "vit/wide_tokens": vit(cluster_after=2, cluster_grid=(5, 6), embed_dims=64, num_heads=4,
                           out_indices=(5,), **VIT_OPS),
    "vit/fallback": vit(cluster_after=2, cluster_grid=(8, 8), out_indices=(2, 5), **VIT_OPS),
    # ---- reducer / reconstructor pairs (ViT)
    "vit/cluster+bilinear": vit(cluster_after=2, cluster_grid=(5, 6), out_indices=(2, 5),
                                reconstructor=dict(type="Bilinear"), **VIT_OPS),
    "vit/avgpool+cluster": vit(cluster_after=2, cluster_grid=(5, 6), out_indices=(2, 5),
                               reducer=dict(type="AvgPool"), **VIT_OPS),
    "vit/avgpool+bilinear": vit(cluster_after=2, cluster_grid=(5, 6), out_indices=(2, 5),
                                reducer=dict(type="AvgPool"), reconstructor=dict(type="Bilinear"),
                                **VIT_OPS),
    "vit/evit+scatter": vit(cluster_after=2, cluster_grid=(5, 6), out_indices=(3, 5),
                            reducer=dict(type="EViT"), **VIT_OPS),
    "vit/evit_fuse_span": vit(cluster_after=1, reconstruct_after=4, cluster_grid=(5, 6),
                              out_indices=(2, 5), reducer=dict(type="EViT", fuse=True), **VIT_OPS),
    "vit/evit_norm_no_cls": vit(cluster_after=2, cluster_grid=(5, 6), with_cls_token=False,
                                out_indices=(5,), reducer=dict(type="EViT", score="norm"),
                                **VIT_OPS),
    "vit/tome+unmerge": vit(cluster_after=2, cluster_grid=(5, 6), out_indices=(2, 5),
                            reducer=dict(type="ToMe"), **VIT_OPS),
    "vit/tome_tokens": vit(cluster_after=3, cluster_grid=(3, 4), out_indices=(5,),
                           reducer=dict(type="ToMe", metric="tokens"), **VIT_OPS),
    # ---- mmseg ViT, logits placement (ExpeditedEncoderDecoder)
    "segmentor/logits_whole": segmentor(dict(mode="whole"), True, cluster_after=2,
                                        cluster_grid=(4, 5),
                                        reconstruct_placement="logits",
                                        reconstruct_normalize="l2", reconstruct_ties="keep",
                                        **VIT_OPS),
    "segmentor/logits_slide": segmentor(dict(mode="slide", crop_size=(48, 48), stride=(32, 32)),
                                        True,
                                        cluster_after=1, cluster_grid=0.7,
                                        reconstruct_placement="logits", **VIT_OPS),
    "segmentor/logits_avgpool": segmentor(dict(mode="whole"), cluster_after=2, cluster_grid=(4, 5),
                                          reconstruct_placement="logits",
                                          reducer=dict(type="AvgPool"), **VIT_OPS),
    "segmentor/backbone_placement": segmentor(dict(mode="whole"), cluster_after=2,
                                              cluster_grid=(4, 5), **VIT_OPS),
    # ---- mmpretrain classification (Expedit-SWAG)
    "classification/disabled": classification(out_type="featmap", out_indices=(1, 5)),
    "classification/cluster_only": classification(cluster_after=2, cluster_grid=(4, 3)),
    "classification/cluster_only_t50": classification(cluster_after=3, cluster_grid=(5, 4),
                                                      temperature=50.0, out_indices=(2, 4, 5)),
    "classification/reconstruct_featmap": classification(
        cluster_after=2, cluster_grid=(4, 3), reconstruct=True, reconstruct_after=4,
        out_type="featmap", out_indices=(1, 3, 5)),
    "classification/reconstruct_avg": classification(cluster_after=1, cluster_grid=(5, 4),
                                                     reconstruct=True, out_type="avg_featmap"),
    "classification/evit_reducer": classification(cluster_after=2, cluster_grid=(4, 3),
                                                  reducer=dict(type="EViT", fuse=True),
                                                  reconstruct=True, out_type="featmap"),
    "classification/tome_reducer": classification(cluster_after=2, cluster_grid=(4, 3),
                                                  reducer=dict(type="ToMe"), reconstruct=True,
                                                  out_type="raw", out_indices=(3, 5)),
    "classification/layerwise_evit": classification(layerwise_reducer=EVIT_LAYERWISE),
    "classification/layerwise_evit_cls": classification(
        layerwise_reducer=dict(type="EViT", keep_rate=0.5, score="cls_attention",
                               fuse_token=False), out_indices=(1, 5)),
    "classification/layerwise_tome": classification(layerwise_reducer=dict(type="ToMe", r=4)),
    "classification/layerwise_tome_schedule": classification(
        layerwise_reducer=dict(type="ToMe", r=[0, 6, 3, 0, 2], proportional_attention=False)),
    # ---- SAM's windowed ViT
    "sam/disabled": sam(out_indices=(2, 5)),
    "sam/default_k": sam(cluster_after=2, cluster_window=3, temperature=20.0, reconstruct_k=6),
    "sam/span_outputs": sam(cluster_after=1, reconstruct_after=4, clustered_window_size=3,
                            out_indices=(0, 2, 5), cluster_window=3, temperature=20.0,
                            reconstruct_k=6, reconstruct_normalize="l2",
                            reconstruct_ties="keep"),
    "sam/no_padding": sam(cluster_after=2, cluster_padding=False, cluster_window=3,
                          temperature=20.0, reconstruct_k=6),
    "sam/avgpool": sam(cluster_after=2, reducer=dict(type="AvgPool"),
                       reconstructor=dict(type="Bilinear")),
    # ---- DPT hybrid
    "dpt/disabled": dpt(),
    "dpt/expedited": dpt(with_head=True, cluster_after=1, cluster_grid=(3, 4), **VIT_OPS),
    "dpt/ratio_grid_a0": dpt(cluster_after=0, cluster_grid=0.7, reconstruct_after=3, **VIT_OPS),
    # ---- Swin (mmseg, mmdet) and SwinV2
    **{f"swin_mmseg/{name}": swin("mmseg", **kwargs) for name, kwargs in {
        "disabled": dict(),
        "default": dict(cluster_after=2, cluster_window=3, temperature=20.0),
        "span_mask_stock": dict(cluster_after=1, reconstruct_after=5,
                                attention_mask_shift="stock", reconstruct_ties="keep",
                                clustered_window_size=3, cluster_window=3, temperature=20.0),
        "no_padding": dict(cluster_after=2, cluster_padding=False, cluster_window=3,
                           temperature=20.0, reconstruct_normalize="l2"),
        "a0_stage1": dict(stage=1, cluster_after=0, reconstruct_after=1,
                          clustered_window_size=5, temperature=20.0),
        "avgpool": dict(cluster_after=2, reducer=dict(type="AvgPool")),
    }.items()},
    # mmdet's SwinTransformer (its own stock classes, the same expedited stage)
    "swin_mmdet/disabled": swin("mmdet"),
    "swin_mmdet/default": swin("mmdet", cluster_after=2, cluster_window=3, temperature=20.0),
    "swin_mmdet/no_padding_mask_stock": swin("mmdet", cluster_after=1, reconstruct_after=4,
                                             cluster_padding=False, attention_mask_shift="stock",
                                             cluster_window=3, temperature=20.0),
    "swinv2_mmdet/disabled": swinv2("mmdet"),
    "swinv2_mmdet/default": swinv2("mmdet", cluster_after=2, clustered_window_size=6,
                                   cluster_window=3, temperature=20.0),
    "swinv2_mmdet/no_padding_mask_stock": swinv2("mmdet", cluster_after=3, reconstruct_after=5,
                                                 clustered_window_size=5, cluster_padding=False,
                                                 attention_mask_shift="stock", temperature=20.0),
    "swinv2_mmseg/default": swinv2("mmseg", cluster_after=2, clustered_window_size=6,
                                   cluster_window=3, temperature=20.0),
}


def run_case(name: str) -> List[torch.Tensor]:
    """The outputs of case ``name``, computed with :data:`THREADS` threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        return CASES[name]()
    finally:
        torch.set_num_threads(threads)


def processor() -> str:
    """The processor's family/model/stepping and a digest of its feature flags (Linux's
    /proc/cpuinfo; "unknown" elsewhere). Two AVX512 machines of different models were seen
    to round the same float64 computation differently (MKL and oneDNN pick kernels by more
    than the capability torch reports), so the bits are compared only on the same model."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            fields = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines()
                          if ":" in line)
    except OSError:
        return "unknown"
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = hashlib.sha256(" ".join(sorted(fields.get("flags", "").split())).encode())
    return (f"{fields.get('cpu family', '?')}/{fields.get('model', '?')}/"
            f"{fields.get('stepping', '?')} {flags.hexdigest()[:12]}")


def machine() -> Dict[str, str]:
    """What the bits of an output depend on besides the code."""
    return {"torch": str(torch.__version__), "cpu": torch.backends.cpu.get_cpu_capability(),
            "processor": processor(), "threads": str(THREADS)}


def compute(names=None, timings=None) -> Dict[str, List[torch.Tensor]]:
    import time
    out = {}
    for name in names or CASES:
        start = time.perf_counter()
        out[name] = run_case(name)
        if timings is not None:
            timings[name] = time.perf_counter() - start
    return out


def digest(tensor: torch.Tensor) -> str:
    """sha256 of the tensor's float64 bytes: equal digests = bit-identical outputs."""
    data = tensor.detach().to("cpu", torch.float64).contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()


def record(names=None) -> None:
    """Save every case's outputs: their digests (bit identity) and float32 copies (how
    far apart, should they differ). With ``names``, only those cases are run and stored
    again; the file's other entries stay as they are, which needs the file to have been
    recorded on this :func:`machine`."""
    unknown = sorted(set(names or ()) - set(CASES))
    if unknown:
        raise SystemExit(f"no such golden cases: {', '.join(unknown)}")
    kept = {}
    if names:
        previous = torch.load(GOLDEN, weights_only=True)
        if any(previous.get(key) != value for key, value in machine().items()):
            raise SystemExit(f"{GOLDEN} was recorded on "
                             f"{ {key: previous.get(key) for key in machine()} }, this is "
                             f"{machine()}: record every case (--record) instead")
        kept = previous["outputs"]
    timings = {}
    outputs = compute(names, timings=timings)
    for name, seconds in sorted(timings.items(), key=lambda item: -item[1])[:10]:
        print(f"{seconds:6.2f} s  {name}")
    stored = {**kept, **{name: [(digest(t), t.float()) for t in tensors]
                         for name, tensors in outputs.items()}}
    os.makedirs(osp.dirname(GOLDEN), exist_ok=True)
    torch.save({**machine(), "dtype": str(DTYPE), "outputs": stored}, GOLDEN)
    size = sum(t.numel() * 4 for tensors in outputs.values() for t in tensors)
    print(f"recorded {len(outputs)} cases, {size / 2**20:.2f} MiB of float32 copies -> {GOLDEN}")


if __name__ == "__main__":
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
    if sys.argv[1:2] == ["--record"]:
        record(sys.argv[2:])
    else:
        print(__doc__)
