"""The DigitScenes writer (``tools/dataset_converters/digit_scenes.py``): scenes built
only from data that installed packages ship, written in mmseg's standard layout.

Every image is a real photograph bundled with scikit-image (random crop of its split's
region, rescaled, colour-jittered) with 2-5 objects pasted on it, later ones occluding
earlier ones. An object's *shape* is a handwritten digit from scikit-learn's
``load_digits`` (an 8x8 scan upsampled and thresholded to a mask: thin strokes, holes,
ragged edges); its *class* is the material it is cut from, one of ten real textures that
scikit-image ships (brick, grass, gravel, coins, cells, deep sky, stained tissue, moon
surface, retina, printed page). Classes: 0 background, 1-10 the materials. A small model
learns materials in minutes on a CPU (digit identity it did not: a ViT with a
convolutional stem stayed below 10 mIoU after 750 steps), and the masks still need
boundaries at the scale of a stroke, which is what token clustering puts at risk.

Train and val are disjoint at the source: different digit scans (every fifth scan is
val) and different photo regions (the right 30 % of every background photo and material
texture is val). Each image is a pure function of ``(seed, split, index)``, so the set is
deterministic and any subset can be regenerated on its own.

Layout (read by ``DigitScenesDataset``, :mod:`expedite_mm.datasets.digit_scenes`)::

    OUT/img_dir/{train,val}/000000.png    RGB
    OUT/ann_dir/{train,val}/000000.png    uint8 labels in [0, 10]

Imports numpy only at import time; scikit-image, scikit-learn, scipy, Pillow and tqdm
when it writes.
"""
from __future__ import annotations

import os
import os.path as osp
from concurrent.futures import ProcessPoolExecutor
from typing import Dict, List, Sequence, Tuple

import numpy as np

NUM_CLASSES = 11
# scikit-image images bundled in its wheel (no download), colour and grey: scenes...
BACKGROUNDS = ("astronaut", "coffee", "chelsea", "cat", "rocket", "camera", "clock",
               "motorcycle", "text", "colorwheel")
# ... and the materials objects are cut from, class i + 1 for MATERIALS[i]
MATERIALS = ("brick", "grass", "gravel", "coins", "cell", "hubble_deep_field",
             "immunohistochemistry", "moon", "retina", "page")
VAL_FRACTION = 0.3        # the right 30 % of every photo is val, the rest train
VAL_DIGIT_EVERY = 5       # digit scans i with i % 5 == 0 are val
SPLIT_OFFSET = {"train": 0, "val": 1}


def load_photos(names: Sequence[str] = BACKGROUNDS) -> List[np.ndarray]:
    """Bundled images as float32 RGB in [0, 1] (grey ones repeated to 3 channels).

    Args:
        names: scikit-image ``data`` images (``'motorcycle'``: the left stereo view).
    """
    import skimage.data
    photos = []
    for name in names:
        loader = getattr(skimage.data, "stereo_motorcycle" if name == "motorcycle" else name)
        image = loader()
        if name == "motorcycle":
            image = image[0]
        image = np.asarray(image)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        image = image[..., :3].astype(np.float32)
        photos.append(image / (255.0 if image.max() > 1.0 else 1.0))
    return photos


