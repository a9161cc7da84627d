"""The Responses API through the routing server with a real model behind it: SmolLM2-135M-Instruct
under llama.cpp's own ``llama-server`` (``/v1/responses``; llama-cpp-python's server has none) as
both upstreams, real HTTP on 127.0.0.1, the official ``openai`` client and LangChain's
``ChatOpenAI(use_responses_api=True)`` in front.

Needs ``ROUTELLM_TEST_RESPONSES_URL`` (e.g. http://127.0.0.1:8766/v1), which scripts/test.sh
sets after starting ``scripts/llama_server.sh start PORT cpp`` (``scripts/build_llama_server.sh``,
run by the install command, builds llama-server).
"""

from __future__ import annotations

import time

import pytest

from server_support import KeywordRouter, ServerThread, metric, real_server_url
from shared_core.engine import RoutingEngine
from shared_core.server.app import create_app
from shared_core.server.config import load_config
from shared_core.server.responses import response_token_bounds

pytestmark = pytest.mark.server
URL = real_server_url("ROUTELLM_TEST_RESPONSES_URL", "start llama.cpp's llama-server with SmolLM2 "
                      "(scripts/build_llama_server.sh, then scripts/llama_server.sh start 8766 cpp)")
openai = pytest.importorskip("openai")

EASY = "Say hello in one short sentence."
HARD_Q = "In one sentence, prove that 2 + 2 = 4."
PRICES = {"smollm2-as-strong": [10.0, 30.0], "smollm2-as-weak": [0.5, 1.5]}


def serve(**settings):
    config = load_config({"strong_base_url": URL, "strong_model": "smollm2-as-strong", "weak_base_url": URL,
                          "weak_model": "smollm2-as-weak", "upstream_timeout": 120, **settings}, env={})
    return ServerThread(create_app(config, RoutingEngine(KeywordRouter(), 0.5)))


@pytest.fixture(scope="module")
def server():
    with serve(prices=PRICES) as thread:
        thread.url_v1 = f"{thread.url}/v1"
        yield thread


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url_v1, api_key="unused", max_retries=0, timeout=120)


def test_create_routes_and_pins_the_id_with_real_usage(client, server):
    before = metric(server, "routellm_tokens_total", 'kind="prompt",role="strong"', missing=0.0)
    raw = client.responses.with_raw_response.create(model="routellm", input=HARD_Q, instructions="Be brief.",
                                                    max_output_tokens=16, temperature=0)
    response = raw.parse()
    assert raw.headers["x-routellm-role"] == "strong" and raw.headers["x-routellm-reason"] == "score"
    assert response.id.startswith("resp_rls_") and response.output_text.strip()
    assert response.usage.input_tokens > 0 and 0 < response.usage.output_tokens <= 16
    assert metric(server, "routellm_tokens_total", 'kind="prompt",role="strong"', missing=0.0) - before == \
        response.usage.input_tokens
    easy = client.responses.with_raw_response.create(model="routellm", input=EASY, max_output_tokens=16)
    assert easy.headers["x-routellm-role"] == "weak" and easy.parse().id.startswith("resp_rlw_")


def test_a_stream_through_the_server_is_the_real_event_stream_with_pinned_ids(client, server):
    # create(stream=True), not the SDK's responses.stream() helper, which needs fields that
    # llama-server's events leave out (an "output" list in response.created): a llama-server
    # matter, the same without the routing server.
    before = metric(server, "routellm_tokens_total", 'kind="completion",role="weak"', missing=0.0)
    seen = list(client.responses.create(model="routellm", input=EASY, max_output_tokens=24, temperature=0,
                                        stream=True))
    final = seen[-1].response
    assert [seen[0].type, seen[-1].type] == ["response.created", "response.completed"]
    deltas = "".join(e.delta for e in seen if e.type == "response.output_text.delta")
    assert deltas and deltas == final.output_text
    assert seen[0].response.id == final.id and final.id.startswith("resp_rlw_")
    assert 0 < final.usage.output_tokens <= 24
    deadline = time.monotonic() + 10  # counted when the stream's response ends, just after its last event
    completion = 'kind="completion",role="weak"'
    while (counted := metric(server, "routellm_tokens_total", completion, missing=0.0) - before) == 0:
        assert time.monotonic() < deadline, "the stream's usage was not counted"
        time.sleep(0.02)
    assert counted == final.usage.output_tokens  # read from the stream's response.completed


def test_a_follow_up_reaches_the_same_upstream_and_its_own_refusal_comes_back(client):
    """llama-server keeps no responses: it refuses previous_response_id itself (the server sent
    the follow-up to the upstream the id names, under that upstream's own id)."""
    first = client.responses.create(model="routellm", input=HARD_Q, max_output_tokens=8)
    with pytest.raises(openai.APIStatusError) as info:
        client.responses.create(model="routellm", input=EASY, previous_response_id=first.id, max_output_tokens=8)
    assert "previous_response_id" in str(info.value)
    assert info.value.response.headers["x-routellm-reason"] == "previous_response"
    assert info.value.response.headers["x-routellm-role"] == "strong"


def test_langchain_chat_openai_on_the_responses_api(server):
    pytest.importorskip("langchain_openai")
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model="routellm", base_url=server.url_v1, api_key="unused", use_responses_api=True,
                     max_tokens=16, temperature=0, max_retries=0, timeout=120)
    answer = llm.invoke(HARD_Q)
    assert answer.text.strip() and answer.response_metadata["id"].startswith("resp_rls_")
    assert answer.usage_metadata["input_tokens"] > 0
    streamed = list(llm.stream(EASY))
    assert "".join(c.text for c in streamed).strip()


def test_a_left_real_stream_is_charged_a_bound_above_its_real_cost():
    """A strong stream closed after its first event: charged its bound (the body's bytes and
    max_output_tokens), which is above what the same request really costs."""
    with serve(prices=PRICES, strong_budget=1.0) as thread:
        client = openai.OpenAI(base_url=f"{thread.url}/v1", api_key="unused", max_retries=0, timeout=120)
        body = {"model": "routellm", "input": HARD_Q, "max_output_tokens": 48, "temperature": 0}
        whole = client.responses.create(**body)
        real = (whole.usage.input_tokens * 10.0 + whole.usage.output_tokens * 30.0) / 1e6
        charged_whole = metric(thread, "routellm_budget_spent_dollars")
        assert charged_whole == pytest.approx(real, abs=1e-12)  # a whole answer: its real usage
        with client.responses.create(**body, stream=True) as events:
            assert next(iter(events)).type == "response.created"
        bound = response_token_bounds({**body, "stream": True})
        deadline = time.monotonic() + 30
        while (spent := metric(thread, "routellm_budget_spent_dollars")) == charged_whole:
            assert time.monotonic() < deadline, "the left stream was not charged"
            time.sleep(0.05)
        assert spent - charged_whole == pytest.approx((bound[0] * 10.0 + bound[1] * 30.0) / 1e6, abs=1e-12)
        assert bound[0] > whole.usage.input_tokens and spent - charged_whole > real
