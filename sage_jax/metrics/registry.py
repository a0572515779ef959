"""A registry of metrics by name, in the style of stylegan2-ada-pytorch's ``metric_main``.

A metric is a small function ``fn(real, generated, **kwargs) -> dict[str, float]`` of
two sets of features (or of statistics a metric accepts in their place); it is
registered under its function name::

    @register_metric
    def fid(real, generated): ...

    compute_metric("fid", real_feats, gen_feats)    # {'fid': ...}
"""

from __future__ import annotations

from typing import Callable

from sage_jax.metrics.fid import fid, kid

_METRICS: dict[str, Callable] = {"fid": fid, "kid": kid}


def register_metric(fn: Callable) -> Callable:
    """Register ``fn`` under ``fn.__name__`` (a decorator)."""
    if not callable(fn):
        raise TypeError(f"a metric must be callable, got {fn!r}")
    _METRICS[fn.__name__] = fn
    return fn


def list_metrics() -> list[str]:
    return sorted(_METRICS)


def is_valid_metric(name: str) -> bool:
    return name in list_metrics()


def compute_metric(name: str, real, generated, **kwargs) -> dict:
    """Run the metric ``name`` on ``real`` and ``generated``; its keyword arguments
    (e.g. ``key`` for ``kid``) are passed through."""
    if name not in _METRICS:
        raise ValueError(f"unknown metric {name!r}; known: {sorted(_METRICS)}")
    return _METRICS[name](real, generated, **kwargs)
