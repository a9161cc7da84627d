"""Prometheus metrics of one app, in its own registry (no process-global state).

With several uvicorn workers, ``routellm serve`` sets ``PROMETHEUS_MULTIPROC_DIR``
for its worker processes and each scrape of ``/metrics`` adds up all workers
(prometheus-client's multiprocess mode).

With a price table (``create_app(..., prices=...)``), each answer's usage is also
priced as :class:`shared_core.ledger.Ledger` prices it: ``routellm_cost_dollars``
(the answering model's prices) and ``routellm_strong_cost_dollars`` (the same
tokens at the strong model's prices, the counterfactual), by the role that
answered; savings are their difference. An answer whose usage is missing is not
priced at zero: it counts in ``routellm_unpriced_answers`` instead.

With a controller (``controller=``, the engine's), scrapes read its state:
``routellm_controller_threshold`` and ``routellm_controller_strong_share`` (the
share controller's current threshold and realised share over its window),
``routellm_budget_dollars`` / ``_spent_dollars`` / ``_remaining_dollars`` (the
budget controller's current period). ``routellm_escalations`` counts answers
rejected by the escalation checks (by role and check), ``routellm_budget_exhausted``
calls sent weak, or escalations not made, because the budget was spent, and
``routellm_budget_without_usage`` strong answers without usage by how the budget was
charged (``bound``: the request's upper bound; with none, ``reserve``: the budget's
reserve, or ``period``: the period spent).
"""

from __future__ import annotations

import math
import os
from typing import Any, Iterator, Optional

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from shared_core.controller import BudgetController, Controller, ShareController
from shared_core.ledger import PriceTable

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    """The server's counters and histograms; :meth:`render` is the ``/metrics`` body."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, prices: Optional[PriceTable] = None, strong_model: Optional[str] = None,
                 controller: Optional[Controller] = None) -> None:
        self.prices, self.strong_model = prices, strong_model
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("routellm_requests", "HTTP requests answered, by path and status",
                                ["path", "status"], registry=r)
        self.decisions = Counter("routellm_decisions", "Routing decisions, by the role chosen and the router",
                                 ["role", "router"], registry=r)
        self.unscored = Counter("routellm_unscored_decisions",
                                "Decisions made without a score, by why and the role chosen: no text to score "
                                "(no_user_message, no_text), a follow-up of a stored response (previous_response), "
                                "a request only one upstream can take (needs_responses_api)", ["reason", "role"],
                                registry=r)
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
        self.escalations = Counter("routellm_escalations",
                                   "Answers the escalation checks rejected (the call went to the strong model), "
                                   "by the rejected role and the check", ["from_role", "check"], registry=r)
        self.controls = _Controls(controller)
        if controller is not None:
            r.register(self.controls)
        if self.controls.budget is not None:
            self.budget_exhausted = Counter("routellm_budget_exhausted",
                                            "Calls sent weak (what) or not escalated because the strong budget was "
                                            "spent", ["what"], registry=r)
            self.budget_without_usage = Counter(
                "routellm_budget_without_usage",
                "Strong answers that reported no usage, by how the budget was charged: at the request's upper "
                "bound (its bytes and max tokens); with no bound, the reserve, or with none the period counted "
                "spent", ["charged"], registry=r)
        if prices is not None:
            prices.price(strong_model, "strong")  # a missing price fails at startup
            self.cost = Counter("routellm_cost_dollars", "Dollars the answers cost at the configured prices, by role",
                                ["role"], registry=r)
            self.strong_cost = Counter("routellm_strong_cost_dollars",
                                       "Dollars the same tokens would have cost on the strong model, by role",
                                       ["role"], registry=r)
            self.unpriced = Counter("routellm_unpriced_answers",
                                    "Answers that reported no usage, so could not be priced (never priced at zero)",
                                    ["role"], registry=r)

    def add_usage(self, role: str, usage: object, model: Optional[str] = None) -> tuple[int | None, int | None]:
        """Count an OpenAI ``usage`` object (and price it, with prices, as ``model``'s);
        returns ``(prompt, completion)`` tokens (or ``None``)."""
        usage = usage if isinstance(usage, dict) else {}
        counts = []
        for kind in ("prompt", "completion"):
            n = usage.get(f"{kind}_tokens")
            if isinstance(n, int) and not isinstance(n, bool) and n >= 0:
                self.tokens.labels(role, kind).inc(n)
                counts.append(n)
            else:
                counts.append(None)
        if self.prices is not None and model is not None:
            if None in counts:
                self.unpriced.labels(role).inc()
            else:
                self.cost.labels(role).inc(self.prices.cost(model, counts[0], counts[1]))
                self.strong_cost.labels(role).inc(self.prices.cost(self.strong_model, counts[0], counts[1]))
        return counts[0], counts[1]

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            if self.controls.controller is not None:
                registry.register(self.controls)
            return generate_latest(registry)
        return generate_latest(self.registry)


class _Controls:
    """A collector that reads the controller's state at each scrape."""

    def __init__(self, controller: Optional[Controller]) -> None:
        self.controller = controller
        self.budget = controller if isinstance(controller, BudgetController) else None
        inner = self.budget.inner if self.budget is not None else controller
        self.share = inner if isinstance(inner, ShareController) else None

    def describe(self) -> list[Any]:
        return []  # read at collect time only

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self.share is not None:
            threshold, realised = self.share.threshold, self.share.realised_share
            yield GaugeMetricFamily("routellm_controller_target_strong_share", "The share controller's target",
                                    value=self.share.target)
            yield GaugeMetricFamily("routellm_controller_threshold",
                                    "The threshold the share controller gives the next call (NaN before the first)",
                                    value=math.nan if threshold is None else threshold)
            yield GaugeMetricFamily("routellm_controller_strong_share",
                                    "Strong share of the controller's window of decisions (NaN before the first)",
                                    value=math.nan if realised is None else realised)
        if self.budget is not None:
            yield GaugeMetricFamily("routellm_budget_dollars", "The strong model's budget per period",
                                    value=self.budget.budget)
            yield GaugeMetricFamily("routellm_budget_period_seconds", "The budget's period", value=self.budget.period)
            yield GaugeMetricFamily("routellm_budget_spent_dollars", "Strong spend charged in the current period",
                                    value=self.budget.spent)
            yield GaugeMetricFamily("routellm_budget_remaining_dollars",
                                    "Budget left in the current period (reservations of calls in flight deducted)",
                                    value=self.budget.remaining)


def controls_state(controller: Optional[Controller]) -> dict[str, Any]:
    """The controller's current state for ``/health`` (empty without one)."""
    controls = _Controls(controller)
    out: dict[str, Any] = {}
    if controls.share is not None:
        out["controller"] = {"kind": "share", "target_strong_share": controls.share.target,
                             "window": controls.share.window, "threshold": controls.share.threshold,
                             "realised_share": controls.share.realised_share}
    if controls.budget is not None:
        b = controls.budget
        out["budget"] = {"budget": b.budget, "period": b.period, "reserve": b.reserve, "spent": b.spent,
                         "remaining": b.remaining}
    return out
