"""Expedite settings as our tools name them: grids, reducer labels, and applying them.

Shared by ``tools/analysis/sweep.py`` and ``tools/analysis/autotune.py``: a cluster grid is
written ``28`` / ``20x28`` / ``0.7`` (a ratio of the token grid), a reducer as a label
``Cluster``, ``AvgPool``, ``EViT``, ``ToMe`` or ``Reducer+Reconstructor`` (e.g.
``AvgPool+Bilinear``; ``expedite_mm.ops.reducers`` lists them).
"""
from __future__ import annotations

import re
from typing import Any, MutableMapping, Optional, Tuple, Union

GridText = Union[Tuple[int, int], float]


def parse_grid(text: Any) -> GridText:
    """'28' -> (28, 28), '20x28' -> (20, 28), '0.7' -> 0.7 (a ratio of the token grid).

    Raises:
        ValueError: naming the text when it is none of these, or a ratio outside (0, 1].
    """
    text = str(text).strip().lower()
    if re.fullmatch(r"\d+", text):
        return int(text), int(text)
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if match:
        return int(match.group(1)), int(match.group(2))
    try:
        ratio = float(text)
    except ValueError:
        raise ValueError(f"cannot read {text!r} as a grid (28, 20x28 or a ratio)") from None
    if not 0 < ratio <= 1:
        raise ValueError(f"a grid ratio must be in (0, 1], got {text!r}")
    return ratio


def grid_text(grid: GridText) -> str:
    """The inverse of :func:`parse_grid`: (20, 28) -> '20x28', 0.7 -> '0.7'."""
    if isinstance(grid, float):
        return f"{grid:g}"
    return f"{grid[0]}x{grid[1]}"


def reducer_specs(label: str) -> Tuple[Optional[dict], Optional[dict], str, str]:
    """'AvgPool+Bilinear' -> (reducer dict, reconstructor dict, reducer, reconstructor).

    The dicts are ``None`` where the label asks for the method's own operator (the
    backbone's default), so a config that sets them stays a config of the method.

    Raises:
        ValueError: an unknown reducer or reconstructor, or a pair that does not fit.
    """
    from expedite_mm.ops.reducers import DEFAULT_RECONSTRUCTOR, RECONSTRUCTORS, REDUCERS
    reducer, _, reconstructor = label.partition("+")
    if reducer not in REDUCERS:
        raise ValueError(f"reducer must be one of {tuple(REDUCERS)}, got {reducer!r}")
    reconstructor = reconstructor or DEFAULT_RECONSTRUCTOR[reducer]
    if reconstructor not in RECONSTRUCTORS:
        raise ValueError(f"reconstructor must be one of {tuple(RECONSTRUCTORS)}, got "
                         f"{reconstructor!r}")
    if REDUCERS[reducer].state != RECONSTRUCTORS[reconstructor].state:
        raise ValueError(f"{reconstructor} cannot undo {reducer}")
    return ({"type": reducer} if reducer != "Cluster" else None,
            {"type": reconstructor} if reconstructor != DEFAULT_RECONSTRUCTOR[reducer] else None,
            reducer, reconstructor)


def set_reducer(backbone: MutableMapping[str, Any], label: str) -> None:
    """Set a backbone config's ``reducer`` / ``reconstructor`` to the pair ``label`` names
    (in place).

    A key the backbone does not have is only added when the pair needs it, so backbones
    without the keys keep working for the method. A reducer without a grid (EViT, ToMe)
    gives the head no ``h x w`` map, so a ``reconstruct_placement='logits'`` backbone is
    switched to ``'backbone'`` (reconstruction after the last layer).
    """
    from expedite_mm.ops.reducers import GRID_REDUCERS
    reducer, reconstructor, _, _ = reducer_specs(label)
    for key, spec in (("reducer", reducer), ("reconstructor", reconstructor)):
        if spec is not None or key in backbone:
            backbone[key] = spec
    if backbone.get("reconstruct_placement") == "logits" and reducer \
            and reducer["type"] not in GRID_REDUCERS:
        backbone["reconstruct_placement"] = "backbone"


__all__ = ["parse_grid", "grid_text", "reducer_specs", "set_reducer"]
