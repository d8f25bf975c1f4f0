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
randomly initialised network's features, not what a trained one loses. The comparison is
:mod:`expedite_mm.analysis.backbone_fidelity`.
"""
from __future__ import annotations

import argparse
import json

from expedite_mm.analysis.backbone_fidelity import run_backbone_fidelity
from expedite_mm.apis.config import CfgOptionsAction


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


def main(argv=None) -> dict:
    args = parse_args(argv)
    summary = run_backbone_fidelity(args.config, args.checkpoint, args.trust_checkpoint,
                                    args.images, args.shape, args.cfg_options)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return summary


if __name__ == "__main__":
    main()
