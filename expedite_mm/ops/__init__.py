"""Pure-torch operators of the method (no OpenMMLab imports)."""
from .cluster import (DEFAULT_ITERS, DEFAULT_K, DEFAULT_TEMPERATURE, DEFAULT_WINDOW,
                      NEIGHBOURS, NORMALIZATIONS, ClusterState, TokenClustering,
                      TokenReconstruction, can_cluster, resolve_grid, weighted_gather)
from .layerwise import LAYERWISE_REDUCERS, build_layerwise_reducer
from .reducers import (DEFAULT_RECONSTRUCTOR, GRID_REDUCERS, RECONSTRUCTORS, REDUCERS,
                       build_reduction)
from .window import (DEFAULT_WINDOW_K, WindowClusterState, cluster_windows,
                     reconstruct_windows)

__all__ = [
    "TokenClustering", "TokenReconstruction", "ClusterState", "resolve_grid", "can_cluster",
    "weighted_gather", "DEFAULT_WINDOW", "DEFAULT_ITERS", "DEFAULT_TEMPERATURE", "DEFAULT_K",
    "NORMALIZATIONS", "NEIGHBOURS",
    "REDUCERS", "RECONSTRUCTORS", "DEFAULT_RECONSTRUCTOR", "GRID_REDUCERS", "build_reduction",
    "LAYERWISE_REDUCERS", "build_layerwise_reducer",
    "cluster_windows", "reconstruct_windows", "WindowClusterState", "DEFAULT_WINDOW_K",
]
