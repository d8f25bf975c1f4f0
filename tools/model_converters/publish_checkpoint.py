"""Make a training checkpoint shippable: weights and plain metadata only.

    python tools/model_converters/publish_checkpoint.py IN.pth OUT.pth [--config CONFIG]

Drops the optimizer, scheduler and message-hub state (mmengine objects that a safe
``weights_only`` load refuses) and keeps ``state_dict`` plus a ``meta`` of plain types:
iteration, seed, time, mmengine version, the training config's text and the dataset's
class names and palette (read from ``--config``'s test dataset class when given, else kept
from the checkpoint). Prints the output's sha256 (for checkpoints.md). The result loads
with ``torch.load(..., weights_only=True)`` on every supported torch
(:mod:`expedite_mm.converters.publish`).
"""
from __future__ import annotations

import argparse
import sys

from expedite_mm.converters.publish import publish


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="a checkpoint written by tools/train.py (mmengine Runner)")
    parser.add_argument("dst", help="where to write the shippable checkpoint")
    parser.add_argument("--config", help="take class names and palette from this config's "
                                         "test dataset class")
    args = parser.parse_args(argv)
    digest = publish(args.src, args.dst, args.config)
    print(f"{args.dst}  sha256 {digest}", file=sys.stderr)


if __name__ == "__main__":
    main()
