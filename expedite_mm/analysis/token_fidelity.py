"""Weight-free fidelity of token reduction + reconstruction on real photos
(``tools/analysis/token_fidelity.py``, whose docstring says what it shows, and what not).

Images become ViT-style patch tokens (:func:`load_images`, :func:`image_tokens`), used raw,
standardized or randomly projected (:func:`feature_map`); each reducer shrinks them to a
token budget and its reconstructor restores them at once (:func:`measure`: PSNR and
relative error per image, pair, normalisation and temperature, the temperatures scaled to
the tokens by :func:`token_scale`); :func:`summarize` and :func:`margins` read the rows,
:func:`print_report` prints them, :func:`run_fidelity` does all of it.
"""
from __future__ import annotations

import math
import os.path as osp
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

# Colour photos bundled with scikit-image (no download).
DEFAULT_IMAGES = ("astronaut", "coffee", "chelsea", "rocket")
DEFAULT_RELATIVE_TEMPERATURES = (0.125, 0.5, 2.0)   # times the token scale
PAPER_TEMPERATURE = 50.0
FEATURES = ("raw", "standardized", "projected")
PAIRS = ("Cluster", "AvgPool", "Cluster+Bilinear", "AvgPool+Bilinear", "ToMe", "EViT")
# Pairs whose reconstruction (or reduction) has a temperature / a normalisation.
TAU_PAIRS = ("Cluster", "AvgPool", "Cluster+Bilinear")
NORM_PAIRS = ("Cluster", "AvgPool")
OURS = "Cluster"
BASELINE = "AvgPool+Bilinear"


# --------------------------------------------------------------------------- images -> tokens
def load_images(files: Optional[Sequence[str]] = None) -> List[Tuple[str, np.ndarray]]:
    """(name, H x W x 3 uint8/float image) for the files, or the default skimage photos.

    Args:
        files: image files (grey ones are stacked to RGB), or None: :data:`DEFAULT_IMAGES`.
    """
    from skimage import data, io
    images = []
    if files:
        for path in files:
            images.append((osp.basename(path), io.imread(path)))
    else:
        for name in DEFAULT_IMAGES:
            image = getattr(data, name)()
            images.append((name, image))
    out = []
    for name, image in images:
        image = np.asarray(image)
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        out.append((name, image[..., :3]))
    return out


def image_tokens(image: np.ndarray, tokens: int = 40, patch: int = 16) -> torch.Tensor:
    """H x W x 3 image -> (tokens*tokens, 3*patch*patch) patch tokens, pixels in [0, 1].

    Centre crop to a square, area-resize to ``tokens*patch`` pixels, then non-overlapping
    patches in row-major order (channel-major inside a token, as a conv patch embedding).

    Args:
        image: an H x W x 3 image (uint8, or float up to its maximum).
        tokens: the token grid's side.
        patch: the patch side in pixels.
    """
    pixels = torch.as_tensor(np.ascontiguousarray(image))
    scale = 255.0 if pixels.dtype == torch.uint8 else float(max(1.0, pixels.max()))
    x = pixels.permute(2, 0, 1).float()[None] / scale                     # (1, 3, H, W)
    H, W = x.shape[2:]
    side = min(H, W)
    top, left = (H - side) // 2, (W - side) // 2
    x = x[:, :, top:top + side, left:left + side]
    size = tokens * patch
    x = F.interpolate(x, size=(size, size), mode="area" if side >= size else "bilinear",
                      align_corners=None if side >= size else False)
    x = x.clamp(0, 1)
    # (1, 3, t, P, t, P) -> (t, t, 3, P, P)
    x = x.view(3, tokens, patch, tokens, patch).permute(1, 3, 0, 2, 4)
    return x.reshape(tokens * tokens, 3 * patch * patch)


@dataclass
class FeatureMap:
    """Tokens <-> features: ``encode`` (B, N, D0) -> (B, N, D), ``decode`` its inverse.

    Args:
        name: the feature kind (:data:`FEATURES`).
        mean: per image and colour channel, spread over the token's dimensions (B, 1, D0).
        std: the same for the standard deviation (B, 1, D0).
        projection: ``projected``'s (D0, D) matrix, else None.
        inverse: its (D, D0) pseudo-inverse, else None.
    """

    name: str
    mean: torch.Tensor       # (B, 1, D0)
    std: torch.Tensor        # (B, 1, D0)
    projection: Optional[torch.Tensor] = None   # (D0, D)
    inverse: Optional[torch.Tensor] = None      # (D, D0), its pseudo-inverse

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.name == "raw":
            return pixels
        z = (pixels - self.mean) / self.std
        return z if self.projection is None else z @ self.projection

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        if self.name == "raw":
            return features
        z = features
        if self.projection is not None:
            z = features @ self.inverse
        return z * self.std + self.mean