def load_materials() -> List[np.ndarray]:
    """The material textures, ``MATERIALS`` order (retina: its central, textured part)."""
    materials = load_photos(MATERIALS)
    retina = materials[MATERIALS.index("retina")]
    h, w = retina.shape[:2]
    materials[MATERIALS.index("retina")] = retina[h // 4:3 * h // 4, w // 4:3 * w // 4]
    return materials


def load_digit_scans() -> Tuple[np.ndarray, np.ndarray]:
    """scikit-learn's handwritten digits: (1797, 8, 8) float32 in [0, 1], labels 0-9."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)


def split_region(photo: np.ndarray, split: str) -> np.ndarray:
    """The part of a photo a split draws from: left 70 % train, right 30 % val.

    Args:
        photo: an (H, W, 3) image.
        split: ``'train'`` or ``'val'``.
    """
    cut = int(round(photo.shape[1] * (1 - VAL_FRACTION)))
    return photo[:, :cut] if split == "train" else photo[:, cut:]


def split_digits(labels: np.ndarray, split: str) -> np.ndarray:
    """Indices of the digit scans (of ``labels``, one per scan) a split uses.

    Args:
        labels: the scans' digit labels (only their number matters).
        split: ``'train'`` or ``'val'`` (every fifth scan).
    """
    index = np.arange(len(labels))
    is_val = index % VAL_DIGIT_EVERY == 0
    return index[is_val] if split == "val" else index[~is_val]


def _resize(image: np.ndarray, shape: Tuple[int, int], order: int) -> np.ndarray:
    from skimage.transform import resize
    return resize(image, shape, order=order, mode="edge", anti_aliasing=order > 0 and
                  (shape[0] < image.shape[0] or shape[1] < image.shape[1])).astype(np.float32)


def random_crop(rng: np.random.Generator, region: np.ndarray, size: int,
                min_fraction: float = 0.35) -> np.ndarray:
    """A random square crop of ``region`` (side a random fraction of its short side),
    resized to ``size`` x ``size``.

    Args:
        rng: the scene's random generator.
        region: an (H, W, 3) float image.
        size: the output side in pixels.
        min_fraction: the smallest crop side, as a fraction of the short side.
    """
    short = min(region.shape[:2])
    side = int(rng.uniform(min_fraction, 1.0) * short)
    side = max(side, 8)
    y = rng.integers(0, region.shape[0] - side + 1)
    x = rng.integers(0, region.shape[1] - side + 1)
    return _resize(region[y:y + side, x:x + side], (size, size), order=1)


def colour_jitter(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Brightness, contrast, saturation and a channel gain, clipped to [0, 1].

    Args:
        rng: the scene's random generator.
        image: an (H, W, 3) float image in [0, 1].
    """
    grey = image.mean(axis=2, keepdims=True)
    image = grey + (image - grey) * rng.uniform(0.3, 1.5)                  # saturation
    image = (image - image.mean()) * rng.uniform(0.6, 1.3) + image.mean()  # contrast
    image = image * rng.uniform(0.75, 1.25) * rng.uniform(0.85, 1.15, size=3)
    return np.clip(image, 0.0, 1.0)


def digit_mask(rng: np.random.Generator, scan: np.ndarray, height: int, width: int
               ) -> Tuple[np.ndarray, np.ndarray]:
    """An 8x8 scan upsampled to (height, width): the hard mask and a soft alpha.

    Args:
        rng: the scene's random generator (the threshold).
        scan: an (8, 8) digit scan in [0, 1].
        height: the mask's height in pixels.
        width: the mask's width in pixels.
    """
    from scipy.ndimage import gaussian_filter
    up = _resize(scan, (height, width), order=3)
    up = gaussian_filter(up, sigma=max(height, width) / 48.0)
    mask = up > rng.uniform(0.22, 0.35)
    alpha = np.clip(gaussian_filter(mask.astype(np.float32), 0.7), 0.0, 1.0)
    return mask, alpha


def make_scene(index: int, split: str, size: int, seed: int, photos: Sequence[np.ndarray],
               materials: Sequence[np.ndarray], scans: np.ndarray
               ) -> Tuple[np.ndarray, np.ndarray]:
    """One scene: (size, size, 3) uint8 RGB and (size, size) uint8 labels in [0, 10].

    Args:
        index: the scene's index in its split.
        split: ``'train'`` or ``'val'``.
        size: the image side in pixels.
        seed: the dataset's seed (the scene is a pure function of seed, split and index).
        photos: the backgrounds (:func:`load_photos`).
        materials: the ten textures (:func:`load_materials`; class i + 1 is
            ``materials[i]``).
        scans: the digit scans that give the objects their shapes
            (:func:`load_digit_scans`).
    """
    rng = np.random.default_rng([seed, SPLIT_OFFSET[split], index])
    regions = [split_region(p, split) for p in photos]
    textures = [split_region(m, split) for m in materials]
    image = colour_jitter(rng, random_crop(rng, regions[rng.integers(len(regions))], size))
    label = np.zeros((size, size), np.uint8)
    pool = split_digits(np.arange(len(scans)), split)
    boxes: List[Tuple[int, int, int, int]] = []
    for _ in range(rng.integers(2, 6)):
        scan = scans[pool[rng.integers(len(pool))]]
        material = int(rng.integers(len(textures)))
        height = int(rng.uniform(0.25, 0.55) * size)
        width = int(height * rng.uniform(0.75, 1.1))
        mask, alpha = digit_mask(rng, scan, height, width)
        # partial occlusion, not burial: a few tries at a box overlapping earlier ones
        # by at most a third of the smaller box
        for _try in range(8):
            y = int(rng.integers(-height // 6, size - height + height // 6 + 1))
            x = int(rng.integers(-width // 6, size - width + width // 6 + 1))
            if all(_overlap((y, x, height, width), box) <= 1 / 3 for box in boxes):
                break
        boxes.append((y, x, height, width))
        # the part of the object inside the image
        y0, x0 = max(y, 0), max(x, 0)
        y1, x1 = min(y + height, size), min(x + width, size)
        if y1 - y0 < 4 or x1 - x0 < 4:
            continue
        mask = mask[y0 - y:y1 - y, x0 - x:x1 - x]
        alpha = alpha[y0 - y:y1 - y, x0 - x:x1 - x, None]
        # the material at a random scale, with a milder jitter than the scene's
        fill = random_crop(rng, textures[material], max(y1 - y0, x1 - x0), min_fraction=0.15)
        fill = np.clip(fill[:y1 - y0, :x1 - x0] * rng.uniform(0.85, 1.15), 0.0, 1.0)
        patch = image[y0:y1, x0:x1]
        image[y0:y1, x0:x1] = alpha * fill + (1 - alpha) * patch
        label[y0:y1, x0:x1][mask] = material + 1
    image = np.clip(image + rng.normal(0.0, rng.uniform(0.0, 0.03), image.shape), 0.0, 1.0)
    return (image * 255.0 + 0.5).astype(np.uint8), label


def _overlap(a: Tuple[int, int, int, int], b: Tuple[int, int, int, int]) -> float:
    """Intersection of two (y, x, height, width) boxes over the smaller one's area."""
    dy = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    dx = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(dy, 0) * max(dx, 0) / min(a[2] * a[3], b[2] * b[3])


_SHARED: Dict[str, object] = {}


def _init_worker() -> None:
    _SHARED["photos"] = load_photos()
    _SHARED["materials"] = load_materials()
    _SHARED["scans"] = load_digit_scans()[0]


def _write_one(job: Tuple[str, int, int, int, str]) -> None:
    from PIL import Image
    split, index, size, seed, out = job
    image, label = make_scene(index, split, size, seed, _SHARED["photos"],
                              _SHARED["materials"], _SHARED["scans"])
    name = f"{index:06d}.png"
    Image.fromarray(image).save(osp.join(out, "img_dir", split, name))
    Image.fromarray(label).save(osp.join(out, "ann_dir", split, name))


def write_dataset(out: str, counts: Dict[str, int], size: int = 128, seed: int = 0,
                  workers: int = 1, progress: bool = True) -> None:
    """Write ``counts[split]`` scenes per split under ``out`` in mmseg's layout.

    Args:
        out: the dataset's root folder (``data_root`` of the configs).
        counts: scenes per split, e.g. ``{'train': 8000, 'val': 500}``.
        size: the image side in pixels.
        seed: the dataset's seed.
        workers: processes writing scenes (1: this process).
        progress: show a progress bar (tqdm).
    """
    for kind in ("img_dir", "ann_dir"):
        for split in counts:
            os.makedirs(osp.join(out, kind, split), exist_ok=True)
    jobs = [(split, i, size, seed, out) for split, n in counts.items() for i in range(n)]
    if workers <= 1:
        _init_worker()
        results = map(_write_one, jobs)
    else:
        pool = ProcessPoolExecutor(workers, initializer=_init_worker)
        results = pool.map(_write_one, jobs, chunksize=16)
    if progress:
        from tqdm import tqdm
        results = tqdm(results, total=len(jobs), desc="DigitScenes", unit="img")
    for _ in results:
        pass
    if workers > 1:
        pool.shutdown()
