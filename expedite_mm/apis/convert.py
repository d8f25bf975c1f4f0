"""The command line and the output file shared by ``tools/model_converters``.

The converters load their source with :func:`expedite_mm.apis.checkpoint.load_checkpoint_file`
(safe by default, ``--trust-checkpoint`` to opt out) and write mmengine's checkpoint
layout with :func:`save_converted`.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import os.path as osp

import torch


def converter_parser(description: str, source: str) -> argparse.ArgumentParser:
    """The command line shared by our ``tools/model_converters``: ``SRC DST
    [--trust-checkpoint]`` (``source`` names what SRC is, e.g. 'official checkpoint')."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("src", help=f"{source}: path or URL (http(s)://, open-mmlab://, ...)")
    parser.add_argument("dst", help="path of the converted checkpoint")
    parser.add_argument(
        "--trust-checkpoint", action="store_true",
        help="load src with weights_only=False (only for files you trust); by default "
             "only tensors and an allow-list of safe types are unpickled")
    return parser


def save_converted(state_dict: dict, dst: str, meta: dict) -> None:
    """Save converted weights in mmengine's checkpoint layout (``meta`` + ``state_dict``).

    Written to a temporary file next to ``dst`` and renamed over it once complete, so a
    failure (e.g. a full disk) never leaves a truncated ``dst``.
    """
    directory = osp.dirname(dst)
    if directory:
        os.makedirs(directory, exist_ok=True)
    partial = f"{dst}.{os.getpid()}.part"
    try:
        with open(partial, "wb") as f:
            torch.save({"meta": meta, "state_dict": state_dict}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)
        raise
    print(f"converted {len(state_dict)} tensors -> {dst}")


__all__ = ["converter_parser", "save_converted"]