def feature_map(name: str, pixels: torch.Tensor, patch: int, project_dim: int = 1024
                ) -> FeatureMap:
    """Per-image, per-colour-channel statistics; a fixed (seeded) Gaussian projection
    scaled by 1/sqrt(D0) so a standardized token keeps its squared norm in expectation
    up to the factor D/D0.

    Args:
        name: the feature kind (:data:`FEATURES`).
        pixels: (B, N, 3*patch*patch) tokens.
        patch: the patch side in pixels.
        project_dim: the channels of ``projected`` tokens.
    """
    B, N, D0 = pixels.shape
    channels = pixels.view(B, N, 3, patch * patch)
    # (B, 3) statistics, spread over each channel's patch*patch dimensions: (B, 1, D0)
    mean = channels.mean(dim=(1, 3)).repeat_interleave(patch * patch, dim=1)[:, None]
    std = channels.std(dim=(1, 3)).repeat_interleave(patch * patch, dim=1)[:, None]
    projection = inverse = None
    if name == "projected":
        generator = torch.Generator().manual_seed(0)
        projection = torch.randn(D0, project_dim, generator=generator) / math.sqrt(D0)
        inverse = torch.linalg.pinv(projection)
    return FeatureMap(name, mean, std.clamp_min(1e-6), projection, inverse)


