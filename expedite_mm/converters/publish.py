"""A training checkpoint made shippable: weights and plain metadata only
(``tools/model_converters/publish_checkpoint.py``).

Drops the optimizer, scheduler and message-hub state (mmengine objects that a safe
``weights_only`` load refuses) and keeps ``state_dict`` plus a ``meta`` of plain types:
iteration, seed, time, mmengine version, the training config's text and the dataset's
class names and palette (read from a config's test dataset class when given, else kept
from the checkpoint). The result loads with ``torch.load(..., weights_only=True)`` on every
supported torch.
"""
from __future__ import annotations

import hashlib
from typing import Any, Dict, Optional

import torch

#: the ``meta`` entries kept (plain types)
PLAIN_META = ("epoch", "iter", "seed", "time", "mmengine_version", "experiment_name", "cfg")


def dataset_meta(config: str) -> Dict[str, Any]:
    """``classes`` and ``palette`` of ``config``'s test dataset class (its METAINFO).

    Args:
        config: an mmseg config file.
    """
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from ..registration import register_all_modules
    register_all_modules()                    # the project's datasets
    cfg = Config.fromfile(config)
    init_default_scope(cfg.get("default_scope", "mmseg"))
    from mmseg.registry import DATASETS
    metainfo = DATASETS.get(cfg.test_dataloader.dataset.type).METAINFO
    return {"classes": list(metainfo["classes"]), "palette": [list(c) for c in metainfo["palette"]]}


def publish(src: str, dst: str, config: Optional[str] = None) -> str:
    """Write the shippable checkpoint ``dst`` from ``src``; returns its sha256.

    Args:
        src: a checkpoint written by mmengine's Runner (``tools/train.py``): our own
            training output, loaded in full (not a downloaded file).
        dst: where the shippable checkpoint goes.
        config: take the class names and palette from this config's test dataset class
            (default: keep the checkpoint's ``dataset_meta``).
    """
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
