"""Convert an original Segmenter checkpoint (rstrudel/segmenter) to mmseg's key names.

Usage::

    python tools/model_converters/segmenter2mmseg.py \
        https://www.rocq.inria.fr/cluster-willow/rstrudel/segmenter/checkpoints/cityscapes/seg_large_mask/checkpoint.pth \
        checkpoints/segmenter_vit-l_mask_8xb1-80k_cityscapes-768x768_rstrudel.pth

The key mapping, and what the result loads into, is :mod:`expedite_mm.converters.segmenter`.
"""
from __future__ import annotations

import os.path as osp
import sys


def main(argv=None) -> None:
    # Run as a script from anywhere: make the repository's expedite_mm importable.
    sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), "..", "..")))
    from expedite_mm.apis.convert import converter_parser
    from expedite_mm.converters.segmenter import convert_checkpoint

    args = converter_parser("Convert an original Segmenter checkpoint (rstrudel/segmenter) "
                            "to MMSegmentation key names.", "original checkpoint").parse_args(argv)
    convert_checkpoint(args.src, args.dst, args.trust_checkpoint)


if __name__ == "__main__":
    main()
