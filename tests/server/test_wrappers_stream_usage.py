"""Both wrappers ask a chosen OpenAI-style model for a stream's usage, so that a ledger prices
the stream and a budget is charged it. Real clients (LangChain's ChatOpenAI, LlamaIndex's
OpenAILike) over real HTTP to the stand-in upstreams, which stream usage as OpenAI does: only
when asked. ChatOpenAI asks by default only from OpenAI's own endpoint; OpenAILike never."""

from __future__ import annotations

import asyncio

import httpx
import pytest

langchain_openai = pytest.importorskip("langchain_openai")
openai_like = pytest.importorskip("llama_index.llms.openai_like")

from llama_index.core import Document, VectorStoreIndex  # noqa: E402
from llama_index.core.llms import ChatMessage  # noqa: E402

from server_support import KeywordRouter  # noqa: E402
from langchain_routellm import LedgerCallbackHandler, RouteLLMChat, RouteLLMRunnable  # noqa: E402
from llamaindex_routellm import LedgerHandler, LocalEmbedding, RouteLLM  # noqa: E402
from shared_core.controller import BudgetController  # noqa: E402
from shared_core.routers import Role  # noqa: E402
from shared_core.embeddings import HashEmbedder  # noqa: E402
from shared_core.ledger import UsageError  # noqa: E402

PRICES = {"strong-model": [10.0, 30.0], "weak-model": [0.5, 1.5]}
HARD_Q = "Please prove that there are infinitely many primes."
#: A stand-in stream: 5 prompt tokens, one completion token a word (5 words).
STRONG_STREAM = (5 * 10.0 + 5 * 30.0) / 1e6


@pytest.fixture(autouse=True)
def _as_openai(strong, weak):
    strong.stream_usage = weak.stream_usage = "openai"


def _budget():
    return BudgetController(1.0, period=3600, reserve=0.001)


# LangChain -----------------------------------------------------------------------------
def _lc_routed(strong, weak, **model):
    budget = _budget()
    ledger = LedgerCallbackHandler(prices=PRICES, strong_model="strong-model", budget=budget)
    make = lambda upstream, name: langchain_openai.ChatOpenAI(  # noqa: E731
        model=name, base_url=upstream.url, api_key="unused", max_retries=0, **model)
    llm = RouteLLMChat(strong=make(strong, "strong-model"), weak=make(weak, "weak-model"), router=KeywordRouter(),
                       threshold=0.5, controller=budget, callbacks=[ledger])
    return llm, ledger, budget


def _added(chunks):
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    return total


@pytest.mark.parametrize("api", ["stream", "astream"])
def test_a_stream_from_chat_openai_is_priced_and_charged(strong, weak, api):
    llm, ledger, budget = _lc_routed(strong, weak)
    assert llm.strong.stream_usage is None  # off for an endpoint other than OpenAI's

    if api == "stream":
        chunks = list(llm.stream(HARD_Q))
    else:
        async def run():
            return [c async for c in llm.astream(HARD_Q)]
        chunks = asyncio.run(run())

    answer = _added(chunks)
    assert answer.response_metadata["routellm"]["role"] == "strong"
    assert answer.usage_metadata["input_tokens"] == 5 and answer.usage_metadata["output_tokens"] == 5
    assert strong.requests[-1]["stream_options"] == {"include_usage": True}
    assert len(ledger.ledger.calls) == 1
    # Before: the stream raised UsageError at its end, nothing was charged, the reservation stayed held.
    assert budget.spent == pytest.approx(STRONG_STREAM, rel=1e-9)
    assert budget.remaining == pytest.approx(1.0 - STRONG_STREAM, rel=1e-9)


def test_a_chat_openai_that_says_no_is_not_asked(strong, weak):
    llm, ledger, budget = _lc_routed(strong, weak, stream_usage=False)
    with pytest.raises(UsageError, match="no token usage"):
        list(llm.stream(HARD_Q))
    assert "stream_options" not in strong.requests[-1]
    assert budget.spent == pytest.approx(budget.reserve, abs=1e-15)  # an unknown cost: the reserve, never zero


def test_a_langchain_call_that_says_is_left_as_it_is(strong, weak):
    llm, ledger, budget = _lc_routed(strong, weak)
    with pytest.raises(UsageError, match="no token usage"):
        list(llm.stream(HARD_Q, stream_usage=False))
    assert "stream_options" not in strong.requests[-1]
    list(llm.stream(HARD_Q, stream_options={"include_usage": True}))
    assert strong.requests[-1]["stream_options"] == {"include_usage": True}
    # the first, without usage, an unknown cost: the reserve; the second its usage
    assert budget.spent == pytest.approx(budget.reserve + STRONG_STREAM, rel=1e-9)


