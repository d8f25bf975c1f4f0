"""Token fidelity of an expedited backbone against the stock one, on real photos
(``tools/analysis/backbone_fidelity.py``, whose docstring says what the numbers mean).

The photos (:func:`photos`, :func:`crop`), the comparison of two outputs (:func:`compare`)
and the run (:func:`run_backbone_fidelity`): the config's model built twice with the same
weights, expedited and with expediting disabled, both backbones on every photo.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

#: scikit-image's photos used by default
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def photos(files: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
    """RGB uint8 images by name.

    Args:
        files: image files, or None: :data:`PHOTOS`.
    """
    if files:
        import mmcv
        return {name: mmcv.imread(name, channel_order="rgb") for name in files}
    from skimage import data
    return {name: getattr(data, name)() for name in PHOTOS}


def crop(image: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Resize the short side to cover ``shape``, then centre-crop to it.

    Args:
        image: an H x W x 3 image.
        shape: the (H, W) to cover.
    """
    import mmcv
    h, w = image.shape[:2]
    scale = max(shape[0] / h, shape[1] / w)
    image = mmcv.imresize(image, (max(shape[1], round(w * scale)), max(shape[0], round(h * scale))))
    top, left = (image.shape[0] - shape[0]) // 2, (image.shape[1] - shape[1]) // 2
    return image[top:top + shape[0], left:left + shape[1]]


def compare(ours: torch.Tensor, stock: torch.Tensor) -> Dict[str, float]:
    """Relative L2 error and mean cosine similarity of the (B, C, ...) feature vectors.

    Args:
        ours: the expedited backbone's output.
        stock: the stock backbone's output of the same shape.
    """
    ours, stock = ours.double(), stock.double()
    error = ((ours - stock).norm() / stock.norm()).item()
    cosine = torch.nn.functional.cosine_similarity(ours.flatten(2), stock.flatten(2), dim=1)
    return {"relative_error": error, "cosine": cosine.mean().item()}


def run_backbone_fidelity(config: str, checkpoint: Optional[str] = None,
                          trust_checkpoint: bool = False,
                          images: Optional[Sequence[str]] = None,
                          shape: Optional[Sequence[int]] = None,
                          cfg_options: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Both backbones on every photo; prints each photo's errors and the means.

    Args:
        config: the config file.
        checkpoint: weights (path or URL); default: the random initialisation.
        trust_checkpoint: load a checkpoint holding arbitrary objects (unsafe unpickling).
        images: image files (default: :data:`PHOTOS`).
        shape: the input (H, W) (default: the config's test crop).
        cfg_options: config overrides, ``{'dotted.key': value}``.

    Returns:
        ``{'config', 'shape', 'checkpoint', 'outputs'}``: per backbone output the relative
        error and cosine similarity averaged over the photos (:func:`compare`).
    """
    from ..apis.checkpoint import checkpoint_policy, load_state_dict_checked
    from ..apis.config import (build_model, default_input_shape, disable_expedite,
                               flatten_outputs, load_config)
    from ..registration import register_all_modules

    register_all_modules()  # registers the backbones
    cfg = load_config(config, cfg_options)
    size: Tuple[int, int] = tuple(shape) if shape else default_input_shape(cfg)
    with checkpoint_policy(trust=trust_checkpoint, source=checkpoint):
        torch.manual_seed(0)
        ours = build_model(cfg, checkpoint, trust_checkpoint=trust_checkpoint)
    stock = build_model(disable_expedite(cfg))
    load_state_dict_checked(stock, ours.state_dict())
    per_output: List[List[Dict[str, float]]] = []
    for name, image in photos(images).items():
        bgr = np.ascontiguousarray(crop(image, size)[..., ::-1])     # as LoadImageFromFile
        batch = ours.data_preprocessor(
            {"inputs": [torch.from_numpy(bgr.transpose(2, 0, 1).copy())]}, False)["inputs"]
        with torch.no_grad():
            pairs = zip(flatten_outputs(ours.backbone(batch)), flatten_outputs(stock.backbone(batch)))
            rows = [compare(a, b) for a, b in pairs if a.dim() >= 3]
        per_output.append(rows)
        print(f"{name}: " + "  ".join(f"out{i} err {r['relative_error']:.4f} cos {r['cosine']:.4f}"
                                      for i, r in enumerate(rows)))
    mean = [{key: float(np.mean([rows[i][key] for rows in per_output])) for key in first}
            for i, first in enumerate(per_output[0])]
    summary = {"config": config, "shape": list(size), "checkpoint": checkpoint,
               "outputs": mean}
    print(f"{config} at {size[0]}x{size[1]} "
          f"({'checkpoint' if checkpoint else 'random weights'}), mean over "
          f"{len(per_output)} photos:")
    for i, row in enumerate(mean):
        print(f"  output {i}: relative error {row['relative_error']:.4f}, "
              f"cosine {row['cosine']:.4f}")
    return summary
