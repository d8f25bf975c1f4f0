"""Write DigitScenes, a semantic-segmentation set built only from data that installed
packages ship, in mmseg's standard layout.

    python tools/dataset_converters/digit_scenes.py data/digit_scenes
        [--train 8000] [--val 500] [--size 128] [--seed 0] [--workers 2]

What a scene holds, and why train and val are disjoint:
:mod:`expedite_mm.datasets.digit_scenes_writer`. Each image is a pure function of
``(seed, split, index)``, so the set is deterministic and any subset can be regenerated
on its own.

Layout (``DigitScenesDataset``, ``expedite_mm/datasets/digit_scenes.py``)::

    OUT/img_dir/{train,val}/000000.png    RGB
    OUT/ann_dir/{train,val}/000000.png    uint8 labels in [0, 10]
"""
from __future__ import annotations

import argparse
import sys

from expedite_mm.datasets.digit_scenes_writer import write_dataset


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="output directory (data_root of the configs)")
    parser.add_argument("--train", type=int, default=8000, help="training scenes")
    parser.add_argument("--val", type=int, default=500, help="validation scenes")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    for name in ("train", "val"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be >= 0")
    if args.size < 32:
        parser.error("--size must be >= 32")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    counts = {split: n for split, n in (("train", args.train), ("val", args.val)) if n}
    write_dataset(args.out, counts, args.size, args.seed, args.workers)
    print(f"wrote {counts} scenes of {args.size}x{args.size} to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