def test_a_runnable_over_chat_openai_asks_for_the_stream_usage(strong, weak):
    make = lambda upstream, name, **model: langchain_openai.ChatOpenAI(  # noqa: E731
        model=name, base_url=upstream.url, api_key="unused", max_retries=0, **model)
    runnable = RouteLLMRunnable(strong=make(strong, "strong-model"), weak=make(weak, "weak-model"),
                                router=KeywordRouter(), threshold=0.5)
    answer = _added(list(runnable.stream(HARD_Q)))
    assert strong.requests[-1]["stream_options"] == {"include_usage": True}
    assert answer.usage_metadata["input_tokens"] == 5 and answer.usage_metadata["output_tokens"] == 5
    # A model that answers a stream call whole (streaming off) takes no such keyword.
    whole = RouteLLMRunnable(strong=make(strong, "strong-model", disable_streaming=True),
                             weak=make(weak, "weak-model"), router=KeywordRouter(), threshold=0.5)
    assert _added(list(whole.stream(HARD_Q))).usage_metadata["output_tokens"] == 3
    assert not strong.requests[-1].get("stream") and "stream_usage" not in strong.requests[-1]


@pytest.mark.parametrize("wrapper", ["chat", "runnable"])
@pytest.mark.parametrize("api", ["stream", "astream"])
def test_an_endpoint_that_refuses_stream_options_gets_the_stream_as_asked(strong, weak, wrapper, api):
    # A strict OpenAI-compatible server answers HTTP 400 to the field: the stream is made again
    # without it, and that model is not asked again (before: every stream to it failed).
    strong.refuse_stream_options = True
    # Each model its own async client: langchain-openai shares one per base URL, and its pooled
    # connections belong to the event loop of an earlier test.
    make = lambda upstream, name: langchain_openai.ChatOpenAI(  # noqa: E731
        model=name, base_url=upstream.url, api_key="unused", max_retries=0, http_async_client=httpx.AsyncClient())
    cls = RouteLLMChat if wrapper == "chat" else RouteLLMRunnable
    llm = cls(strong=make(strong, "strong-model"), weak=make(weak, "weak-model"), router=KeywordRouter(), threshold=0.5)

    async def words():
        if api == "stream":
            return "".join(c.content for c in llm.stream(HARD_Q))
        return "".join([c.content async for c in llm.astream(HARD_Q)])

    async def run():  # one event loop: the model's async client belongs to it
        assert await words() == "Hello from the stand-in."
        assert [("stream_options" in r) for r in strong.requests] == [True, False]
        assert await words() == "Hello from the stand-in."
        assert [("stream_options" in r) for r in strong.requests] == [True, False, False]
        # Another bad request is not made again.
        strong.refuse_stream_options, strong.mode, strong.status = False, "error", 400
        strong.error_body = {"error": {"message": "max_tokens is too large", "type": "invalid_request_error"}}
        with pytest.raises(Exception, match="max_tokens is too large") as raised:
            await words()
        assert getattr(raised.value, "status_code", None) == 400
        assert len(strong.requests) == 4

    asyncio.run(run())

# LlamaIndex ----------------------------------------------------------------------------
def _li_routed(strong, weak, **model):
    budget = _budget()
    make = lambda upstream, name: openai_like.OpenAILike(  # noqa: E731
        model=name, api_base=upstream.url, api_key="unused", is_chat_model=True, max_retries=0, **model)
    llm = RouteLLM(strong=make(strong, "strong-model"), weak=make(weak, "weak-model"), router=KeywordRouter(),
                   threshold=0.5, controller=budget)
    return llm, budget


@pytest.mark.parametrize("api", ["stream_chat", "stream_complete", "query_engine"])
def test_a_stream_from_openai_like_is_priced_and_charged(strong, weak, api):
    llm, budget = _li_routed(strong, weak)
    with LedgerHandler(prices=PRICES, strong_model="strong-model", budget=budget) as ledger:
        if api == "stream_chat":
            list(llm.stream_chat([ChatMessage(role="user", content=HARD_Q)]))
        elif api == "stream_complete":
            list(llm.stream_complete(HARD_Q))
        else:  # predict's stream: a plain-text stream, routed on the question
            index = VectorStoreIndex.from_documents([Document(text="Euclid's proof.")],
                                                    embed_model=LocalEmbedding(HashEmbedder(dim=16)))
            response = index.as_query_engine(llm=llm, streaming=True).query(HARD_Q)
            "".join(response.response_gen)
        assert strong.requests[-1]["stream_options"] == {"include_usage": True}
        # Before: the stream had no usage, ledger reads raised UsageError, the budget was not charged.
        assert ledger.summary().startswith("1 calls, 1 strong")
    assert budget.spent == pytest.approx(STRONG_STREAM, rel=1e-9)
    assert budget.remaining == pytest.approx(1.0 - STRONG_STREAM, rel=1e-9)
    assert "stream_options" not in llm.strong.additional_kwargs  # your model is not changed


def test_an_openai_like_that_sets_stream_options_is_left_as_it_is(strong, weak):
    llm, budget = _li_routed(strong, weak, additional_kwargs={"stream_options": {"include_usage": False}})
    with LedgerHandler(prices=PRICES, strong_model="strong-model", budget=budget) as ledger:
        list(llm.stream_chat([ChatMessage(role="user", content=HARD_Q)]))
        assert strong.requests[-1]["stream_options"] == {"include_usage": False}
        with pytest.raises(UsageError, match="no token usage"):
            ledger.summary()


