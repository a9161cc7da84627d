"""The LangChain ledger handler and the controllers through RouteLLMChat (fakes, sockets disabled)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from langchain_routellm import LedgerCallbackHandler, RouteLLMChat
from langchain_routellm.testing import FakeToolChatModel
from shared_core.controller import BUDGET_EXHAUSTED, BudgetController, ShareController
from shared_core.errors import ConfigError
from shared_core.ledger import Ledger, PriceError, UsageError

PRICES = {"strong-fake": (10.0, 30.0), "weak-fake": (0.5, 1.5)}


@pytest.fixture
def llm(strong, weak, keyword_router):
    return RouteLLMChat(strong=strong, weak=weak, router=keyword_router, threshold=0.5)


@pytest.fixture
def handler():
    return LedgerCallbackHandler(prices=PRICES, strong_model="strong-fake")


def cfg(handler):
    return {"callbacks": [handler]}


def test_each_call_is_priced_from_its_decision_and_usage(llm, handler):
    hard = llm.invoke("Prove that 2 is prime", config=cfg(handler))
    easy = llm.invoke("hi there", config=cfg(handler))
    calls = handler.ledger.calls
    assert [(c.role, c.model) for c in calls] == [("strong", "strong-fake"), ("weak", "weak-fake")]
    for call, message in zip(calls, (hard, easy)):
        usage = message.usage_metadata
        assert (call.input_tokens, call.output_tokens) == (usage["input_tokens"], usage["output_tokens"])
        assert call.score == message.response_metadata["routellm"]["score"]
    weak = calls[1]
    assert weak.cost == pytest.approx((weak.input_tokens * 0.5 + weak.output_tokens * 1.5) / 1e6, abs=1e-15)
    assert weak.strong_cost == pytest.approx((weak.input_tokens * 10 + weak.output_tokens * 30) / 1e6, abs=1e-15)
    assert handler.ledger.totals()["strong_share"] == pytest.approx(0.5, abs=1e-12)


def test_streams_batches_and_async_paths_are_recorded_once_each(llm, handler):
    list(llm.stream("Prove it", config=cfg(handler)))
    llm.batch(["Prove a", "b", "c"], config=cfg(handler))

    async def main():
        await llm.ainvoke("Prove d", config=cfg(handler))
        async for _ in llm.astream("e", config=cfg(handler)):
            pass
        await llm.abatch(["f", "Prove g"], config=cfg(handler))

    asyncio.run(main())
    calls = handler.ledger.calls
    assert len(calls) == 8
    assert sorted(c.role for c in calls) == ["strong"] * 4 + ["weak"] * 4
    assert all(c.input_tokens > 0 and c.output_tokens > 0 for c in calls)


def test_threads_and_gather_share_one_handler(llm, handler):
    prompts = [("Prove " if i % 3 == 0 else "") + f"item {i}" for i in range(60)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda p: llm.invoke(p, config=cfg(handler)), prompts))

    async def main():
        await asyncio.gather(*(llm.ainvoke(p, config=cfg(handler)) for p in prompts))

    asyncio.run(main())
    totals = handler.ledger.totals()
    assert (totals["calls"], totals["strong_calls"]) == (120, 40)
    single = LedgerCallbackHandler(prices=PRICES, strong_model="strong-fake")
    for p in prompts:
        llm.invoke(p, config=cfg(single))
    assert totals["cost"] == pytest.approx(2 * single.ledger.totals()["cost"], abs=1e-12)
    assert totals["savings"] == pytest.approx(2 * single.ledger.totals()["savings"], abs=1e-12)


def test_a_model_without_a_price_raises_through_the_call(strong, keyword_router):
    llm = RouteLLMChat(strong=strong, weak=FakeToolChatModel(model_name="unpriced"), router=keyword_router,
                       threshold=0.5)
    handler = LedgerCallbackHandler(prices=PRICES, strong_model="strong-fake")
    with pytest.raises(PriceError, match="no price for model 'unpriced' \\(the weak model\\)"):
        llm.invoke("hi", config=cfg(handler))
    assert handler.ledger.calls == []


def test_a_routed_answer_without_usage_raises(handler):
    with pytest.raises(UsageError, match="reported no token usage"):
        handler._record(AIMessage(content="x", response_metadata={"routellm": {"role": "weak", "model": "weak-fake"}}))


def test_unrouted_runs_are_counted_not_priced(strong, handler):
    strong.invoke("direct call", config=cfg(handler))
    assert handler.unrouted == 1 and handler.ledger.calls == []


def test_handler_arguments():
    with pytest.raises(ConfigError, match="needs a ledger, or prices and strong_model"):
        LedgerCallbackHandler(prices=PRICES)
    with pytest.raises(ConfigError, match="not both"):
        LedgerCallbackHandler(Ledger(PRICES, "strong-fake"), prices=PRICES)
    with pytest.raises(PriceError, match="'gpt' \\(the strong model\\)"):
        LedgerCallbackHandler(prices=PRICES, strong_model="gpt")


# Controllers through the chat model ---------------------------------------------------------
def test_share_controller_sets_each_threshold_and_batch_observes_in_order(strong, weak, keyword_router):
    prompts = [("prove " if i % 2 else "") + f"q{i}" for i in range(80)]
    llm = RouteLLMChat(strong=strong, weak=weak, router=keyword_router, threshold=0.5,
                       controller=ShareController(0.25, window=20, min_scores=5, max_step=0.2))
    records = [m.response_metadata["routellm"] for m in llm.batch(prompts)]
    mirror = ShareController(0.25, window=20, min_scores=5, max_step=0.2)
    expected = [mirror.decide(0.9 if "prove" in p else 0.1, 0.5) for p in prompts]
    assert [r["threshold"] for r in records] == [c.threshold for c in expected]
    assert [r["role"] for r in records] == [c.role.value for c in expected]
    # scores tie (0.9 or 0.1): the threshold steps above and below 0.9 to hold the share
    assert sum(r["role"] == "strong" for r in records[-40:]) == pytest.approx(10, abs=3)
    copied = llm.model_copy(update={"temperature": 0.1})
    assert copied.engine.controller is llm.controller  # copies feed the same controller


def test_budget_controller_charged_by_the_ledger_goes_weak_when_spent(strong, weak, keyword_router):
    budget = BudgetController(0.0005, period=3600, reserve=0.0002, clock=lambda: 0.0)  # reserve >= a strong call
    handler = LedgerCallbackHandler(prices=PRICES, strong_model="strong-fake", budget=budget)
    llm = RouteLLMChat(strong=strong, weak=weak, router=keyword_router, threshold=0.5, controller=budget)
    records = [llm.invoke(f"Prove claim {i}", config=cfg(handler)).response_metadata["routellm"] for i in range(6)]
    roles = [(r["role"], r["reason"]) for r in records]
    n_strong = sum(role == "strong" for role, _ in roles)
    assert n_strong == 2
    assert roles == [("strong", "score")] * n_strong + [("weak", BUDGET_EXHAUSTED)] * (6 - n_strong)
    assert budget.spent == pytest.approx(handler.ledger.totals()["by_role"]["strong"]["cost"], abs=1e-15)
    assert budget.spent <= 0.0005


def test_invoke_with_messages_records_input_tokens_of_the_whole_conversation(llm, handler):
    llm.invoke([HumanMessage("one two"), AIMessage("three"), HumanMessage("prove four")], config=cfg(handler))
    assert handler.ledger.calls[0].input_tokens == (2 + 1) + (1 + 1) + (2 + 1)


def test_module_example_runs():
    import doctest

    import langchain_routellm.ledger

    result = doctest.testmod(langchain_routellm.ledger, raise_on_error=False)
    assert result.attempted > 0 and result.failed == 0


def test_a_price_error_reaches_an_async_caller_too(strong, keyword_router):
    llm = RouteLLMChat(strong=strong, weak=FakeToolChatModel(model_name="unpriced"), router=keyword_router,
                       threshold=0.5)
    handler = LedgerCallbackHandler(prices=PRICES, strong_model="strong-fake")
    with pytest.raises(PriceError, match="'unpriced'"):
        asyncio.run(llm.ainvoke("hi", config=cfg(handler)))


def test_a_pickled_chat_model_carries_its_controllers_state(strong, weak):
    import pickle

    llm = RouteLLMChat(strong=strong, weak=weak, router="random", threshold=0.5,
                       controller=ShareController(0.3, window=20, min_scores=5))
    llm.batch([f"question {i}" for i in range(30)])
    again = pickle.loads(pickle.dumps(llm))
    assert again.engine.controller.to_state() == llm.controller.to_state()
    assert again.engine.controller is not llm.controller
    later = [f"more {i}" for i in range(10)]
    assert ([m.response_metadata["routellm"]["threshold"] for m in again.batch(later)]
            == [m.response_metadata["routellm"]["threshold"] for m in llm.batch(later)])