# --------------------------------------------------------------------------- measuring
def psnr(reconstructed: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per image (B,) PSNR in dB with peak 1; inf for an exact reconstruction.

    Args:
        reconstructed: (B, N, D) tokens.
        reference: the (B, N, D) tokens they should be.
    """
    mse = (reconstructed - reference).pow(2).flatten(1).mean(dim=1).double()
    return 10 * torch.log10(1.0 / mse)


def relative_error(reconstructed: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per image ||Z' - Z|| / ||Z - mean_tokens(Z)||.

    Args:
        reconstructed: (B, N, D) tokens Z'.
        reference: the (B, N, D) tokens Z they should be.
    """
    centred = reference - reference.mean(dim=1, keepdim=True)
    return ((reconstructed - reference).flatten(1).norm(dim=1).double()
            / centred.flatten(1).norm(dim=1).double())


def measure(pixels: torch.Tensor, hw: Tuple[int, int], grids: Sequence[Tuple[int, int]],
            features: Sequence[str] = ("raw", "standardized"),
            temperatures: Union[Sequence[float], Mapping[str, Sequence[float]]] = (0.3, 1.0, 50.0),
            normalizations: Sequence[str] = ("sum", "l2"), pairs: Sequence[str] = PAIRS,
            k: int = 20, window: int = 5, iters: int = 5, patch: int = 16,
            project_dim: int = 1024, names: Optional[Sequence[str]] = None,
            progress: bool = True) -> List[Dict]:
    """Every measurement as a row: image, features, grid, pair, normalize, temperature,
    psnr, rel_error (normalize/temperature are '' where the pair has none).

    Args:
        pixels: (B, N, 3*patch*patch) tokens of B images on the ``hw`` token grid.
        hw: the token grid (H, W).
        grids: the token budgets (h, w).
        features: the token kinds (:data:`FEATURES`).
        temperatures: one list, or one per feature kind.
        normalizations: the reconstruction's normalisations (``'sum'``, ``'l2'``).
        pairs: the reducer + reconstructor pairs (:data:`PAIRS`).
        k: the reconstruction's nearest centres.
        window: the clustering (and pooling) window in cells.
        iters: the clustering's EM iterations.
        patch: the patch side in pixels.
        project_dim: the channels of ``projected`` tokens.
        names: the images' names (default ``image0``, ``image1``, ...).
        progress: show a progress bar (tqdm, on stderr).
    """
    from ..ops import TokenClustering, TokenReconstruction
    from ..ops.reducers import (AdaptiveAvgPoolReduction, AttentiveTokenKeeping,
                                BilinearReconstruction, BipartiteMerging,
                                ScatterReconstruction, UnmergeReconstruction)
    names = list(names or [f"image{i}" for i in range(pixels.shape[0])])
    rows: List[Dict] = []
    jobs = [(f, g) for f in features for g in grids]
    iterator = jobs
    if progress:
        from tqdm import tqdm
        iterator = tqdm(jobs, desc="token fidelity", unit="setting", file=sys.stderr)

    def record(feature, grid, pair, normalize, tau, full, fmap, z):
        # against the decoded tokens (= the pixels up to rounding), so that an exact
        # reconstruction reads inf whatever the feature map
        values = psnr(fmap.decode(full), fmap.decode(z)), relative_error(full, z)
        for b, name in enumerate(names):
            rows.append({"image": name, "features": feature, "grid": f"{grid[0]}x{grid[1]}",
                         "pair": pair, "normalize": normalize, "temperature": tau,
                         "psnr": float(values[0][b]), "rel_error": float(values[1][b])})

    with torch.no_grad():
        for feature, grid in iterator:
            fmap = feature_map(feature, pixels, patch, project_dim)
            z = fmap.encode(pixels)
            pooled, pool_state = (AdaptiveAvgPoolReduction(grid, window=window)(z, hw)
                                  if "AvgPool" in pairs or BASELINE in pairs else (None, None))
            if BASELINE in pairs:
                record(feature, grid, BASELINE, "", "", BilinearReconstruction()(pooled, pool_state),
                       fmap, z)
            if "ToMe" in pairs:
                merged, state = BipartiteMerging(grid, metric="tokens")(z, hw)
                record(feature, grid, "ToMe", "", "", UnmergeReconstruction()(merged, state),
                       fmap, z)
            if "EViT" in pairs:
                kept, state = AttentiveTokenKeeping(grid, score="norm")(z, hw)
                record(feature, grid, "EViT", "", "", ScatterReconstruction()(kept, state),
                       fmap, z)
            taus = temperatures[feature] if isinstance(temperatures, Mapping) else temperatures
            for tau in taus:
                need_clusters = OURS in pairs or "Cluster+Bilinear" in pairs
                if need_clusters:
                    centers, state = TokenClustering(grid, window=window, iters=iters,
                                                     temperature=tau)(z, hw)
                if "Cluster+Bilinear" in pairs:
                    record(feature, grid, "Cluster+Bilinear", "", tau,
                           BilinearReconstruction()(centers, state), fmap, z)
                for normalize in normalizations:
                    reconstruction = TokenReconstruction(k=k, temperature=tau,
                                                         normalize=normalize)
                    if OURS in pairs:
                        record(feature, grid, OURS, normalize, tau,
                               reconstruction(centers, state), fmap, z)
                    if "AvgPool" in pairs:
                        record(feature, grid, "AvgPool", normalize, tau,
                               reconstruction(pooled, pool_state), fmap, z)
    return rows


def token_scale(pixels: torch.Tensor, hw: Tuple[int, int], grid: Tuple[int, int],
                feature: str, patch: int, project_dim: int = 1024) -> float:
    """Median squared distance of a token to its nearest pooled centre: the scale the
    temperature divides (softmax(-D / tau)).

    Args:
        pixels: (B, N, 3*patch*patch) tokens on the ``hw`` token grid.
        hw: the token grid (H, W).
        grid: the pooled grid (h, w).
        feature: the token kind (:data:`FEATURES`).
        patch: the patch side in pixels.
        project_dim: the channels of ``projected`` tokens.
    """
    from ..ops.reducers import AdaptiveAvgPoolReduction
    z = feature_map(feature, pixels, patch, project_dim).encode(pixels)
    pooled, _ = AdaptiveAvgPoolReduction(grid)(z, hw)
    distance = torch.cdist(z, pooled).pow(2).amin(dim=-1)
    return float(distance.median())


def temperature_grid(scale: float, multipliers: Sequence[float]) -> List[float]:
    """``multipliers * scale`` (2 significant digits) and the paper's tau, ascending.

    Args:
        scale: the token scale (:func:`token_scale`).
        multipliers: the temperatures in units of ``scale``.
    """
    taus = {float(f"{m * scale:.2g}") for m in multipliers} | {PAPER_TEMPERATURE}
    return sorted(taus)


# --------------------------------------------------------------------------- summary
def _key(row: Dict) -> Tuple:
    return row["features"], row["grid"], row["pair"], row["normalize"]


def summarize(rows: List[Dict]) -> Dict:
    """Per (features, grid, pair, normalize): the best temperature by mean PSNR over the
    images, the mean PSNR / relative error there, per-image PSNR there, and mean PSNR per
    temperature.

    Args:
        rows: :func:`measure`'s rows.
    """
    groups: Dict[Tuple, Dict] = {}
    for row in rows:
        group = groups.setdefault(_key(row), {})
        group.setdefault(row["temperature"], []).append(row)
    summary = {}
    for key, by_tau in groups.items():
        curve = {tau: float(np.mean([r["psnr"] for r in rs])) for tau, rs in by_tau.items()}
        best = max(curve, key=lambda tau: curve[tau])
        chosen = by_tau[best]
        summary[key] = {"best_temperature": best, "psnr": curve[best],
                        "rel_error": float(np.mean([r["rel_error"] for r in chosen])),
                        "per_image": {r["image"]: r["psnr"] for r in chosen},
                        "curve": curve}
    return summary


def margins(summary: Dict, normalize: str = "sum") -> Dict[Tuple[str, str], Dict[str, float]]:
    """Our pair (best tau) minus AvgPool+Bilinear, in dB: mean and per image, per
    (features, grid).

    Args:
        summary: :func:`summarize`'s summary.
        normalize: the normalisation of our pair compared.
    """
    out = {}
    for (feature, grid, pair, norm), entry in summary.items():
        if pair != OURS or norm != normalize:
            continue
        base = summary.get((feature, grid, BASELINE, ""))
        if base is None:
            continue
        out[(feature, grid)] = {
            "mean": entry["psnr"] - base["psnr"],
            **{image: entry["per_image"][image] - base["per_image"][image]
               for image in entry["per_image"]}}
    return out


def print_report(rows: List[Dict], summary: Dict, scales: Dict, elapsed: float) -> None:
    """The tables (rich): per feature kind each pair at its best temperature and at the
    paper's, PSNR per temperature, per image; then ours minus the baseline.

    Args:
        rows: :func:`measure`'s rows.
        summary: :func:`summarize`'s summary.
        scales: the token scale per (features, grid).
        elapsed: the seconds it took.
    """
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    features = sorted({k[0] for k in summary}, key=FEATURES.index)
    grids = sorted({k[1] for k in summary})
    images = list(dict.fromkeys(r["image"] for r in rows))
    fmt = lambda v: "inf" if v == math.inf else f"{v:.2f}"  # noqa: E731
    for feature in features:
        table = Table(title=f"{feature} tokens: mean PSNR (dB) over {len(images)} images at "
                            f"each pair's best tau (in units of the token scale s), relative "
                            f"error there, and PSNR at the paper's tau = 50")
        table.add_column("pair")
        table.add_column("norm")
        for grid in grids:
            table.add_column(f"{grid}: PSNR", justify="right")
            table.add_column("best tau", justify="right")
            table.add_column("rel err", justify="right")
            table.add_column("PSNR tau=50", justify="right")
        pairs = [k for k in summary if k[0] == feature and k[1] == grids[0]]
        for _, _, pair, norm in sorted(pairs, key=lambda k: (PAIRS.index(k[2]), k[3])):
            cells = []
            for grid in grids:
                entry = summary.get((feature, grid, pair, norm))
                if entry is None:
                    cells += ["", "", "", ""]
                    continue
                at50 = entry["curve"].get(50.0)
                tau = entry["best_temperature"]
                cells += [fmt(entry["psnr"]), "-" if tau == "" else
                          f"{tau:g} ({tau / scales[(feature, grid)]:.2g}s)",
                          f"{entry['rel_error']:.3f}", "-" if at50 is None else fmt(at50)]
            table.add_row(pair + (" (ours)" if pair == OURS else ""), norm or "-", *cells)
        console.print(table)

        curves = Table(title=f"{feature} tokens: mean PSNR (dB) per temperature "
                             f"(token scale: median sq. distance to the nearest pooled "
                             f"centre = " + ", ".join(f"{g}: {scales[(feature, g)]:.3g}"
                                                      for g in grids) + ")")
        curves.add_column("pair / grid")
        taus = sorted({t for k, e in summary.items() if k[0] == feature for t in e["curve"]
                       if t != ""})
        for tau in taus:
            curves.add_column(f"{tau:g}", justify="right")
        for (f, grid, pair, norm), entry in sorted(summary.items()):
            if f != feature or pair not in TAU_PAIRS:
                continue
            curves.add_row(f"{pair} {norm} {grid}".replace("  ", " "),
                           *[fmt(entry["curve"][t]) if t in entry["curve"] else "" for t in taus])
        console.print(curves)

    per_image = Table(title="per image: PSNR (dB) at each pair's best tau (features / grid)")
    per_image.add_column("features / grid / pair / norm")
    for image in images:
        per_image.add_column(image, justify="right")
    for (feature, grid, pair, norm), entry in sorted(
            summary.items(), key=lambda kv: (FEATURES.index(kv[0][0]), kv[0][1],
                                             PAIRS.index(kv[0][2]), kv[0][3])):
        per_image.add_row(f"{feature} {grid} {pair} {norm}".rstrip(),
                          *[fmt(entry["per_image"][i]) for i in images])
    console.print(per_image)
    for (feature, grid), margin in sorted(margins(summary).items()):
        worst = min(v for k, v in margin.items() if k != "mean")
        console.print(f"{feature} {grid}: ours (sum, best tau) - AvgPool+Bilinear = "
                      f"{margin['mean']:+.2f} dB mean, {worst:+.2f} dB worst image")
    console.print(f"{len(rows)} measurements in {elapsed:.1f} s")


def run_fidelity(images: Optional[Sequence[str]] = None,
                 grids: Sequence[Tuple[int, int]] = ((20, 20), (28, 28)), tokens: int = 40,
                 patch: int = 16, features: Sequence[str] = ("raw", "standardized"),
                 project_dim: int = 1024, temperatures: Optional[Sequence[float]] = None,
                 relative_temperatures: Sequence[float] = DEFAULT_RELATIVE_TEMPERATURES,
                 normalizations: Sequence[str] = ("sum", "l2"), pairs: Sequence[str] = PAIRS,
                 k: int = 20, window: int = 5, iters: int = 5) -> Dict:
    """The whole check: measure every setting on the images and print the report.

    Args:
        images: image files (default: :data:`DEFAULT_IMAGES`, scikit-image's photos).
        grids: the token budgets (h, w).
        tokens: the token grid's side.
        patch: the patch side in pixels.
        features: the token kinds (:data:`FEATURES`).
        project_dim: the channels of ``projected`` tokens.
        temperatures: absolute temperatures (the same for every feature kind), or None.
        relative_temperatures: without ``temperatures``: multiples of each feature kind's
            token scale (plus the paper's tau = 50).
        normalizations: the reconstruction's normalisations (``'sum'``, ``'l2'``).
        pairs: the reducer + reconstructor pairs (:data:`PAIRS`).
        k: the reconstruction's nearest centres.
        window: the clustering window (cells).
        iters: the clustering's EM iterations.

    Returns:
        ``{'rows': every measurement, 'summary': per (features, grid, pair, normalize)
        :func:`summarize`'s entry, 'margins': ours minus AvgPool+Bilinear per
        'features grid', 'token_scale': per 'features grid'}``.
    """
    start = time.perf_counter()
    loaded = load_images(images)
    names = [name for name, _ in loaded]
    pixels = torch.stack([image_tokens(img, tokens, patch) for _, img in loaded])
    hw = (tokens, tokens)
    scales = {(f, f"{g[0]}x{g[1]}"): token_scale(pixels, hw, g, f, patch, project_dim)
              for f in features for g in grids}
    taus = {f: temperatures or temperature_grid(
        float(np.mean([v for (g, _), v in scales.items() if g == f])),
        relative_temperatures) for f in features}
    rows = measure(pixels, hw, grids, features, taus, normalizations, pairs, k=k,
                   window=window, iters=iters, patch=patch, project_dim=project_dim,
                   names=names)
    summary = summarize(rows)
    print_report(rows, summary, scales, time.perf_counter() - start)
    return {"rows": rows,
            "summary": [{"features": key[0], "grid": key[1], "pair": key[2],
                         "normalize": key[3], **value} for key, value in summary.items()],
            "margins": {f"{key[0]} {key[1]}": value
                        for key, value in margins(summary).items()},
            "token_scale": {f"{key[0]} {key[1]}": value for key, value in scales.items()}}
