"""The LangChain ledger handler and the controllers through RouteLLMChat (fakes, sockets disabled)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from langchain_routellm import LedgerCallbackHandler, RouteLLMChat, RouteLLMRunnable
from langchain_routellm._routing import token_bounds
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


# A strong stream the caller leaves before its end ----------------------------------------
LEFT_Q = "Please prove that there are infinitely many primes, step by step."


def _budgeted(strong, weak, keyword_router, cls=RouteLLMChat, **fields):
    budget = BudgetController(1.0, period=3600, reserve=0.0002, clock=lambda: 0.0)
    handler = LedgerCallbackHandler(prices=PRICES, strong_model="strong-fake", budget=budget)
    llm = cls(strong=strong, weak=weak, router=keyword_router, threshold=0.5, controller=budget, **fields)
    return budget, handler, llm


def _bound(model, kwargs, completion_tokens):
    """What the budget charges: the prompt's byte bound and the call's max tokens, at the strong price."""
    prompt = token_bounds(model, [HumanMessage(LEFT_Q)], kwargs)[0]
    return (prompt * 10.0 + completion_tokens * 30.0) / 1e6


def test_a_strong_stream_left_after_its_first_chunk_is_charged_its_bound(strong, weak, keyword_router):
    """Before: nothing charged and its reservation held until the period ended."""
    budget, handler, llm = _budgeted(strong, weak, keyword_router, max_tokens=50)
    stream = llm.stream(LEFT_Q, config=cfg(handler))
    first = next(stream)
    assert first.response_metadata["routellm"]["role"] == "strong"
    stream.close()
    assert budget.spent == pytest.approx(_bound(strong, {"max_tokens": 50}, 50), abs=1e-15)
    assert budget.remaining == pytest.approx(1.0 - budget.spent, abs=1e-15)  # no reservation left held
    assert handler.ledger.totals()["calls"] == 0  # the ledger prices answers it saw end
    exact = llm.invoke(LEFT_Q, config=cfg(handler))  # the whole answer costs less than its bound
    assert handler.ledger.totals()["by_role"]["strong"]["cost"] < _bound(strong, {"max_tokens": 50}, 50)
    assert exact.usage_metadata["output_tokens"] <= 50


def test_a_left_stream_uses_the_calls_max_tokens_and_a_break_closes_it(strong, weak, keyword_router):
    budget, handler, llm = _budgeted(strong, weak, keyword_router)
    for _ in llm.stream(LEFT_Q, config=cfg(handler), max_tokens=20):
        break
    assert budget.spent == pytest.approx(_bound(strong, {"max_tokens": 20}, 20), abs=1e-15)
    assert budget.remaining == pytest.approx(1.0 - budget.spent, abs=1e-15)


def test_a_stream_left_after_its_usage_is_charged_that_usage(strong, weak, keyword_router):
    budget, handler, llm = _budgeted(strong, weak, keyword_router, max_tokens=50)
    stream = llm.stream(LEFT_Q, config=cfg(handler))
    chunk = next(stream)
    while not chunk.usage_metadata:
        chunk = next(stream)
    stream.close()  # left at the last chunk: the run ends with an error, so no ledger charges it
    usage = chunk.usage_metadata
    assert budget.spent == pytest.approx((usage["input_tokens"] * 10.0 + usage["output_tokens"] * 30.0) / 1e6,
                                         abs=1e-15)
    assert handler.ledger.totals()["calls"] == 0


def test_a_stream_read_to_its_end_is_charged_once_by_the_ledger(strong, weak, keyword_router):
    budget, handler, llm = _budgeted(strong, weak, keyword_router, max_tokens=50)
    chunks = list(llm.stream(LEFT_Q, config=cfg(handler)))
    assert chunks[0].response_metadata["routellm"]["role"] == "strong"
    assert budget.spent == pytest.approx(handler.ledger.totals()["by_role"]["strong"]["cost"], abs=1e-15)
    assert budget.remaining == pytest.approx(1.0 - budget.spent, abs=1e-15)


def test_without_max_tokens_a_left_stream_is_charged_the_reserve_or_else_the_period(strong, weak, keyword_router,
                                                                                   caplog):
    """No bound on its cost: the reserve (at least one strong call's cost), or, with none, the period;
    before, nothing was charged (its reservation held), so with no reserve it cost the budget nothing."""
    budget, handler, llm = _budgeted(strong, weak, keyword_router)
    with caplog.at_level("WARNING", logger="shared_core.controller"):
        for _ in llm.stream(LEFT_Q, config=cfg(handler)):
            break
    assert budget.spent == pytest.approx(0.0002, abs=1e-15)
    assert budget.remaining == pytest.approx(1.0 - 0.0002, abs=1e-15)  # charged, not held
    assert "no bound on its tokens" in caplog.text and "charged the reserve $0.0002" in caplog.text
    budget = BudgetController(1.0, period=3600, clock=lambda: 0.0)  # no reserve
    handler = LedgerCallbackHandler(prices=PRICES, strong_model="strong-fake", budget=budget)
    llm = RouteLLMChat(strong=strong, weak=weak, router=keyword_router, threshold=0.5, controller=budget)
    for _ in llm.stream(LEFT_Q, config=cfg(handler)):
        break
    assert budget.spent >= 1.0 and budget.remaining <= 0.0  # a cost that may be any amount is never zero
    assert llm.invoke(LEFT_Q).response_metadata["routellm"]["reason"] == BUDGET_EXHAUSTED


def test_a_left_weak_stream_changes_nothing(strong, weak, keyword_router):
    budget, handler, llm = _budgeted(strong, weak, keyword_router, max_tokens=50)
    for chunk in llm.stream("Say hello.", config=cfg(handler)):
        assert chunk.response_metadata["routellm"]["role"] == "weak"
        break
    assert budget.spent == 0.0 and budget.remaining == 1.0


def test_an_async_stream_left_is_charged_at_once(strong, weak, keyword_router):
    budget, handler, llm = _budgeted(strong, weak, keyword_router, max_tokens=50)

    async def leave():
        stream = llm.astream(LEFT_Q, config=cfg(handler))
        async for _ in stream:
            break
        await stream.aclose()
        return budget.spent, budget.remaining  # read before the loop ends (and collects what is left)

    spent, remaining = asyncio.run(leave())
    assert spent == pytest.approx(_bound(strong, {"max_tokens": 50}, 50), abs=1e-15)
    assert remaining == pytest.approx(1.0 - spent, abs=1e-15)


def test_the_runnable_charges_a_left_stream_too(strong, weak, keyword_router):
    budget, handler, runnable = _budgeted(strong, weak, keyword_router, cls=RouteLLMRunnable)
    for _ in runnable.stream(LEFT_Q, config=cfg(handler), max_tokens=30):
        break
    assert budget.spent == pytest.approx(_bound(strong, {"max_tokens": 30}, 30), abs=1e-15)

    async def leave():
        stream = runnable.astream(LEFT_Q, config=cfg(handler), max_tokens=30)
        async for _ in stream:
            break
        await stream.aclose()
        return budget.spent

    assert asyncio.run(leave()) == pytest.approx(2 * _bound(strong, {"max_tokens": 30}, 30), abs=1e-15)
    assert budget.remaining == pytest.approx(1.0 - budget.spent, abs=1e-15)


@pytest.mark.filterwarnings("ignore:A test tried to use socket")  # ChatOpenAI probes socket options when built
def test_token_bounds_of_a_chat_call():
    langchain_openai = pytest.importorskip("langchain_openai")
    model = langchain_openai.ChatOpenAI(model="gpt-4o", max_tokens=77, api_key="sk-test")
    text = "Prove that sqrt(2) is irrational. " * 20
    prompt, completion = token_bounds(model, [HumanMessage(text)], {})
    assert completion == 77  # the model's own max_tokens, as tracing reads it
    assert len(text.encode()) + 72 < prompt < len(text.encode()) + 400  # its bytes, the template and the JSON
    assert token_bounds(model, [HumanMessage(text)], {"max_tokens": 5})[1] == 5  # the call's wins
    assert token_bounds(model.model_copy(update={"n": 3}), [HumanMessage(text)], {})[1] == 3 * 77
    unset = langchain_openai.ChatOpenAI(model="gpt-4o", api_key="sk-test")  # no max_tokens: its profile's maximum
    assert unset.profile["max_output_tokens"] == 16384 and token_bounds(unset, [HumanMessage(text)], {})[1] == 16384
    unknown = langchain_openai.ChatOpenAI(model="my-local-model", api_key="sk-test")  # no profile either
    assert unknown.profile is None and token_bounds(unknown, [HumanMessage(text)], {}) is None
    image = HumanMessage(content=[{"type": "text", "text": "What is this?"},
                                  {"type": "image_url", "image_url": {"url": "http://x/a.png"}}])
    assert token_bounds(model, [image], {}) is None  # an image's tokens are not bounded by its bytes
    tools = {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}
    assert token_bounds(model, [HumanMessage(text)], tools)[0] > prompt  # tool schemas are sent too


def test_with_streaming_disabled_stream_passes_the_model_no_stream_state(keyword_router):
    class Strict(FakeToolChatModel):
        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            assert not [k for k in kwargs if k.startswith("routellm")], kwargs  # nothing of ours reaches a model
            return super()._generate(messages, stop, run_manager, **kwargs)

    llm = RouteLLMChat(strong=Strict(model_name="strong-fake"), weak=Strict(model_name="weak-fake"),
                       router=keyword_router, threshold=0.5, disable_streaming=True)
    assert [c.content for c in llm.stream(LEFT_Q)] == [f"[strong-fake] {LEFT_Q}"]


@pytest.mark.parametrize("reserve", [0.0002, 0.0])
def test_a_strong_answer_without_usage_raises_and_is_charged_as_unknown(weak, keyword_router, reserve):
    """Before: the budget was charged nothing (its reservation held), a zero cost with no reserve."""
    class NoUsage(FakeToolChatModel):
        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            result = super()._generate(messages, stop, run_manager, **kwargs)
            result.generations[0].message.usage_metadata = None
            return result

    budget = BudgetController(1.0, period=3600, reserve=reserve, clock=lambda: 0.0)
    handler = LedgerCallbackHandler(prices=PRICES, strong_model="strong-fake", budget=budget)
    llm = RouteLLMChat(strong=NoUsage(model_name="strong-fake"), weak=weak, router=keyword_router, threshold=0.5,
                       controller=budget)
    with pytest.raises(UsageError, match="reported no token usage.*the budget"):
        llm.invoke(LEFT_Q, config=cfg(handler))
    if reserve:
        assert budget.spent == pytest.approx(reserve, abs=1e-15) and budget.remaining == pytest.approx(1.0 - reserve)
    else:
        assert budget.spent >= 1.0 and llm.invoke(LEFT_Q).response_metadata["routellm"]["reason"] == BUDGET_EXHAUSTED
    llm.invoke("Say hello.", config=cfg(handler))  # a weak answer is never charged to the budget
