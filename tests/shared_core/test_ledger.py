"""The savings ledger: prices, per-call costs, totals, errors, concurrent use."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared_core.controller import BudgetController
from shared_core.errors import ConfigError
from shared_core.ledger import Ledger, Price, PriceError, PriceTable, UsageError

PRICES = {"big": (10.0, 30.0), "small": {"input": 0.5, "output": 1.5}}


def test_costs_and_counterfactual_use_the_same_tokens():
    ledger = Ledger(PRICES, strong_model="big")
    weak = ledger.record_call("weak", "small", 2_000, 1_000, score=0.2, reason="score")
    strong = ledger.record_call("strong", "big", 1_000, 500)
    assert weak.cost == pytest.approx(2_000 * 0.5e-6 + 1_000 * 1.5e-6, abs=1e-12)
    assert weak.strong_cost == pytest.approx(2_000 * 10e-6 + 1_000 * 30e-6, abs=1e-12)
    assert strong.cost == strong.strong_cost == pytest.approx(0.025, abs=1e-12)
    t = ledger.totals()
    assert (t["calls"], t["strong_calls"], t["weak_calls"]) == (2, 1, 1)
    assert t["strong_share"] == pytest.approx(0.5, abs=1e-12)
    assert t["cost"] == pytest.approx(0.0025 + 0.025, abs=1e-12)
    assert t["strong_cost"] == pytest.approx(0.05 + 0.025, abs=1e-12)
    assert t["savings"] == pytest.approx(0.0475, abs=1e-12)
    assert t["savings_share"] == pytest.approx(0.0475 / 0.075, abs=1e-12)
    assert t["by_role"]["weak"] == pytest.approx({"calls": 1, "cost": 0.0025, "strong_cost": 0.05}, abs=1e-12)
    assert ledger.summary() == ("2 calls, 1 strong (50.0%), cost $0.027500 vs $0.075000 all-strong, "
                                "saved $0.047500 (63.3%)")


def test_to_dict_and_json():
    ledger = Ledger(PRICES, strong_model="big")
    ledger.record_decision({"role": "weak", "model": "small", "score": 0.1, "reason": "score",
                            "fallback": {"from": "strong"}}, 10, 20)
    data = json.loads(ledger.to_json())
    assert data["totals"]["calls"] == 1
    assert data["calls"][0] == {**data["calls"][0], "role": "weak", "model": "small", "input_tokens": 10,
                                "output_tokens": 20, "score": 0.1, "fallback": True}
    assert data["calls"][0]["savings"] == pytest.approx(data["calls"][0]["strong_cost"] - data["calls"][0]["cost"],
                                                        abs=1e-15)
    assert data["prices"] == {"big": {"input": 10.0, "output": 30.0}, "small": {"input": 0.5, "output": 1.5}}
    assert "same" in data["output_tokens_estimate"]
    assert Ledger(PRICES, "big").summary() == "0 calls"
    assert Ledger(PRICES, "big").totals()["strong_share"] is None


def test_rejected_answers_of_failed_calls_count_in_the_cost_only():
    """A call that failed after its weak answer was rejected: that answer was paid for, no call answered,
    and the counterfactual (straight to the strong model, which failed) cost nothing."""
    ledger = Ledger(PRICES, strong_model="big")
    ledger.record_call("weak", "small", 2_000, 1_000)
    lost = ledger.record_unanswered([{"role": "weak", "model": "small", "reason": "empty: no text",
                                      "usage": {"input_tokens": 100, "output_tokens": 10}}])
    assert (lost.rejected, lost.input_tokens, lost.output_tokens, lost.reason) == (("small",), 100, 10, "empty: no text")
    assert lost.cost == pytest.approx(100 * 0.5e-6 + 10 * 1.5e-6, abs=1e-15)
    t = ledger.totals()
    assert (t["calls"], t["unanswered_answers"]) == (1, 1)
    assert t["unanswered_cost"] == pytest.approx(lost.cost, abs=1e-15)
    assert t["cost"] == pytest.approx(0.0025 + lost.cost, abs=1e-15)
    assert t["strong_cost"] == pytest.approx(0.05, abs=1e-15)  # unchanged
    assert t["input_tokens"] == 2_000  # of the calls that answered
    assert ledger.summary().endswith(", 1 rejected answer of a failed call ($0.000065, in the cost)")
    assert json.loads(ledger.to_json())["unanswered"] == [{"rejected": ["small"], "input_tokens": 100,
                                                          "output_tokens": 10, "cost": pytest.approx(lost.cost),
                                                          "reason": "empty: no text"}]
    with pytest.raises(UsageError, match="'small' rejected by the escalation checks reported no token usage"):
        ledger.record_unanswered([{"role": "weak", "model": "small", "reason": "empty", "usage": None}])
    with pytest.raises(PriceError, match="no price for model 'tiny'"):
        ledger.record_unanswered([{"role": "weak", "model": "tiny", "usage": {"input_tokens": 1, "output_tokens": 1}}])
    with pytest.raises(ConfigError, match="at least one rejected answer"):
        ledger.record_unanswered([])
    assert len(ledger.unanswered) == 1  # the refused ones were not recorded
    ledger.reset()
    assert ledger.unanswered == [] and ledger.summary() == "0 calls"


def test_a_model_without_price_is_an_error_naming_it():
    with pytest.raises(PriceError, match=r"no price for model 'huge' \(the strong model\); the price table has: 'big', 'small'"):
        Ledger(PRICES, strong_model="huge")
    ledger = Ledger(PRICES, strong_model="big")
    with pytest.raises(PriceError, match=r"no price for model 'tiny' \(the weak model\)"):
        ledger.record_call("weak", "tiny", 1, 1)
    assert ledger.calls == []  # nothing recorded at a zero price
    assert isinstance(PriceError("x"), ValueError)


@pytest.mark.parametrize("prices, message", [
    ({}, "non-empty mapping"),
    ({"a": (1.0,)}, "must be \\(input, output\\)"),
    ({"a": (-1.0, 1.0)}, "'a' input price must be a finite number >= 0, got -1.0"),
    ({"a": {"input": 1.0}}, "exactly the keys"),
    ({"a": ("1", 2)}, "got '1'"),
    ({"a": (float("nan"), 2)}, "finite"),
    ({"": (1, 2)}, "model names"),
])
def test_bad_prices_are_refused(prices, message):
    with pytest.raises(PriceError, match=message):
        PriceTable(prices)


def test_price_objects_and_tables_are_accepted():
    table = PriceTable({"a": Price(1.0, 2.0)})
    assert PriceTable(table).price("a") == Price(1.0, 2.0)
    assert table.cost("a", 1_000_000, 500_000) == pytest.approx(2.0, abs=1e-12)


@pytest.mark.parametrize("n_in, n_out, message", [
    (None, 3, "reported no token usage"), (3, None, "reported no token usage"),
    (-1, 3, "input tokens .* must be an integer >= 0, got -1"), (3, 2.5, "output tokens"),
])
def test_calls_without_usable_usage_are_errors(n_in, n_out, message):
    ledger = Ledger(PRICES, strong_model="big")
    with pytest.raises(UsageError, match=message):
        ledger.record_decision({"role": "weak", "model": "small"}, n_in, n_out)
    assert ledger.calls == []


def test_bad_role_and_budget():
    ledger = Ledger(PRICES, strong_model="big")
    with pytest.raises(ConfigError, match="role must be 'strong' or 'weak', got 'medium'"):
        ledger.record_call("medium", "small", 1, 1)
    with pytest.raises(ConfigError, match="budget must be a BudgetController"):
        Ledger(PRICES, "big", budget=object())


def test_strong_calls_charge_the_budget():
    budget = BudgetController(1.0, period=60, clock=lambda: 0.0)
    ledger = Ledger(PRICES, "big", budget=budget)
    ledger.record_call("strong", "big", 10_000, 0)  # $0.10
    ledger.record_call("weak", "small", 1_000_000, 0)  # $0.50, not charged
    assert budget.spent == pytest.approx(0.1, abs=1e-12)


def _record_many(ledger: Ledger, k: int) -> None:
    for i in range(50):
        role, model = ("strong", "big") if (k + i) % 4 == 0 else ("weak", "small")
        ledger.record_call(role, model, 100 + i, 10 + k)


def _expected(ledger_kwargs, ks) -> dict:
    ledger = Ledger(**ledger_kwargs)
    for k in ks:
        _record_many(ledger, k)
    return ledger.totals()


def test_threads_share_a_ledger():
    ledger = Ledger(PRICES, "big")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: _record_many(ledger, k), range(40)))
    got, want = ledger.totals(), _expected({"prices": PRICES, "strong_model": "big"}, range(40))
    assert got["calls"] == 2000 and got["strong_calls"] == want["strong_calls"]
    assert got["input_tokens"] == want["input_tokens"] and got["output_tokens"] == want["output_tokens"]
    assert got["cost"] == pytest.approx(want["cost"], abs=1e-9)
    assert got["strong_cost"] == pytest.approx(want["strong_cost"], abs=1e-9)


def test_asyncio_tasks_share_a_ledger():
    ledger = Ledger(PRICES, "big")

    async def main():
        await asyncio.gather(*(asyncio.to_thread(_record_many, ledger, k) for k in range(20)))

    asyncio.run(main())
    want = _expected({"prices": PRICES, "strong_model": "big"}, range(20))
    assert ledger.totals()["calls"] == 1000
    assert ledger.totals()["cost"] == pytest.approx(want["cost"], abs=1e-9)
    ledger.reset()
    assert ledger.calls == []
