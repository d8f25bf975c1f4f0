"""The main job on an embedded default (no downloads): `make demo`.

1. Builds Segmenter ViT-L/16 for ADE20K (640x640, 40x40 tokens) from our config
   ``configs/segmenter/segmenter_vit-l_expedite-a10-28x28_ade20k-640x640.py`` with RANDOM
   weights (official checkpoints cannot be downloaded here; cost does not depend on the
   weight values), and prints fvcore GFLOPs and CPU latency of the stock and the expedited
   model side by side (alpha=10, 28x28 clusters).
2. Writes ``outputs/demo_clustering.png``: how the token clustering layer groups a real
   photo's 16x16 patch tokens (scikit-image's astronaut, the patches' standardised pixels
   as the tokens, 40x40 tokens -> 28x28 clusters), with the cluster boundaries drawn over
   the image, next to the image rebuilt by token reconstruction from the 784 centres.

    python tools/demo.py [--config CONFIG] [--repeat 3] [--out outputs/demo_clustering.png]

Both parts are :mod:`expedite_mm.analysis.demo`.
"""
from __future__ import annotations

import argparse
import os.path as osp

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEFAULT_CONFIG = osp.join(ROOT, "configs/segmenter/segmenter_vit-l_expedite-a10-28x28_ade20k-640x640.py")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--repeat", type=int, default=3, help="timed calls per model")
    parser.add_argument("--out", default=osp.join(ROOT, "outputs", "demo_clustering.png"))
    parser.add_argument("--skip-model", action="store_true",
                        help="only draw the clustering picture")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    import expedite_mm
    expedite_mm.register_all_modules()  # registers the backbones
    from expedite_mm.analysis.demo import compare_model, draw_clustering, print_comparison

    if not args.skip_model:
        print_comparison(args.config, compare_model(args.config, args.repeat))
    drawn = draw_clustering(args.out)
    print(f"wrote {args.out}: {drawn['clusters_used']} of 784 clusters hold tokens; "
          f"patch tokens rebuilt from the centres at {drawn['psnr']:.1f} dB PSNR")


if __name__ == "__main__":
    main()
