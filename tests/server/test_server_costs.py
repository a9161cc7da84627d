"""The server's cost metrics: the ledger's numbers for the same usage, when prices are configured."""

from __future__ import annotations

import httpx
import pytest

from server_support import STRONG_KEY, WEAK_KEY, KeywordRouter, ServerThread
from shared_core.engine import RoutingEngine
from shared_core.ledger import Ledger, PriceError
from shared_core.server.app import create_app
from shared_core.server.config import load_config

PRICES = {"strong-model": (10.0, 30.0), "weak-model": (0.5, 1.5)}


def _config(strong, weak):
    flags = {"strong_base_url": strong.url, "strong_model": "strong-model",
             "weak_base_url": weak.url, "weak_model": "weak-model"}
    return load_config(flags, env={"ROUTELLM_STRONG_API_KEY": STRONG_KEY, "ROUTELLM_WEAK_API_KEY": WEAK_KEY})


def _metric(text: str, name: str, role: str, labels: str = "") -> float:
    prefix = f'{name}_total{{{labels}role="{role}"}} '
    return float(next(line for line in text.splitlines() if line.startswith(prefix))[len(prefix):])


def test_cost_counters_match_the_ledger(strong, weak):
    thread = ServerThread(create_app(_config(strong, weak), RoutingEngine(KeywordRouter(), 0.5), prices=PRICES)).start()
    try:
        url = f"{thread.url}/v1/chat/completions"
        httpx.post(url, json={"messages": [{"role": "user", "content": "Please prove it."}]}).raise_for_status()
        httpx.post(url, json={"messages": [{"role": "user", "content": "Say hello."}]}).raise_for_status()
        with httpx.stream("POST", url, json={"messages": [{"role": "user", "content": "hi"}], "stream": True}) as r:
            r.read()
        text = httpx.get(f"{thread.url}/metrics").text
    finally:
        thread.stop()
    # Costs are linear in tokens: the ledger priced on the tokens the server counted, per role.
    ledger = Ledger(PRICES, "strong-model")
    for role in ("strong", "weak"):
        tokens = [int(_metric(text, "routellm_tokens", role, f'kind="{kind}",')) for kind in ("prompt", "completion")]
        assert tokens[0] > 0 and tokens[1] > 0
        ledger.record_call(role, f"{role}-model", *tokens)
    by_role = ledger.totals()["by_role"]
    for role in ("strong", "weak"):
        assert _metric(text, "routellm_cost_dollars", role) == pytest.approx(by_role[role]["cost"], abs=1e-12)
        assert _metric(text, "routellm_strong_cost_dollars", role) == pytest.approx(by_role[role]["strong_cost"],
                                                                                    abs=1e-12)


def test_no_prices_no_cost_metrics_and_missing_prices_fail_at_startup(strong, weak):
    app = create_app(_config(strong, weak), RoutingEngine(KeywordRouter(), 0.5))
    assert "routellm_cost_dollars" not in app.state.routellm.metrics.render().decode()
    with pytest.raises(PriceError, match="no price for model 'weak-model' \\(the weak model\\)"):
        create_app(_config(strong, weak), RoutingEngine(KeywordRouter(), 0.5), prices={"strong-model": (1, 1)})
    with pytest.raises(PriceError, match="'strong-model' \\(the strong model\\)"):
        create_app(_config(strong, weak), RoutingEngine(KeywordRouter(), 0.5), prices={"weak-model": (1, 1)})
