"""Moved to :mod:`expedite_mm.analysis.latency` (this path warns, and is removed in expedite-mm 0.3)."""
from expedite_mm.utils import moved

moved(__name__)
