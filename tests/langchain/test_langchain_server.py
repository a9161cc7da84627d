"""A real model through a real provider class: SmolLM2-135M-Instruct served by
llama-cpp-python's OpenAI-compatible server, reached with langchain-openai's
ChatOpenAI, as the strong and the weak model of RouteLLMChat.

Needs ``ROUTELLM_TEST_SERVER_URL`` (e.g. http://127.0.0.1:8765/v1);
scripts/test.sh starts the server (scripts/llama_server.sh) and sets it.

The server reports token usage on non-streaming calls only (llama-cpp-python
0.3 sends no usage chunk when streaming), so the streaming tests check that the
wrapper reports exactly what the provider class reports when called directly.
"""

from __future__ import annotations

import asyncio
import os

import httpx

import pytest

pytestmark = pytest.mark.server

URL = os.environ.get("ROUTELLM_TEST_SERVER_URL")
if not URL:
    pytest.skip(
        "ROUTELLM_TEST_SERVER_URL is not set; start the local SmolLM2 server "
        "(scripts/llama_server.sh start) and export its /v1 URL",
        allow_module_level=True,
    )
langchain_openai = pytest.importorskip("langchain_openai")

from langchain_core.callbacks import get_usage_metadata_callback  # noqa: E402
from langchain_core.output_parsers import StrOutputParser  # noqa: E402
from langchain_core.prompts import ChatPromptTemplate  # noqa: E402

from lc_support import HARD, KeywordRouter, Recorder, merge_chunks  # noqa: E402
from langchain_routellm import DECISION_KEY, RouteLLMChat  # noqa: E402

EASY = "Say hello in one short sentence."
HARD_Q = f"In one sentence, {HARD} that 2 + 2 = 4."


def _smollm(name: str) -> "langchain_openai.ChatOpenAI":
    # One server, two names: the server echoes the requested name, so usage and
    # tracing tell the two roles apart. max_tokens goes in the body because the
    # server ignores OpenAI's newer max_completion_tokens. Each test gets its own
    # async HTTP client: each asyncio.run() below has its own event loop, and
    # langchain-openai otherwise shares one client across them.
    return langchain_openai.ChatOpenAI(
        model=name, base_url=URL, api_key="unused", temperature=0.0, max_retries=0, timeout=120,
        extra_body={"max_tokens": 16}, http_async_client=httpx.AsyncClient(timeout=120),
    )


@pytest.fixture
def llm():
    return RouteLLMChat(strong=_smollm("smollm2-as-strong"), weak=_smollm("smollm2-as-weak"),
                        router=KeywordRouter(), threshold=0.5)


def _check_usage_once(usage_cb, message, model):
    assert message.usage_metadata is not None and message.usage_metadata["input_tokens"] > 0
    assert usage_cb.usage_metadata == {model: message.usage_metadata}


def test_invoke(llm):
    recorder = Recorder()
    with get_usage_metadata_callback() as usage:
        message = llm.invoke(EASY, {"callbacks": [recorder]})
    assert message.text.strip()
    assert message.response_metadata["model_name"] == "smollm2-as-weak"  # the server's own metadata
    assert message.response_metadata[DECISION_KEY]["role"] == "weak"
    _check_usage_once(usage, message, "smollm2-as-weak")
    assert recorder.starts == 1 and len(recorder.ends) == 1


def test_ainvoke(llm):
    with get_usage_metadata_callback() as usage:
        message = asyncio.run(llm.ainvoke(HARD_Q))
    assert message.text.strip()
    assert message.response_metadata[DECISION_KEY]["model"] == "smollm2-as-strong"
    _check_usage_once(usage, message, "smollm2-as-strong")


def test_stream(llm):
    direct = merge_chunks(list(llm.weak.stream(EASY)))
    recorder = Recorder()
    with get_usage_metadata_callback() as usage:
        chunks = list(llm.stream(EASY, {"callbacks": [recorder]}))
    full = merge_chunks(chunks)
    assert len(chunks) > 2 and full.text.strip()
    assert chunks[0].response_metadata[DECISION_KEY]["role"] == "weak"
    assert "".join(recorder.tokens) == full.text
    assert full.usage_metadata == direct.usage_metadata  # what the provider reports, no more
    assert usage.usage_metadata == ({"smollm2-as-weak": full.usage_metadata} if full.usage_metadata else {})


def test_astream(llm):
    async def collect():
        return [c async for c in llm.astream(HARD_Q)]

    with get_usage_metadata_callback() as usage:
        chunks = asyncio.run(collect())
    full = merge_chunks(chunks)
    assert len(chunks) > 2 and full.text.strip()
    assert full.response_metadata[DECISION_KEY]["role"] == "strong"
    assert usage.usage_metadata == ({"smollm2-as-strong": full.usage_metadata} if full.usage_metadata else {})


@pytest.mark.parametrize("entry", ["batch", "abatch"])
def test_batch(llm, entry):
    with get_usage_metadata_callback() as usage:
        if entry == "batch":
            messages = llm.batch([EASY, HARD_Q])
        else:
            messages = asyncio.run(llm.abatch([EASY, HARD_Q]))
    assert [m.response_metadata[DECISION_KEY]["role"] for m in messages] == ["weak", "strong"]
    assert all(m.text.strip() for m in messages)
    assert usage.usage_metadata == {
        "smollm2-as-weak": messages[0].usage_metadata,
        "smollm2-as-strong": messages[1].usage_metadata,
    }


def test_lcel_chain(llm):
    chain = ChatPromptTemplate.from_messages([("system", "Answer briefly."), ("human", "{q}")]) | llm | StrOutputParser()
    assert chain.invoke({"q": "What colour is the sky?"}).strip()


def test_a_real_rejected_answer_is_priced_when_the_strong_model_is_unreachable():
    """The real weak model answers, a check rejects the answer, and the strong model's
    address refuses connections (the openai client's real error): the call raises it,
    and the ledger prices the rejected answer from the usage the server reported."""
    import socket

    import openai

    from langchain_routellm import LedgerCallbackHandler

    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = langchain_openai.ChatOpenAI(model="strong-down", base_url=f"http://127.0.0.1:{port}/v1", api_key="unused",
                                       max_retries=0, timeout=10)
    llm = RouteLLMChat(strong=down, weak=_smollm("smollm2-as-weak"), router=KeywordRouter(), threshold=0.5,
                       escalate_on=[lambda view: "every answer is rejected here"])
    handler = LedgerCallbackHandler(prices={"strong-down": (10.0, 30.0), "smollm2-as-weak": (1.0, 2.0)},
                                    strong_model="strong-down")
    with get_usage_metadata_callback() as usage_cb, pytest.raises(openai.APIConnectionError):
        llm.invoke(EASY, config={"callbacks": [handler]})
    [(model, usage)] = usage_cb.usage_metadata.items()
    assert model.startswith("smollm2-as-weak") and usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    [lost] = handler.ledger.unanswered
    assert (lost.input_tokens, lost.output_tokens) == (usage["input_tokens"], usage["output_tokens"])
    assert lost.cost == pytest.approx((usage["input_tokens"] * 1.0 + usage["output_tokens"] * 2.0) / 1e6, abs=1e-15)
    assert handler.ledger.calls == []
