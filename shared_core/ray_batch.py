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

from shared_core.engine import RoutingEngine, is_model_string, parse_model_string, resolve_router
from shared_core.errors import ConfigError
from shared_core.policy import routing_text
from shared_core.routers import Decision, Role, Router
from shared_core.routers.base import check_prompts


class _Scorer:
    """A Ray Data map-batches actor: loads the router once, scores each batch."""

    def __init__(self, router: Any) -> None:
        self.router = resolve_router(router)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"i": batch["i"], "score": self.router.score([str(p) for p in batch["prompt"]])}


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
    on_no_text: str = "strong",
    *,
    batch_size: int = 256,
    concurrency: Optional[int] = None,
) -> list[Decision]:
    """Decisions for ``texts`` in input order, scored on Ray Data.

    Each text is routed as a one-message conversation, as ``routellm route`` does
    (:mod:`shared_core.policy`: a text that is empty or only whitespace is not
    scored and goes to ``on_no_text``). ``router``, ``threshold`` and
    ``strong_fraction`` mean what they mean for :meth:`RoutingEngine.from_settings`;
    ``concurrency`` is the number of scoring actors (default: the cluster's CPUs,
    at most 8).
    """
    items = check_prompts(texts)
    for name, value in (("batch_size", batch_size), ("concurrency", concurrency)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    driver = RoutingEngine.from_settings(router=router, threshold=threshold, strong_fraction=strong_fraction,
                                         on_no_text=on_no_text)
    policy = [routing_text([("user", t)]) for t in items]
    scored_idx = [i for i, (text, _) in enumerate(policy) if text is not None]
    spec = router  # each actor loads its own copy (a Router object is pickled to it)
    if is_model_string(router):
        spec = parse_model_string(router)[0]  # its threshold is settled in ``driver``
    ray = _ensure_ray()
    actors = concurrency or max(1, min(int(ray.cluster_resources().get("CPU", 1)), 8))
    dataset = ray.data.from_items([{"i": i, "prompt": policy[i][0]} for i in scored_idx])
    scored = dataset.map_batches(
        _Scorer, fn_constructor_kwargs={"router": spec},
        batch_size=batch_size, concurrency=actors, batch_format="numpy",
    )
    scores = np.full(len(items), np.nan)
    if scored_idx:
        for batch in scored.iter_batches(batch_format="numpy", batch_size=None):
            scores[batch["i"]] = batch["score"]  # placed by index: input order whatever order batches finish in
    missing = int(np.isnan(scores[scored_idx]).sum())
    if missing:
        raise RuntimeError(f"Ray Data returned no score for {missing} of {len(scored_idx)} prompts")
    thr, name = driver.threshold, driver.router.label
    return [
        Decision(Role.STRONG if scores[i] >= thr else Role.WEAK, float(scores[i]), thr, name)
        if text is not None else Decision(driver.on_no_text, None, thr, name, reason)
        for i, (text, reason) in enumerate(policy)
    ]