def test_an_openai_like_call_without_streaming_sends_no_stream_options(strong, weak):
    llm, budget = _li_routed(strong, weak)
    with LedgerHandler(prices=PRICES, strong_model="strong-model", budget=budget) as ledger:
        llm.chat([ChatMessage(role="user", content=HARD_Q)])
        assert "stream_options" not in strong.requests[-1]
        assert ledger.summary().startswith("1 calls, 1 strong")


def test_an_openai_like_copy_and_its_client_serve_every_call_while_nothing_changes(strong, weak, monkeypatch):
    import copy
    import pickle

    import llama_index.llms.openai.base as openai_base

    made = []

    class Counted(openai_base.SyncOpenAI):
        def __init__(self, *args, **kwargs):
            made.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(openai_base, "SyncOpenAI", Counted)
    llm, budget = _li_routed(strong, weak)
    for _ in range(3):
        list(llm.stream_chat([ChatMessage(role="user", content=HARD_Q)]))
        llm.chat([ChatMessage(role="user", content=HARD_Q)])
    # One SDK client (one connection pool) for the six calls; before, the copy made for each
    # call made its own client.
    assert len(made) == 1
    used = llm._model(Role.STRONG)
    assert used is not llm.strong and used._client is made[0]

    llm.strong.temperature = 0.25  # a change to your model: a new copy, with it
    assert llm._model(Role.STRONG).temperature == 0.25
    llm.strong.additional_kwargs["user"] = "me"  # also a change made in place
    assert llm._model(Role.STRONG).additional_kwargs == {"user": "me", "stream_options": {"include_usage": True}}
    assert llm.strong.additional_kwargs == {"user": "me"}  # yours is not changed

    # Copies and pickles of the router do not take the copies (they hold SDK clients).
    assert copy.deepcopy(llm)._copies == {} and pickle.loads(pickle.dumps(llm))._copies == {}
    assert llm._copies


@pytest.mark.parametrize("api", ["stream_chat", "stream_complete", "astream_chat", "query_engine"])
def test_an_openai_like_endpoint_that_refuses_stream_options_gets_the_stream_as_asked(strong, weak, api):
    # A strict OpenAI-compatible server answers HTTP 400 to the field: the stream is made again
    # without it, and that model is not asked again (before: every stream to it failed).
    import asyncio

    strong.refuse_stream_options = True
    llm, budget = _li_routed(strong, weak)
    index = VectorStoreIndex.from_documents([Document(text="Euclid's proof.")],
                                            embed_model=LocalEmbedding(HashEmbedder(dim=16)))

    def text():
        if api == "stream_chat":
            return "".join(r.delta for r in llm.stream_chat([ChatMessage(role="user", content=HARD_Q)]))
        if api == "stream_complete":
            return "".join(r.delta for r in llm.stream_complete(HARD_Q))
        if api == "query_engine":
            return "".join(index.as_query_engine(llm=llm, streaming=True).query(HARD_Q).response_gen)

        async def run():
            return "".join([r.delta async for r in await llm.astream_chat([ChatMessage(role="user", content=HARD_Q)])])
        return asyncio.run(run())

    assert text() == "Hello from the stand-in."
    assert [("stream_options" in r) for r in strong.requests] == [True, False]
    assert text() == "Hello from the stand-in."
    assert [("stream_options" in r) for r in strong.requests] == [True, False, False]
    assert "stream_options" not in llm._model(Role.STRONG).additional_kwargs


def test_an_openai_like_that_refuses_stream_options_when_called_gets_the_stream_as_asked(strong, weak):
    # Some LLMs make the request when the stream is called, not at its first chunk.
    from llama_index.core.llms import ChatResponse

    class Refused(Exception):
        status_code = 400

    class Eager(openai_like.OpenAILike):
        def stream_chat(self, messages, **kwargs):
            if "stream_options" in self.additional_kwargs:
                raise Refused("Unrecognized request argument supplied: stream_options")
            return iter([ChatResponse(message=ChatMessage(role="assistant", content="ok"), delta="ok")])

    llm = RouteLLM(strong=Eager(model="strong-model", api_base=strong.url, api_key="unused", is_chat_model=True),
                   weak=Eager(model="weak-model", api_base=weak.url, api_key="unused", is_chat_model=True),
                   router=KeywordRouter(), threshold=0.5)
    for _ in range(2):
        assert [r.delta for r in llm.stream_chat([ChatMessage(role="user", content=HARD_Q)])] == ["ok"]
    assert "stream_options" not in llm._model(Role.STRONG).additional_kwargs
    # stream_options the model sets itself are not dropped: its endpoint's refusal is the caller's to see.
    llm.strong.additional_kwargs = {"stream_options": {"include_usage": True}}
    with pytest.raises(Refused):
        list(llm.stream_chat([ChatMessage(role="user", content=HARD_Q)]))
