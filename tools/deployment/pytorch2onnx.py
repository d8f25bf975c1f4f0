"""Export an mmseg segmentor (stock or expedited) to ONNX, optionally verified with ONNX Runtime.

    python tools/deployment/pytorch2onnx.py CONFIG [--checkpoint F [--trust-checkpoint]]
        --shape H W --out F.onnx [--batch-size 1] [--dynamic] [--verify [--tolerance 1e-3]]
        [--exporter dynamo|torchscript] [--threads N] [--cfg-options k=v ...] [--json FILE]

Supported models: mmseg ``EncoderDecoder`` and its subclasses (``DepthEstimator``, the
Segmenter segmentors) with a plain-ViT backbone: mmseg ``VisionTransformer``,
``ExpeditedViT``, ``HybridViT`` / ``ExpeditedHybridViT``. Other models are refused
with a message saying so.

The graph is the network as ``model.forward(inputs, mode='tensor')`` runs it (backbone,
neck, decode head: the logits at the head's resolution; no data preprocessor, resize or
argmax) on a preprocessed ``(B, 3, H, W)`` batch. Token clustering and reconstruction
become plain ONNX ops (no Loop, no custom op); their index tables are constants of the
token grid, so ``H x W`` is fixed; ``--dynamic`` makes the batch dimension dynamic.
Without ``--checkpoint`` the weights are random (enough for latency and for checking the
export). ``--exporter``: torch's torch.export-based exporter ('dynamo', the default on
torch >= 2.5 with onnxscript) or its TorchScript tracing exporter ('torchscript', the
default before, e.g. on torch 2.1). ``--verify`` runs the file with ONNX Runtime (CPU) on a random batch and
compares with PyTorch: printed are the largest absolute difference, that difference
relative to the largest absolute PyTorch output, and the relative error
``||ORT - PyTorch|| / ||PyTorch||`` over all outputs; the exit status is 1 when the
relative error exceeds ``--tolerance`` (default 1e-3). (The largest difference is not
the criterion: the reconstruction's top-k is discrete, and a token tied to fp32 rounding
between its k-th and (k+1)-th centre may pick either under another summation order;
see ``expedite_mm.apis.deploy.Verification``.) ``--json`` also writes what it did (the
operators, the errors) to a file.
"""
from __future__ import annotations

import argparse
import json
import sys

from mmengine.config import DictAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("--checkpoint", help="weights to load (default: random weights)")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="load a checkpoint holding arbitrary objects (unsafe unpickling)")
    parser.add_argument("--shape", type=int, nargs="+", metavar="N", required=True,
                        help="input H W (or one size for a square)")
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument("--batch-size", type=int, default=1, help="batch of the example input")
    parser.add_argument("--dynamic", action="store_true", help="dynamic batch dimension")
    parser.add_argument("--verify", action="store_true",
                        help="compare ONNX Runtime (CPU) with PyTorch on a random batch")
    parser.add_argument("--tolerance", type=float, default=1e-3,
                        help="largest accepted relative (L2) error of --verify")
    parser.add_argument("--exporter", choices=("dynamo", "torchscript"),
                        help="torch's ONNX exporter (default: dynamo where torch >= 2.5 has "
                             "it, else torchscript)")
    parser.add_argument("--threads", type=int, help="torch / ONNX Runtime CPU threads")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={})
    parser.add_argument("--json", help="also write the summary to this JSON file")
    args = parser.parse_args(argv)
    if len(args.shape) not in (1, 2) or min(args.shape) < 1:
        parser.error("--shape takes H W or one size, >= 1")
    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    if not args.tolerance > 0:
        parser.error("--tolerance must be > 0")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    import expedite_mm  # noqa: F401  (registers the backbones)
    from expedite_mm.apis.config import build_model, load_config
    from expedite_mm.apis.deploy import check_exportable, export_onnx, onnx_op_counts, verify

    if args.threads:
        torch.set_num_threads(args.threads)
    shape = tuple((args.shape * 2)[:2])
    cfg = load_config(args.config, args.cfg_options)
    model = build_model(cfg, args.checkpoint, "cpu", args.trust_checkpoint)
    try:
        check_exportable(model)
    except ValueError as error:
        raise SystemExit(f"pytorch2onnx: {error}")
    try:
        export_onnx(model, args.out, shape, args.batch_size, args.dynamic,
                    exporter=args.exporter)
    except RuntimeError as error:
        if "needs torch" not in str(error):
            raise
        raise SystemExit(f"pytorch2onnx: {error}")
    ops = onnx_op_counts(args.out)
    print(f"wrote {args.out}: {sum(ops.values())} nodes, "
          f"{', '.join(f'{op} {n}' for op, n in sorted(ops.items(), key=lambda kv: -kv[1]))}")
    from expedite_mm.apis.deploy import default_exporter
    summary = {"config": args.config, "out": args.out, "shape": list(shape),
               "batch_size": args.batch_size, "dynamic": args.dynamic, "ops": ops,
               "exporter": args.exporter or default_exporter()}
    if args.verify:
        check = verify(model, args.out, shape, args.batch_size, args.tolerance,
                       threads=args.threads)
        summary.update(max_abs_error=check.max_abs, max_rel_error=check.max_rel,
                       rel_error=check.rel, tolerance=args.tolerance, verified=check.ok)
        print(f"ONNX Runtime vs PyTorch at {shape[0]}x{shape[1]}, batch {args.batch_size}: "
              f"max abs error {check.max_abs:.3e} ({check.max_rel:.3e} of the largest "
              f"output), relative error {check.rel:.3e} (tolerance {args.tolerance:g}): "
              f"{'OK' if check.ok else 'FAILED'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    if args.verify and not summary["verified"]:
        sys.exit(1)
    return summary


if __name__ == "__main__":
    main()
