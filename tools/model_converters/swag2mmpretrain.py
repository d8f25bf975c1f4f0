"""Convert a SWAG ViT checkpoint to mmpretrain's ``ImageClassifier`` key names.

Both released layouts (torchvision's and SWAG's own) are read; the key mapping is
:mod:`expedite_mm.converters.swag`.

Usage::

    python tools/model_converters/swag2mmpretrain.py \\
        https://download.pytorch.org/models/vit_l_16_swag-4f3808c9.pth \\
        checkpoints/vit-large-p16_swag-pre_3rdparty_in1k-512px.pth
"""
from __future__ import annotations

import os.path as osp
import sys


def main(argv=None) -> None:
    # Run as a script from anywhere: make the repository's expedite_mm importable.
    sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), "..", "..")))
    from expedite_mm.apis.convert import converter_parser
    from expedite_mm.converters.swag import convert_checkpoint

    args = converter_parser("Convert a SWAG ViT checkpoint (torchvision's or SWAG's layout) "
                            "to mmpretrain key names.", "SWAG checkpoint").parse_args(argv)
    convert_checkpoint(args.src, args.dst, args.trust_checkpoint)


if __name__ == "__main__":
    main()
