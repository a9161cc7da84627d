"""Prometheus metrics of one app, in its own registry (no process-global state).

With several uvicorn workers, ``routellm serve`` sets ``PROMETHEUS_MULTIPROC_DIR``
for its worker processes and each scrape of ``/metrics`` adds up all workers
(prometheus-client's multiprocess mode).

With a price table (``create_app(..., prices=...)``), each answer's usage is also
priced as :class:`shared_core.ledger.Ledger` prices it: ``routellm_cost_dollars``
(the answering model's prices) and ``routellm_strong_cost_dollars`` (the same
tokens at the strong model's prices, the counterfactual), by the role that
answered; savings are their difference.
"""

from __future__ import annotations

import os
from typing import Optional

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from shared_core.ledger import PriceTable

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    """The server's counters and histograms; :meth:`render` is the ``/metrics`` body."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, prices: Optional[PriceTable] = None, strong_model: Optional[str] = None) -> None:
        self.prices, self.strong_model = prices, strong_model
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("routellm_requests", "HTTP requests answered, by path and status",
                                ["path", "status"], registry=r)
        self.decisions = Counter("routellm_decisions", "Routing decisions, by the role chosen and the router",
                                 ["role", "router"], registry=r)
        self.answers = Counter("routellm_answers", "Chat completions answered, by the role that answered",
                               ["role", "stream"], registry=r)
        self.fallbacks = Counter("routellm_fallbacks", "Calls answered by the other model after the chosen one failed",
                                 ["from_role"], registry=r)
        self.upstream_errors = Counter("routellm_upstream_errors", "Failed upstream calls, by role and HTTP status",
                                       ["role", "status"], registry=r)
        self.routing_seconds = Histogram("routellm_routing_seconds", "Time to decide a request's route",
                                         buckets=_LATENCY_BUCKETS, registry=r)
        self.upstream_seconds = Histogram("routellm_upstream_seconds",
                                          "Time of an upstream call (streams: until the last chunk)",
                                          ["role"], buckets=_LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("routellm_tokens", "Tokens the upstreams reported, by role and kind",
                              ["role", "kind"], registry=r)
        if prices is not None:
            prices.price(strong_model, "strong")  # a missing price fails at startup
            self.cost = Counter("routellm_cost_dollars", "Dollars the answers cost at the configured prices, by role",
                                ["role"], registry=r)
            self.strong_cost = Counter("routellm_strong_cost_dollars",
                                       "Dollars the same tokens would have cost on the strong model, by role",
                                       ["role"], registry=r)

    def add_usage(self, role: str, usage: object, model: Optional[str] = None) -> tuple[int | None, int | None]:
        """Count an OpenAI ``usage`` object (and price it, with prices, as ``model``'s);
        returns ``(prompt, completion)`` tokens (or ``None``)."""
        if not isinstance(usage, dict):
            return None, None
        counts = []
        for kind in ("prompt", "completion"):
            n = usage.get(f"{kind}_tokens")
            if isinstance(n, int) and not isinstance(n, bool) and n >= 0:
                self.tokens.labels(role, kind).inc(n)
                counts.append(n)
            else:
                counts.append(None)
        if self.prices is not None and model is not None and None not in counts:
            self.cost.labels(role).inc(self.prices.cost(model, counts[0], counts[1]))
            self.strong_cost.labels(role).inc(self.prices.cost(self.strong_model, counts[0], counts[1]))
        return counts[0], counts[1]

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
