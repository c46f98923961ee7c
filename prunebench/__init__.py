"""prunebench: published pruning methods side by side. ``prunebench.load(path)`` rebuilds a
compressed checkpoint's slimmed model (see ``prunebench.running.checkpoint``)."""

from __future__ import annotations


def __getattr__(name: str):
    if name == "load":  # imported lazily: the core's modules import this package first
        from prunebench.running.checkpoint import load

        return load
    raise AttributeError(f"module 'prunebench' has no attribute {name!r}")
