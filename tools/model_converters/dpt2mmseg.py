"""Convert an official DPT hybrid checkpoint (isl-org/DPT) to our mmseg key names.

Supported: the R50+ViT-B/16 hybrid monodepth releases (``dpt_hybrid_kitti-cb926ef4.pt``,
``dpt_hybrid_nyu-2ce69ec7.pt``, https://github.com/isl-org/DPT/releases/tag/1_0); the
result loads strictly into ``configs/dpt/dpt_hybrid-r50-vitb16_*`` and the expedited
configs that inherit them.

Usage::

    python tools/model_converters/dpt2mmseg.py \
        https://github.com/isl-org/DPT/releases/download/1_0/dpt_hybrid_kitti-cb926ef4.pt \
        checkpoints/dpt_hybrid-r50-vitb16_kitti-352x1216.pth

What the release holds and how it maps, and the keys it drops (listed on stdout):
:mod:`expedite_mm.converters.dpt`.
"""
from __future__ import annotations

import os.path as osp
import sys


def main(argv=None) -> None:
    # Run as a script from anywhere: make the repository's expedite_mm importable.
    sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), "..", "..")))
    from expedite_mm.apis.convert import converter_parser
    from expedite_mm.converters.dpt import convert_checkpoint

    args = converter_parser("Convert an official DPT hybrid checkpoint (isl-org/DPT) to "
                            "MMSegmentation key names (HybridViT + DPTDepthHead).",
                            "official checkpoint").parse_args(argv)
    convert_checkpoint(args.src, args.dst, args.trust_checkpoint)


if __name__ == "__main__":
    main()
