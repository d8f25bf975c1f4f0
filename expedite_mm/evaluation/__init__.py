"""Evaluation metrics for mmseg (registered on import; needs mmseg)."""
from .depth_metric import MonoDepthMetric

__all__ = ["MonoDepthMetric"]
