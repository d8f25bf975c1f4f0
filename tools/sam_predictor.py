"""Prompted segmentation with SAM's prompt encoder and mask decoder on our image embeddings.

    python tools/sam_predictor.py CONFIG ENCODER_CHECKPOINT SAM_CHECKPOINT IMAGE
        --point X Y [--point X Y ...] [--negative X Y ...] [--box X0 Y0 X1 Y1]
        [--model-type vit_h|vit_l|vit_b] [--device cpu|cuda] [--out mask.png]

CONFIG is one of ``configs/sam/`` (expedited or stock), ENCODER_CHECKPOINT mmpretrain's
converted SAM weights that the config names in ``load_from``, SAM_CHECKPOINT the official
SAM checkpoint (``sam_vit_h_4b8939.pth`` etc.) for the prompt encoder and mask decoder.
Needs Meta's ``segment_anything`` package (``pip install segment-anything``; not a
dependency of expedite-mm). Its ``SamPredictor`` resizes and normalises the image as SAM
does; only the image encoder is ours (:func:`expedite_mm.apis.sam.with_encoder`), so the
masks show what expediting the encoder changes. Prints the masks' predicted IoUs and
writes the best one.
"""
from __future__ import annotations

import argparse

import torch


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("encoder_checkpoint")
    parser.add_argument("sam_checkpoint")
    parser.add_argument("image")
    parser.add_argument("--point", type=float, nargs=2, action="append", default=[],
                        metavar=("X", "Y"), help="a foreground point (pixels)")
    parser.add_argument("--negative", type=float, nargs=2, action="append", default=[],
                        metavar=("X", "Y"), help="a background point (pixels)")
    parser.add_argument("--box", type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"))
    parser.add_argument("--model-type", default="vit_h", choices=("vit_h", "vit_l", "vit_b"))
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="load an encoder checkpoint holding arbitrary objects (unsafe)")
    parser.add_argument("--out", default="mask.png", help="where the best mask goes (PNG)")
    args = parser.parse_args(argv)
    if not (args.point or args.negative or args.box):
        parser.error("give a prompt: --point, --negative and/or --box")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        from segment_anything import SamPredictor, sam_model_registry
    except ImportError as error:
        raise SystemExit("tools/sam_predictor.py needs Meta's segment_anything package "
                         "(pip install segment-anything)") from error
    import cv2
    import numpy as np

    import expedite_mm

    expedite_mm.register_all_modules()  # registers the encoder
    from expedite_mm.apis.config import build_model, load_config
    from expedite_mm.apis.sam import with_encoder

    model = build_model(load_config(args.config), args.encoder_checkpoint, args.device,
                        args.trust_checkpoint)
    sam = sam_model_registry[args.model_type](checkpoint=args.sam_checkpoint).to(args.device)
    predictor = SamPredictor(with_encoder(sam, model).eval())
    image = cv2.imread(args.image)
    if image is None:
        raise SystemExit(f"cannot read the image {args.image}")
    with torch.no_grad():
        predictor.set_image(image[..., ::-1].copy())       # RGB
        points = args.point + args.negative
        masks, scores, _ = predictor.predict(
            point_coords=np.array(points) if points else None,
            point_labels=np.array([1] * len(args.point) + [0] * len(args.negative))
            if points else None,
            box=np.array(args.box) if args.box else None, multimask_output=True)
    best = int(np.argmax(scores))
    print("predicted IoU per mask:", ", ".join(f"{s:.3f}" for s in scores), f"(best: {best})")
    cv2.imwrite(args.out, masks[best].astype(np.uint8) * 255)
    return masks, scores


if __name__ == "__main__":
    main()
