"""Make a training checkpoint shippable: weights and plain metadata only.

    python tools/model_converters/publish_checkpoint.py IN.pth OUT.pth [--config CONFIG]

Drops the optimizer, scheduler and message-hub state (mmengine objects that a safe
``weights_only`` load refuses) and keeps ``state_dict`` plus a ``meta`` of plain types:
iteration, seed, time, mmengine version, the training config's text and the dataset's
class names and palette (read from ``--config``'s test dataset class when given, else kept
from the checkpoint). Prints the output's sha256 (for checkpoints.md). The result loads
with ``torch.load(..., weights_only=True)`` on every supported torch.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from typing import Any, Dict

import torch

PLAIN_META = ("epoch", "iter", "seed", "time", "mmengine_version", "experiment_name", "cfg")


def dataset_meta(config: str) -> Dict[str, Any]:
    """``classes`` and ``palette`` of ``config``'s test dataset class (its METAINFO)."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import expedite_mm  # noqa: F401  (registers the project's datasets)
    cfg = Config.fromfile(config)
    init_default_scope(cfg.get("default_scope", "mmseg"))
    from mmseg.registry import DATASETS
    metainfo = DATASETS.get(cfg.test_dataloader.dataset.type).METAINFO
    return {"classes": list(metainfo["classes"]), "palette": [list(c) for c in metainfo["palette"]]}


def publish(src: str, dst: str, config: str = None) -> str:
    """Write the shippable checkpoint ``dst`` from ``src``; returns its sha256."""
    # our own training output, not a downloaded file: a full load is safe here
    checkpoint = torch.load(src, map_location="cpu", weights_only=False)
    state = {k: v.detach().clone().contiguous() for k, v in checkpoint["state_dict"].items()}
    meta = {k: checkpoint.get("meta", {})[k] for k in PLAIN_META if k in checkpoint.get("meta", {})}
    if config is not None:
        meta["dataset_meta"] = dataset_meta(config)
    elif "dataset_meta" in checkpoint.get("meta", {}):
        old = checkpoint["meta"]["dataset_meta"]
        meta["dataset_meta"] = {"classes": list(old["classes"]),
                                "palette": [list(c) for c in old["palette"]]}
    torch.save({"meta": meta, "state_dict": state}, dst)
    torch.load(dst, map_location="cpu", weights_only=True)      # loads safely
    with open(dst, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


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
