"""Helpers for the tools: fvcore FLOP counting, safe checkpoint loading."""
