"""Token fidelity of an expedited backbone against the stock one, on real photos.

    python tools/analysis/backbone_fidelity.py CONFIG [--checkpoint F] [--images FILE ...]
        [--shape H W] [--cfg-options k=v ...] [--json FILE]

Builds the config's model twice with the same weights (the checkpoint's, or the random
initialisation: no download needed), expedited and with expediting disabled (the stock
forward, bit for bit), runs both backbones on the photos (default: scikit-image's
astronaut, coffee, chelsea and rocket), resized and centre-cropped to the config's test
crop and normalised by its preprocessor, and reports for every backbone output: the
relative error ``||expedited - stock|| / ||stock||`` and the mean cosine similarity of the
tokens (feature vectors), averaged over the photos. Outputs taken before clustering are
identical (error 0). Without a checkpoint the numbers say how well the centres carry a
randomly initialised network's features, not what a trained one loses.
"""
from __future__ import annotations

import argparse
import json
from typing import Dict, List

import numpy as np
import torch

from expedite_mm.utils.config import CfgOptionsAction

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("--checkpoint", help="weights (path or URL); default: random init")
    parser.add_argument("--trust-checkpoint", action="store_true")
    parser.add_argument("--images", nargs="+", help="image files (default: scikit-image photos)")
    parser.add_argument("--shape", type=int, nargs=2, metavar=("H", "W"),
                        help="input size (default: the config's test crop)")
    parser.add_argument("--cfg-options", nargs="+", action=CfgOptionsAction, default={})
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    return parser.parse_args(argv)


def photos(files=None) -> Dict[str, np.ndarray]:
    """RGB uint8 images by name."""
    if files:
        import mmcv
        return {name: mmcv.imread(name, channel_order="rgb") for name in files}
    from skimage import data
    return {name: getattr(data, name)() for name in PHOTOS}


def crop(image: np.ndarray, shape) -> np.ndarray:
    """Resize the short side to cover ``shape``, then centre-crop to it."""
    import mmcv
    h, w = image.shape[:2]
    scale = max(shape[0] / h, shape[1] / w)
    image = mmcv.imresize(image, (max(shape[1], round(w * scale)), max(shape[0], round(h * scale))))
    top, left = (image.shape[0] - shape[0]) // 2, (image.shape[1] - shape[1]) // 2
    return image[top:top + shape[0], left:left + shape[1]]


def compare(ours: torch.Tensor, stock: torch.Tensor) -> Dict[str, float]:
    """Relative L2 error and mean cosine similarity of the (B, C, ...) feature vectors."""
    ours, stock = ours.double(), stock.double()
    error = ((ours - stock).norm() / stock.norm()).item()
    cosine = torch.nn.functional.cosine_similarity(ours.flatten(2), stock.flatten(2), dim=1)
    return {"relative_error": error, "cosine": cosine.mean().item()}


def main(argv=None) -> dict:
    args = parse_args(argv)
    import expedite_mm.models  # noqa: F401  (registers the backbones)
    from expedite_mm.utils.checkpoint import checkpoint_policy, load_state_dict_checked
    from expedite_mm.utils.config import (build_model, default_input_shape, disable_expedite,
                                          flatten_outputs, load_config)

    cfg = load_config(args.config, args.cfg_options)
    shape = tuple(args.shape) if args.shape else default_input_shape(cfg)
    with checkpoint_policy(trust=args.trust_checkpoint, source=args.checkpoint):
        torch.manual_seed(0)
        ours = build_model(cfg, args.checkpoint, trust_checkpoint=args.trust_checkpoint)
    stock = build_model(disable_expedite(cfg))
    load_state_dict_checked(stock, ours.state_dict())
    per_output: List[List[Dict[str, float]]] = []
    for name, image in photos(args.images).items():
        bgr = np.ascontiguousarray(crop(image, shape)[..., ::-1])     # as LoadImageFromFile
        batch = ours.data_preprocessor(
            {"inputs": [torch.from_numpy(bgr.transpose(2, 0, 1).copy())]}, False)["inputs"]
        with torch.no_grad():
            pairs = zip(flatten_outputs(ours.backbone(batch)), flatten_outputs(stock.backbone(batch)))
            rows = [compare(a, b) for a, b in pairs if a.dim() >= 3]
        per_output.append(rows)
        print(f"{name}: " + "  ".join(f"out{i} err {r['relative_error']:.4f} cos {r['cosine']:.4f}"
                                      for i, r in enumerate(rows)))
    mean = [{key: float(np.mean([rows[i][key] for rows in per_output])) for key in first}
            for i, first in enumerate(per_output[0])]
    summary = {"config": args.config, "shape": list(shape), "checkpoint": args.checkpoint,
               "outputs": mean}
    print(f"{args.config} at {shape[0]}x{shape[1]} "
          f"({'checkpoint' if args.checkpoint else 'random weights'}), mean over "
          f"{len(per_output)} photos:")
    for i, row in enumerate(mean):
        print(f"  output {i}: relative error {row['relative_error']:.4f}, "
              f"cosine {row['cosine']:.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return summary


if __name__ == "__main__":
    main()
