"""The LlamaIndex ledger handler, the controllers through RouteLLM, and the same numbers as LangChain."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
import pytest
from llama_index.core.base.llms.types import ChatMessage, CompletionResponse

from li_support import KeywordRouter, NamedMockLLM, UsageMockLLM
from llamaindex_routellm import LedgerHandler, RouteLLM
from llamaindex_routellm.ledger import response_usage
from llamaindex_routellm.llm import _token_bounds
from shared_core.controller import BUDGET_EXHAUSTED, BudgetController, ShareController
from shared_core.errors import ConfigError
from shared_core.ledger import Ledger, PriceError, UsageError

PRICES = {"strong-m": (10.0, 30.0), "weak-m": (0.5, 1.5)}


@pytest.fixture
def llm():
    return RouteLLM(strong=UsageMockLLM(name="strong-m"), weak=UsageMockLLM(name="weak-m"),
                    router=KeywordRouter(), threshold=0.5)


@pytest.fixture
def handler():
    with LedgerHandler(prices=PRICES, strong_model="strong-m") as h:
        yield h


def user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=text)]


def test_each_call_is_priced_from_its_decision_and_raw_usage(llm, handler):
    hard = llm.chat(user("Prove that 2 is prime"))
    easy = llm.complete("hi there")
    calls = handler.ledger.calls
    assert [(c.role, c.model) for c in calls] == [("strong", "strong-m"), ("weak", "weak-m")]
    for call, response in zip(calls, (hard, easy)):
        assert (call.input_tokens, call.output_tokens) == response_usage(response)
        assert call.score == response.additional_kwargs["routellm"]["score"]
    assert handler.totals()["strong_share"] == pytest.approx(0.5, abs=1e-12)


def test_streams_and_async_paths_are_recorded_once_each(llm, handler):
    list(llm.stream_chat(user("Prove it")))

    async def main():
        await llm.achat(user("prove a"))
        await llm.acomplete("b")
        stream = await llm.astream_chat(user("c"))
        async for _ in stream:
            pass

    asyncio.run(main())
    calls = handler.ledger.calls
    assert [c.role for c in calls] == ["strong", "strong", "weak", "weak"]
    assert calls[0].output_tokens == len("[strong-m] Prove it".split())


def test_threads_and_gather_share_one_handler(llm, handler):
    prompts = [("Prove " if i % 3 == 0 else "") + f"item {i}" for i in range(60)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda p: llm.chat(user(p)), prompts))

    async def main():
        await asyncio.gather(*(llm.achat(user(p)) for p in prompts))

    asyncio.run(main())
    totals = handler.totals()
    assert (totals["calls"], totals["strong_calls"]) == (120, 40)


def test_a_model_without_a_price_is_kept_and_raised_on_read():
    llm = RouteLLM(strong=UsageMockLLM(name="strong-m"), weak=UsageMockLLM(name="unpriced"),
                   router=KeywordRouter(), threshold=0.5)
    with LedgerHandler(prices=PRICES, strong_model="strong-m") as handler:
        llm.chat(user("hi"))  # LlamaIndex swallows handler errors: the handler keeps it
    assert handler.ledger.calls == []
    for read in (handler.check, handler.summary, handler.to_dict, handler.totals):
        with pytest.raises(PriceError, match="no price for model 'unpriced' \\(the weak model\\)"):
            read()


def test_a_routed_answer_without_usage_is_an_error(handler):
    plain = RouteLLM(strong=NamedMockLLM(name="strong-m"), weak=NamedMockLLM(name="weak-m"),
                     router=KeywordRouter(), threshold=0.5)
    plain.complete("hi")  # MockLLM reports no usage
    with pytest.raises(UsageError, match="'weak-m' \\(weak\\) reported no token usage"):
        handler.check()


def test_usage_shapes():
    class Obj:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    assert response_usage(CompletionResponse(text="", raw={"usage": {"input_tokens": 3, "output_tokens": 4}})) == (3, 4)
    assert response_usage(CompletionResponse(text="", raw=Obj(usage=Obj(prompt_tokens=5, completion_tokens=6)))) == (5, 6)
    assert response_usage(CompletionResponse(text="", additional_kwargs={"prompt_tokens": 7, "completion_tokens": 8})) == (7, 8)
    assert response_usage(CompletionResponse(text="")) == (None, None)


def test_attach_detach_and_arguments():
    handler = LedgerHandler(prices=PRICES, strong_model="strong-m").attach()
    with pytest.raises(ConfigError, match="already attached"):
        handler.attach()
    handler.detach()
    handler.detach()  # twice is fine
    with pytest.raises(ConfigError, match="not both"):
        LedgerHandler(Ledger(PRICES, "strong-m"), strong_model="strong-m")
    with pytest.raises(ConfigError, match="needs a ledger"):
        LedgerHandler()


def test_detached_handler_records_nothing(llm):
    handler = LedgerHandler(prices=PRICES, strong_model="strong-m")
    with handler:
        llm.chat(user("one"))
    llm.chat(user("two"))
    assert handler.totals()["calls"] == 1


# Same numbers as the LangChain handler for the same conversations -------------------------
CONVERSATIONS = [
    [("user", "Prove that there are infinitely many primes.")],
    [("user", "hi there")],
    [("user", "What is 2 + 2?"), ("assistant", "4."), ("user", "And prove it formally")],
    [("system", "Be brief."), ("user", "Name a colour")],
    [("user", "prove the lemma"), ("assistant", "Which one?"), ("user", "the pumping lemma, prove it")],
]


def test_langchain_and_llamaindex_ledgers_agree():
    pytest.importorskip("langchain_core")
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    from langchain_routellm import LedgerCallbackHandler, RouteLLMChat
    from langchain_routellm.testing import FakeToolChatModel

    lc_types = {"user": HumanMessage, "assistant": AIMessage, "system": SystemMessage}
    lc = RouteLLMChat(strong=FakeToolChatModel(model_name="strong-m"), weak=FakeToolChatModel(model_name="weak-m"),
                      router=KeywordRouter(), threshold=0.5)
    lc_handler = LedgerCallbackHandler(prices=PRICES, strong_model="strong-m")
    li = RouteLLM(strong=UsageMockLLM(name="strong-m"), weak=UsageMockLLM(name="weak-m"),
                  router=KeywordRouter(), threshold=0.5)
    with LedgerHandler(prices=PRICES, strong_model="strong-m") as li_handler:
        for conversation in CONVERSATIONS:
            lc.invoke([lc_types[r](c) for r, c in conversation], config={"callbacks": [lc_handler]})
            li.chat([ChatMessage(role=r, content=c) for r, c in conversation])
    assert li_handler.to_dict() == lc_handler.ledger.to_dict()
    assert li_handler.summary() == lc_handler.ledger.summary()
    assert li_handler.totals()["calls"] == len(CONVERSATIONS)
    assert li_handler.totals()["strong_calls"] == 3


# Controllers through RouteLLM --------------------------------------------------------------
def test_share_controller_thresholds_through_routellm():
    llm = RouteLLM(strong=UsageMockLLM(name="strong-m"), weak=UsageMockLLM(name="weak-m"), router=KeywordRouter(),
                   threshold=0.5, controller=ShareController(0.25, window=20, min_scores=5, max_step=0.2))
    prompts = [("prove " if i % 2 else "") + f"q{i}" for i in range(60)]
    records = [llm.complete(p).additional_kwargs["routellm"] for p in prompts]
    mirror = ShareController(0.25, window=20, min_scores=5, max_step=0.2)
    expected = [mirror.decide(0.9 if "prove" in p else 0.1, 0.5) for p in prompts]
    assert [(r["role"], r["threshold"]) for r in records] == [(c.role.value, c.threshold) for c in expected]


def test_budget_controller_through_routellm_and_the_ledger():
    budget = BudgetController(0.0005, reserve=0.0002, clock=lambda: 0.0)
    llm = RouteLLM(strong=UsageMockLLM(name="strong-m"), weak=UsageMockLLM(name="weak-m"), router=KeywordRouter(),
                   threshold=0.5, controller=budget)
    with LedgerHandler(prices=PRICES, strong_model="strong-m", budget=budget) as handler:
        records = [llm.chat(user(f"Prove claim {i}")).additional_kwargs["routellm"] for i in range(5)]
    assert [(r["role"], r["reason"]) for r in records] == [("strong", "score")] * 2 + [("weak", BUDGET_EXHAUSTED)] * 3
    assert budget.spent == pytest.approx(handler.totals()["by_role"]["strong"]["cost"], abs=1e-15)
    assert budget.spent <= 0.0005


def test_route_neither_counts_nor_reserves_under_a_controller():
    budget = BudgetController(1.0, reserve=0.3, clock=lambda: 0.0)
    llm = RouteLLM(strong=UsageMockLLM(name="strong-m"), weak=UsageMockLLM(name="weak-m"), router=KeywordRouter(),
                   threshold=0.5, controller=budget)
    for _ in range(4):  # no call follows a route(): a budget must not hold back a strong call for it
        assert llm.route("Prove claim 1").role.value == llm.route([ChatMessage(role="user", content="prove")]).role.value \
            == "strong"
    assert budget.remaining == 1.0
    assert llm.chat(user("Prove claim 1")).additional_kwargs["routellm"]["role"] == "strong"
    assert budget.remaining == pytest.approx(0.7, abs=1e-9)  # the real call holds its reserve


def test_preparing_a_tool_call_neither_counts_nor_reserves_under_a_controller(fc_models):
    # Before: each _prepare_chat_with_tools (whose chat(**prepared) decides again) reserved a
    # strong call that was never charged nor released, as route() did.
    from llama_index.core.tools import FunctionTool

    budget = BudgetController(1.0, reserve=0.3, clock=lambda: 0.0)
    llm = RouteLLM(strong=fc_models["strong"], weak=fc_models["weak"], router=KeywordRouter(), threshold=0.5,
                   controller=budget)
    tools = [FunctionTool.from_defaults(fn=lambda a, b: a * b, name="multiply")]
    for _ in range(4):
        llm._prepare_chat_with_tools(tools, user_msg="Prove 6 times 7")
    assert budget.remaining == 1.0
    prepared = llm._prepare_chat_with_tools(tools, user_msg="Prove 6 times 7")
    assert llm.chat(**prepared).additional_kwargs["routellm"]["role"] == "strong"
    assert budget.remaining == pytest.approx(0.7, abs=1e-9)  # the one real call holds its reserve


def test_tool_calls_are_recorded(fc_models):
    from llama_index.core.tools import FunctionTool

    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        return a * b

    for model in fc_models.values():
        model.name = {"strong-fc": "strong-m", "weak-fc": "weak-m"}[model.name]
    llm = RouteLLM(strong=fc_models["strong"], weak=fc_models["weak"], router=KeywordRouter(), threshold=0.5)
    tool = FunctionTool.from_defaults(multiply)
    with LedgerHandler(prices=PRICES, strong_model="strong-m") as handler:
        response = llm.chat_with_tools([tool], user_msg="multiply 3 and 4")
        response.raw = None  # MockFunctionCallingLLM reports no usage: the error is kept, not a zero
        asyncio.run(llm.achat_with_tools([tool], user_msg="prove: multiply 5 and 6"))
    assert len(handler.errors) == 2 and all("reported no token usage" in str(e) for e in handler.errors)
    assert "'weak-m' (weak)" in str(handler.errors[0]) and "'strong-m' (strong)" in str(handler.errors[1])


# A strong stream the caller leaves before its end ----------------------------------------
LEFT_Q = "Please prove that there are infinitely many primes, step by step."


def _budgeted(max_tokens=50):
    budget = BudgetController(1.0, reserve=0.0002, clock=lambda: 0.0)
    strong = UsageMockLLM(name="strong-m", max_tokens=max_tokens)
    llm = RouteLLM(strong=strong, weak=UsageMockLLM(name="weak-m"), router=KeywordRouter(), threshold=0.5,
                   controller=budget)
    return budget, strong, llm


def _bound(model, prompt, completion_tokens, kwargs=None):
    """What the budget charges: the prompt's byte bound and the call's max tokens, at the strong price."""
    return (_token_bounds(model, prompt, kwargs or {})[0] * 10.0 + completion_tokens * 30.0) / 1e6


def test_a_strong_stream_left_after_its_first_chunk_is_charged_its_bound():
    """Before: nothing charged and its reservation held until the period ended."""
    budget, strong, llm = _budgeted()
    with LedgerHandler(prices=PRICES, strong_model="strong-m", budget=budget) as handler:
        stream = llm.stream_chat(user(LEFT_Q))
        assert next(stream).additional_kwargs["routellm"]["role"] == "strong"
        stream.close()
        assert budget.spent == pytest.approx(_bound(strong, user(LEFT_Q), 50), abs=1e-15)
        assert budget.remaining == pytest.approx(1.0 - budget.spent, abs=1e-15)  # no reservation left held
        assert handler.totals()["calls"] == 0  # the ledger prices answers it saw end
        for _ in llm.stream_complete(LEFT_Q, max_tokens=20):  # a break closes it too; the call's max tokens
            break
        assert budget.spent == pytest.approx(_bound(strong, user(LEFT_Q), 50)
                                             + _bound(strong, LEFT_Q, 20, {"max_tokens": 20}), abs=1e-15)
        before = budget.spent
        list(llm.stream_chat(user(LEFT_Q)))  # read to its end: the ledger charges it, once, at its usage
        assert budget.spent - before == pytest.approx(handler.totals()["by_role"]["strong"]["cost"], abs=1e-15)
        assert handler.totals()["by_role"]["strong"]["cost"] < _bound(strong, user(LEFT_Q), 50)
        assert budget.remaining == pytest.approx(1.0 - budget.spent, abs=1e-15)


def test_a_stream_left_at_its_usage_chunk_is_charged_that_usage():
    budget, _, llm = _budgeted()
    with LedgerHandler(prices=PRICES, strong_model="strong-m", budget=budget) as handler:
        stream = llm.stream_chat(user(LEFT_Q))
        chunk = next(stream)
        while response_usage(chunk) == (None, None):
            chunk = next(stream)
        stream.close()
        n_in, n_out = response_usage(chunk)
        assert budget.spent == pytest.approx((n_in * 10.0 + n_out * 30.0) / 1e6, abs=1e-15)
        assert handler.totals()["calls"] == 0


def test_an_async_stream_left_is_charged_at_once():
    budget, strong, llm = _budgeted()

    async def leave():
        stream = await llm.astream_chat(user(LEFT_Q))
        async for _ in stream:
            break
        await stream.aclose()
        return budget.spent, budget.remaining

    with LedgerHandler(prices=PRICES, strong_model="strong-m", budget=budget):
        spent, remaining = asyncio.run(leave())
    assert spent == pytest.approx(_bound(strong, user(LEFT_Q), 50), abs=1e-15)
    assert remaining == pytest.approx(1.0 - spent, abs=1e-15)


def test_without_max_tokens_a_left_stream_is_charged_the_reserve_and_without_a_ledger_held(caplog):
    budget, _, llm = _budgeted(max_tokens=None)
    with LedgerHandler(prices=PRICES, strong_model="strong-m", budget=budget):
        with caplog.at_level("WARNING", logger="shared_core.controller"):
            for _ in llm.stream_chat(user(LEFT_Q)):
                break
    assert budget.spent == pytest.approx(0.0002, abs=1e-15)  # the reserve: at least one strong call's cost
    assert budget.remaining == pytest.approx(1.0 - 0.0002, abs=1e-15)
    assert "no bound on its tokens" in caplog.text
    budget, _, llm = _budgeted()  # a bound, but no ledger gave the budget its prices: nothing to charge by
    for _ in llm.stream_chat(user(LEFT_Q)):
        break
    assert budget.spent == 0.0 and budget.remaining == pytest.approx(1.0 - 0.0002, abs=1e-15)


def test_token_bounds_of_a_llamaindex_call():
    model = UsageMockLLM(name="strong-m", max_tokens=77)
    text = "Prove that sqrt(2) is irrational. " * 20
    prompt, completion = _token_bounds(model, user(text), {})
    assert completion == 77
    assert len(text.encode()) + 72 < prompt < len(text.encode()) + 400
    assert _token_bounds(model, user(text), {"max_tokens": 5})[1] == 5
    assert _token_bounds(model, user(text), {"n": 2})[1] == 154
    assert _token_bounds(UsageMockLLM(name="m"), user(text), {}) is None  # no max tokens: no bound
    from llama_index.core.base.llms.types import ImageBlock, TextBlock

    image = [ChatMessage(role="user", blocks=[TextBlock(text="What is this?"), ImageBlock(url="http://x/a.png")])]
    assert _token_bounds(model, image, {}) is None
    from llama_index.core.tools import FunctionTool

    from llamaindex_routellm.llm import _tools_bound

    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    with_tools = _tools_bound([FunctionTool.from_defaults(get_weather)], {"user_msg": text, "chat_history": None})
    assert with_tools(model)[0] > prompt and with_tools(model)[1] == 77  # the tools' schemas are sent too


def test_a_query_engine_stream_left_is_charged_its_templates_bound():
    """A streaming RAG answer (``llm.stream(template, ...)``, as a query engine calls it) left early."""
    from llama_index.core.prompts import PromptTemplate

    budget, strong, llm = _budgeted()
    template = PromptTemplate("Context: {context_str}\nQuestion: {query_str}\nAnswer: ")
    args = {"context_str": "Euclid's proof. " * 10, "query_str": LEFT_Q}
    with LedgerHandler(prices=PRICES, strong_model="strong-m", budget=budget):
        for _ in llm.stream(template, **args):
            break
    assert budget.spent == pytest.approx(_bound(strong, template.format(**args), 50), abs=1e-15)
    assert budget.remaining == pytest.approx(1.0 - budget.spent, abs=1e-15)
