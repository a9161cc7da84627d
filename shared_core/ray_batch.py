"""Batch routing on Ray Data: many prompts scored in parallel map batches.

:func:`decide_texts_on_ray` makes the decisions :meth:`RoutingEngine.decide_texts`
makes, in input order, with the router loaded once per Ray actor and each actor
scoring whole batches. The threshold is settled once, on the driver (a strong
fraction is calibrated there), so every actor applies the same one. ``routellm
route --file prompts.jsonl --ray --out decisions.jsonl`` is this function.

Needs the ``ray`` extra (``pip install "routellm-integrations[ray]"``). Without a
running cluster (``RAY_ADDRESS``), a local one is started with its ports on
127.0.0.1.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from shared_core.engine import RoutingEngine
from shared_core.errors import ConfigError
from shared_core.routers import Decision, Role, Router
from shared_core.routers.base import check_prompts


class _Scorer:
    """A Ray Data map-batches actor: loads the router once, scores each batch."""

    def __init__(self, router: Any, threshold: float) -> None:
        self.engine = RoutingEngine.from_settings(router=router, threshold=threshold)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        decisions = self.engine.decide_texts([str(p) for p in batch["prompt"]])
        return {"i": batch["i"], "score": np.array([d.score for d in decisions], dtype=np.float64)}


def _ensure_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ModuleNotFoundError as exc:
        raise ConfigError(f"Ray Data is not installed ({exc}); pip install \"routellm-integrations[ray]\"") from exc
    if not ray.is_initialized():
        local = {} if os.environ.get("RAY_ADDRESS") else {"_node_ip_address": "127.0.0.1"}
        ray.init(include_dashboard=False, log_to_driver=False, **local)
    return ray


def decide_texts_on_ray(
    texts: Sequence[str],
    router: str | Path | Router | None = None,
    threshold: Optional[float] = None,
    strong_fraction: Optional[float] = None,
    *,
    batch_size: int = 256,
    concurrency: Optional[int] = None,
) -> list[Decision]:
    """Decisions for ``texts`` in input order, scored on Ray Data.

    ``router``, ``threshold`` and ``strong_fraction`` mean what they mean for
    :meth:`RoutingEngine.from_settings`; ``concurrency`` is the number of scoring
    actors (default: the cluster's CPUs, at most 8).
    """
    items = check_prompts(texts)
    for name, value in (("batch_size", batch_size), ("concurrency", concurrency)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    driver = RoutingEngine.from_settings(router=router, threshold=threshold, strong_fraction=strong_fraction)
    spec = router  # each actor loads its own copy (a Router object is pickled to it)
    if isinstance(router, str) and router.startswith("router-"):
        spec = driver.router.name  # the model string's threshold is settled in ``driver``
    ray = _ensure_ray()
    actors = concurrency or max(1, min(int(ray.cluster_resources().get("CPU", 1)), 8))
    dataset = ray.data.from_items([{"i": i, "prompt": p} for i, p in enumerate(items)])
    scored = dataset.map_batches(
        _Scorer, fn_constructor_kwargs={"router": spec, "threshold": driver.threshold},
        batch_size=batch_size, concurrency=actors, batch_format="numpy",
    )
    scores = np.full(len(items), np.nan)
    for batch in scored.iter_batches(batch_format="numpy", batch_size=None):
        scores[batch["i"]] = batch["score"]  # placed by index: input order whatever order batches finish in
    if np.isnan(scores).any():
        missing = int(np.isnan(scores).sum())
        raise RuntimeError(f"Ray Data returned no score for {missing} of {len(items)} prompts")
    thr, name = driver.threshold, driver.router.name
    return [Decision(Role.STRONG if s >= thr else Role.WEAK, float(s), thr, name) for s in scores]
