"""RouteLLM streams from LlamaIndex's OpenAILike (real HTTP, the stand-in upstreams, which
stream usage as OpenAI does: only when asked) with ``stream_options.include_usage`` in the
chosen model's ``additional_kwargs``, so that a LedgerHandler prices the stream and a budget
is charged it; without it OpenAILike streams carry no usage."""

from __future__ import annotations

import pytest

openai_like = pytest.importorskip("llama_index.llms.openai_like")

from llama_index.core import Document, VectorStoreIndex  # noqa: E402
from llama_index.core.llms import ChatMessage  # noqa: E402

from server_support import KeywordRouter  # noqa: E402
from llamaindex_routellm import LedgerHandler, LocalEmbedding, RouteLLM  # noqa: E402
from shared_core.controller import BudgetController  # noqa: E402
from shared_core.embeddings import HashEmbedder  # noqa: E402
from shared_core.ledger import UsageError  # noqa: E402

PRICES = {"strong-model": [10.0, 30.0], "weak-model": [0.5, 1.5]}
HARD_Q = "Please prove that there are infinitely many primes."
#: A stand-in stream: 5 prompt tokens, one completion token a word (5 words).
STRONG_STREAM = (5 * 10.0 + 5 * 30.0) / 1e6


@pytest.fixture(autouse=True)
def _as_openai(strong, weak):
    strong.stream_usage = weak.stream_usage = "openai"


def _routed(strong, weak, **model):
    budget = BudgetController(1.0, period=3600, reserve=0.001)
    make = lambda upstream, name: openai_like.OpenAILike(  # noqa: E731
        model=name, api_base=upstream.url, api_key="unused", is_chat_model=True, max_retries=0, **model)
    llm = RouteLLM(strong=make(strong, "strong-model"), weak=make(weak, "weak-model"), router=KeywordRouter(),
                   threshold=0.5, controller=budget)
    return llm, budget


@pytest.mark.parametrize("api", ["stream_chat", "stream_complete", "query_engine"])
def test_a_stream_from_openai_like_is_priced_and_charged(strong, weak, api):
    llm, budget = _routed(strong, weak)
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


def test_a_model_that_sets_stream_options_is_left_as_it_is(strong, weak):
    llm, budget = _routed(strong, weak, additional_kwargs={"stream_options": {"include_usage": False}})
    with LedgerHandler(prices=PRICES, strong_model="strong-model", budget=budget) as ledger:
        list(llm.stream_chat([ChatMessage(role="user", content=HARD_Q)]))
        assert strong.requests[-1]["stream_options"] == {"include_usage": False}
        with pytest.raises(UsageError, match="no token usage"):
            ledger.summary()


def test_a_call_without_streaming_sends_no_stream_options(strong, weak):
    llm, budget = _routed(strong, weak)
    with LedgerHandler(prices=PRICES, strong_model="strong-model", budget=budget) as ledger:
        llm.chat([ChatMessage(role="user", content=HARD_Q)])
        assert "stream_options" not in strong.requests[-1]
        assert ledger.summary().startswith("1 calls, 1 strong")
