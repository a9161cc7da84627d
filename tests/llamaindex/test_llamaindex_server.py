"""A real model through a real provider class: SmolLM2-135M-Instruct served by
llama-cpp-python's OpenAI-compatible server, reached with llama-index-llms-openai-like,
as the strong and the weak model of a RAG query engine.

Needs ``ROUTELLM_TEST_SERVER_URL`` (e.g. http://127.0.0.1:8765/v1); scripts/test.sh
starts the server and sets it.
"""

from __future__ import annotations

import asyncio
import os

import pytest

pytestmark = pytest.mark.server

URL = os.environ.get("ROUTELLM_TEST_SERVER_URL")
if not URL:
    pytest.skip(
        "ROUTELLM_TEST_SERVER_URL is not set; start the local SmolLM2 server "
        "(scripts/llama_server.sh start) and export its /v1 URL",
        allow_module_level=True,
    )
openai_like = pytest.importorskip("llama_index.llms.openai_like")

from llama_index.core import Document, VectorStoreIndex  # noqa: E402
from llama_index.core.base.llms.types import ChatMessage  # noqa: E402

from li_support import HARD, KeywordRouter  # noqa: E402
from llamaindex_routellm import DECISION_KEY, LocalEmbedding, RouteLLM  # noqa: E402
from shared_core.embeddings import HashEmbedder  # noqa: E402


def _smollm(name: str, max_tokens: int):
    # One server, two names: the model name only labels the calls in events.
    return openai_like.OpenAILike(
        model=name, api_base=URL, api_key="unused", is_chat_model=True,
        context_window=2048, max_tokens=max_tokens, temperature=0.0, max_retries=0, timeout=120,
    )


@pytest.fixture(scope="module")
def llm():
    return RouteLLM(strong=_smollm("smollm2-as-strong", 24), weak=_smollm("smollm2-as-weak", 16),
                    router=KeywordRouter(), threshold=0.5)


PRICES = {"smollm2-as-strong": (10.0, 30.0), "smollm2-as-weak": (1.0, 2.0)}


def test_query_engine_over_the_real_server(llm, events):
    """A real query engine's answers, routed on the question, and in the savings ledger with
    the usage the server reported (its streams report none: kept as an error, not a zero)."""
    from llamaindex_routellm import LedgerHandler
    from shared_core.ledger import UsageError

    docs = [
        Document(text=f"The library opens at 9 am. Students {HARD} theorems in room 4."),
        Document(text="The cafeteria serves soup on Mondays."),
    ]
    index = VectorStoreIndex.from_documents(docs, embed_model=LocalEmbedding(HashEmbedder(dim=64)))
    engine = index.as_query_engine(llm=llm, similarity_top_k=2)

    with LedgerHandler(prices=PRICES, strong_model="smollm2-as-strong") as ledger:
        answer = engine.query("When does the library open?")
        assert str(answer).strip()
        assert "Context information" not in str(answer)  # a real answer, not an echo of the prompt
        assert set(events.models()) == {"smollm2-as-weak"}
        assert llm.last_decision.role.value == "weak"
        assert events.counts()["LLMChatEndEvent"] == 1
        assert str(asyncio.run(engine.aquery("When does the cafeteria serve soup?"))).strip()
    # Both calls are in the ledger, each with the usage of the server's own ChatCompletion.
    usages = [e.response.raw.usage for e in events.events if e.class_name() == "LLMChatEndEvent"]
    calls = ledger.ledger.calls
    assert len(calls) == len(usages) == 2
    for call, usage in zip(calls, usages):
        assert (call.role, call.model) == ("weak", "smollm2-as-weak")
        assert (call.input_tokens, call.output_tokens) == (usage.prompt_tokens, usage.completion_tokens)
        assert call.input_tokens > 20 and 0 < call.output_tokens <= 16  # the stuffed prompt; max_tokens=16
        assert call.cost == pytest.approx((call.input_tokens * 1.0 + call.output_tokens * 2.0) / 1e6, abs=1e-15)
    assert ledger.errors == []

    events.clear()
    stream_engine = index.as_query_engine(llm=llm, similarity_top_k=2, streaming=True)
    with LedgerHandler(prices=PRICES, strong_model="smollm2-as-strong") as stream_ledger:
        text = "".join(stream_engine.query(f"How do students {HARD} theorems?").response_gen)
    assert text.strip()
    assert set(events.models()) == {"smollm2-as-strong"}
    assert stream_ledger.ledger.calls == []  # llama-cpp-python's server sends no usage in a stream
    with pytest.raises(UsageError, match="'smollm2-as-strong' \\(strong\\) reported no token usage"):
        stream_ledger.check()


def test_chat_records_the_decision_with_a_real_response(llm, events):
    response = llm.chat([ChatMessage(role="user", content="Say hello.")])
    assert response.message.content.strip()
    assert response.raw is not None  # the OpenAI client's own response object came through
    assert response.additional_kwargs[DECISION_KEY]["model"] == "smollm2-as-weak"
    assert set(events.models()) == {"smollm2-as-weak"}


def test_a_real_rejected_answer_is_priced_when_the_strong_model_is_unreachable():
    """The real weak model answers, a check rejects it, the strong model's address refuses
    connections (the openai client's real error): the call raises, and the ledger prices
    the rejected answer from the usage the server reported."""
    import socket

    import openai

    from llamaindex_routellm import LedgerHandler

    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = openai_like.OpenAILike(model="strong-down", api_base=f"http://127.0.0.1:{port}/v1", api_key="unused",
                                  is_chat_model=True, context_window=2048, max_retries=0, timeout=10)
    llm = RouteLLM(strong=down, weak=_smollm("smollm2-as-weak", 16), router=KeywordRouter(), threshold=0.5,
                   escalate_on=[lambda view: "every answer is rejected here"])
    with LedgerHandler(prices={"strong-down": (10.0, 30.0), "smollm2-as-weak": (1.0, 2.0)},
                       strong_model="strong-down") as ledger:
        with pytest.raises(openai.APIConnectionError):
            llm.chat([ChatMessage(role="user", content="Say hello in one short sentence.")])
    [lost] = ledger.ledger.unanswered
    assert lost.rejected == ("smollm2-as-weak",) and lost.input_tokens > 0 and lost.output_tokens > 0
    assert lost.cost == pytest.approx((lost.input_tokens * 1.0 + lost.output_tokens * 2.0) / 1e6, abs=1e-15)
    assert ledger.ledger.calls == []
