"""What every expedited backbone shares: argument validation, the two operators, fallback.

Pure torch (the mm-specific wrappers live next to this file), so the rules for the
expedite arguments are written once, for ViT, Swin and SwinV2 alike.
"""
from __future__ import annotations

import warnings
from typing import Optional, Sequence, Tuple

from ..ops import (DEFAULT_ITERS, DEFAULT_K, DEFAULT_TEMPERATURE, DEFAULT_WINDOW, NEIGHBOURS,
                   NORMALIZATIONS, TokenClustering, TokenReconstruction, can_cluster,
                   resolve_grid)
from ..ops.cluster import (GridSpec, validate_choice, validate_grid, validate_int,
                           validate_temperature, validate_window)
from ..ops.reducers import REDUCERS, build_reduction

DEFAULT_GRID = 0.7  # 28x28 clusters for 40x40 tokens, the paper's main setting


class ExpediteMixin:
    """Builds ``self.clustering`` / ``self.reconstruction`` from the expedite arguments.

    ``cluster_after`` (alpha) and ``reconstruct_after`` (alpha + beta) count layers
    (or blocks of a stage) 1-based: clustering happens after layer ``cluster_after``,
    reconstruction after layer ``reconstruct_after`` (default: the last one).
    ``cluster_after=None`` disables expediting: the backbone is the stock one.

    ``reducer`` / ``reconstructor`` (``dict(type=...)``, see ``expedite_mm.ops.reducers``)
    swap the method's pair for one of the paper's comparisons at the same budget
    ``cluster_grid``; ``None`` is the method ('Cluster'), configured by the flat
    arguments. ``allowed_reducers`` is what the backbone supports (Swin: grid-shaped ones).
    ``self.clustering`` / ``self.reconstruction`` hold whichever pair was chosen.
    """

    clustering: Optional[TokenClustering]
    reconstruction: Optional[TokenReconstruction]
    reducer_type: Optional[str] = None
    reconstructor_type: Optional[str] = None

    def _init_expedite(self, depth: int, cluster_after: Optional[int],
                       reconstruct_after: Optional[int], cluster_grid: GridSpec,
                       cluster_window: int, cluster_iters: int, temperature: float,
                       reconstruct_k: int, reconstruct_normalize: str,
                       reconstruct_neighbours: str, what: str = "layers",
                       reducer: Optional[dict] = None, reconstructor: Optional[dict] = None,
                       allowed_reducers: Sequence[str] = tuple(REDUCERS)) -> None:
        self._fallback_warned = False
        if cluster_after is None:
            if reconstruct_after is not None:
                raise ValueError("reconstruct_after is set but cluster_after is None; set "
                                 "cluster_after to enable expediting")
            self.cluster_after = self.reconstruct_after = None
            self.clustering = self.reconstruction = None
            return
        if isinstance(cluster_after, bool) or not isinstance(cluster_after, int) \
                or not 0 <= cluster_after < depth:
            raise ValueError(f"cluster_after must be an int in [0, {depth - 1}] (the number of "
                             f"{what} before clustering; the backbone has {depth}), "
                             f"got {cluster_after!r}")
        if reconstruct_after is None:
            reconstruct_after = depth
        if isinstance(reconstruct_after, bool) or not isinstance(reconstruct_after, int) \
                or not cluster_after < reconstruct_after <= depth:
            raise ValueError(f"reconstruct_after must be an int in [{cluster_after + 1}, {depth}] "
                             f"(cluster_after < reconstruct_after <= {depth} {what}), "
                             f"got {reconstruct_after!r}")
        self.cluster_after, self.reconstruct_after = cluster_after, reconstruct_after
        temperature = validate_temperature(temperature, "temperature")
        clustering = dict(window=validate_window(cluster_window, "cluster_window"),
                          iters=validate_int(cluster_iters, "cluster_iters", 1),
                          temperature=temperature)
        reconstruction = dict(
            k=validate_int(reconstruct_k, "reconstruct_k", 1), temperature=temperature,
            normalize=validate_choice(reconstruct_normalize, "reconstruct_normalize",
                                      NORMALIZATIONS),
            neighbours=validate_choice(reconstruct_neighbours, "reconstruct_neighbours",
                                       NEIGHBOURS))
        (self.reducer_type, self.clustering, self.reconstructor_type,
         self.reconstruction) = build_reduction(
            reducer, reconstructor, validate_grid(cluster_grid, "cluster_grid"), clustering,
            reconstruction, allowed=allowed_reducers)

    @property
    def expedited(self) -> bool:
        return self.clustering is not None

    def _can_expedite(self, hw: Tuple[int, int]) -> bool:
        """True if ``hw`` tokens can be clustered; otherwise warns (once) about the fallback."""
        if can_cluster(self.clustering.grid, hw):
            return True
        if not self._fallback_warned:
            grid = resolve_grid(self.clustering.grid, hw)
            warnings.warn(f"{type(self).__name__}: the token grid {tuple(hw)} is smaller than "
                          f"the cluster grid {grid}; running the stock (unexpedited) forward "
                          f"for such inputs", RuntimeWarning, stacklevel=3)
            self._fallback_warned = True
        return False


__all__ = ["ExpediteMixin", "DEFAULT_GRID", "DEFAULT_WINDOW", "DEFAULT_ITERS",
           "DEFAULT_TEMPERATURE", "DEFAULT_K"]
