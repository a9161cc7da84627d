"""RouteLLMChat streams from the official ChatOpenAI (real HTTP, the stand-in upstreams, which
stream usage as OpenAI does: only when asked) and asks it for the stream's usage, so that a
ledger prices the stream and a budget is charged it; ChatOpenAI asks for it by default only
from OpenAI's own endpoint."""

from __future__ import annotations

import asyncio

import pytest

langchain_openai = pytest.importorskip("langchain_openai")

from server_support import KeywordRouter  # noqa: E402
from langchain_routellm import LedgerCallbackHandler, RouteLLMChat  # noqa: E402
from shared_core.controller import BudgetController  # noqa: E402
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
    llm, ledger, budget = _routed(strong, weak)
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


def test_a_model_that_says_no_is_not_asked(strong, weak):
    llm, ledger, budget = _routed(strong, weak, stream_usage=False)
    with pytest.raises(UsageError, match="no token usage"):
        list(llm.stream(HARD_Q))
    assert "stream_options" not in strong.requests[-1]
    assert budget.spent == 0.0


def test_a_call_that_asks_itself_is_left_as_it_is(strong, weak):
    llm, ledger, budget = _routed(strong, weak)
    with pytest.raises(UsageError, match="no token usage"):
        list(llm.stream(HARD_Q, stream_usage=False))
    assert "stream_options" not in strong.requests[-1]
    list(llm.stream(HARD_Q, stream_options={"include_usage": True}))
    assert strong.requests[-1]["stream_options"] == {"include_usage": True}
    assert budget.spent == pytest.approx(STRONG_STREAM, rel=1e-9)
