"""The official ``openai`` client and LangChain's ``ChatOpenAI`` against the routing
server, with SmolLM2-135M-Instruct (llama-cpp-python's OpenAI-compatible server)
as both upstreams: real HTTP on 127.0.0.1. Also the cost controls: escalation of a
cut-off weak answer, the strong budget charged from real usage, and a real
upstream's stream that reports no usage.

Needs ``ROUTELLM_TEST_SERVER_URL`` (e.g. http://127.0.0.1:8765/v1), which
scripts/test.sh sets after starting scripts/llama_server.sh.
"""

from __future__ import annotations

import json

import httpx
import pytest

from server_support import KeywordRouter, ServerThread, real_server_url
from shared_core.engine import RoutingEngine
from shared_core.server.app import create_app
from shared_core.server.config import load_config

pytestmark = pytest.mark.server
URL = real_server_url("ROUTELLM_TEST_SERVER_URL", "start the local SmolLM2 server (scripts/llama_server.sh start)")
openai = pytest.importorskip("openai")

TOKEN = "client-token-1"
EASY = "Say hello in one short sentence."
HARD_Q = "In one sentence, prove that 2 + 2 = 4."
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


@pytest.fixture(scope="module")
def server():
    config = load_config({"strong_base_url": URL, "strong_model": "smollm2-as-strong", "weak_base_url": URL,
                          "weak_model": "smollm2-as-weak", "upstream_timeout": 120},
                         env={"ROUTELLM_SERVE_AUTH_TOKENS": TOKEN})
    with ServerThread(create_app(config, RoutingEngine(KeywordRouter(), 0.5))) as thread:
        yield f"{thread.url}/v1"


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server, api_key=TOKEN, max_retries=0, timeout=120)


def test_invoke_with_decision_headers_and_body(client):
    raw = client.chat.completions.with_raw_response.create(
        model="routellm", messages=[{"role": "user", "content": HARD_Q}], max_tokens=16, temperature=0)
    completion = raw.parse()
    assert raw.headers["x-routellm-role"] == "strong" and raw.headers["x-routellm-model"] == "smollm2-as-strong"
    assert completion.model == "smollm2-as-strong"  # the upstream's own answer
    assert completion.choices[0].message.content.strip()
    assert completion.usage.prompt_tokens > 0
    assert completion.model_extra["routellm"]["role"] == "strong"
    assert completion.model_extra["routellm"]["score"] == pytest.approx(0.9, abs=1e-9)


def test_stream_equals_the_upstream_stream(client):
    request = dict(messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": EASY}],
                   max_tokens=12, temperature=0, seed=1)
    direct = openai.OpenAI(base_url=URL, api_key="unused", max_retries=0, timeout=120)
    expected = "".join(c.choices[0].delta.content or "" for c in
                       direct.chat.completions.create(model="smollm2-as-weak", stream=True, **request) if c.choices)
    with client.chat.completions.with_streaming_response.create(model="routellm", stream=True, **request) as raw:
        assert raw.headers["x-routellm-role"] == "weak"
        chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) > 2 and text.strip()
    assert text == expected
    assert all(c.model == "smollm2-as-weak" for c in chunks)


def test_tools_and_tool_results(client):
    first = client.chat.completions.create(
        model="routellm", messages=[{"role": "user", "content": "What is the weather in Paris?"}], tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, max_tokens=30, temperature=0)
    call = first.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and "city" in json.loads(call.function.arguments)
    assert first.model_extra["routellm"]["role"] == "weak"
    second = client.chat.completions.create(model="routellm", max_tokens=16, temperature=0, tools=TOOLS, messages=[
        {"role": "user", "content": "What is the weather in Paris?"},
        # content "": llama-cpp-python's request model rejects None (its 500 comes back as is)
        {"role": "assistant", "content": "", "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C. You must prove it."},
    ])
    assert second.choices[0].message.content.strip()
    assert second.model_extra["routellm"]["role"] == "weak"  # routed on the user's question, not the tool text


def test_errors(server, client):
    with pytest.raises(openai.NotFoundError, match="gpt-4o"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": EASY}])
    with pytest.raises(openai.BadRequestError, match="nosuch"):
        client.chat.completions.create(model="router-nosuch-0.5", messages=[{"role": "user", "content": EASY}])
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="routellm", messages=[])
    wrong = openai.OpenAI(base_url=server, api_key="wrong-token", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="incorrect bearer token"):
        wrong.chat.completions.create(model="routellm", messages=[{"role": "user", "content": EASY}])
    assert [m.id for m in client.models.list()] == ["routellm"]


def test_chat_openai_invoke_and_stream(server):
    langchain_openai = pytest.importorskip("langchain_openai")
    llm = langchain_openai.ChatOpenAI(model="routellm", base_url=server, api_key=TOKEN, temperature=0,
                                      max_retries=0, timeout=120, extra_body={"max_tokens": 12})
    message = llm.invoke(HARD_Q)
    assert message.text.strip() and message.response_metadata["model_name"] == "smollm2-as-strong"
    chunks = list(llm.stream(EASY))
    full = chunks[0]
    for chunk in chunks[1:]:
        full = full + chunk
    assert len(chunks) > 2 and full.text.strip()
    assert full.response_metadata["model_name"] == "smollm2-as-weak"  # the weak upstream streamed it
    bound = llm.bind_tools(TOOLS, tool_choice="get_weather")
    call = bound.invoke("What is the weather in Rome?")
    assert call.tool_calls and call.tool_calls[0]["name"] == "get_weather"


# Cost controls ---------------------------------------------------------------------------
PRICES = {"smollm2-as-strong": [10.0, 30.0], "smollm2-as-weak": [0.5, 1.5]}


@pytest.fixture
def controls_server():
    config = load_config({"strong_base_url": URL, "strong_model": "smollm2-as-strong", "weak_base_url": URL,
                          "weak_model": "smollm2-as-weak", "upstream_timeout": 120, "prices": PRICES,
                          "strong_budget": 1.0, "escalate_on": "empty,refusal,length"}, env={})
    with ServerThread(create_app(config, RoutingEngine(KeywordRouter(), 0.5))) as thread:
        yield thread


def _metrics(server) -> dict[str, float]:
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


def test_cut_off_weak_answer_escalates_and_both_are_priced_once(controls_server):
    client = openai.OpenAI(base_url=f"{controls_server.url}/v1", api_key="-", max_retries=0, timeout=120)
    raw = client.chat.completions.with_raw_response.create(
        model="routellm", messages=[{"role": "user", "content": EASY}], max_tokens=3, temperature=0)
    completion = raw.parse()
    assert raw.headers["x-routellm-escalated-from"] == "weak"  # 3 tokens: the weak answer was cut off
    assert raw.headers["x-routellm-escalation-reason"] == "length: the answer was cut off (finish reason 'length')"
    assert raw.headers["x-routellm-role"] == "strong" and completion.model == "smollm2-as-strong"
    assert completion.choices[0].finish_reason == "length"  # the strong answer is returned as it is
    rejected = completion.model_extra["routellm"]["escalations"][0]
    assert rejected["model"] == "smollm2-as-weak" and rejected["usage"]["completion_tokens"] == 3
    strong_usage = completion.usage
    metrics = _metrics(controls_server)
    for role, usage in (("weak", rejected["usage"]), ("strong", strong_usage.model_dump())):
        assert metrics[f'routellm_tokens_total{{kind="prompt",role="{role}"}}'] == usage["prompt_tokens"] > 0
        assert metrics[f'routellm_tokens_total{{kind="completion",role="{role}"}}'] == usage["completion_tokens"]
    strong_cost = (strong_usage.prompt_tokens * 10.0 + strong_usage.completion_tokens * 30.0) / 1e6
    assert metrics['routellm_cost_dollars_total{role="strong"}'] == pytest.approx(strong_cost, abs=1e-12)
    assert metrics["routellm_budget_spent_dollars"] == pytest.approx(strong_cost, abs=1e-12)  # charged once
    assert metrics['routellm_escalations_total{check="length",from_role="weak"}'] == 1.0


def test_a_real_stream_without_usage_is_charged_its_bound(controls_server):
    """The server asks for the stream's usage (``stream_options.include_usage``) for an
    ordinary client that did not, but llama-cpp-python ignores the field and sends no usage
    in streams. With ``max_tokens`` the budget charges the request's upper bound (its bytes,
    its max tokens), which the real tokenizer's count stays under; without, the cost is
    unknown, so the period's budget counts as spent and the next strong-worthy call goes weak."""
    client = openai.OpenAI(base_url=f"{controls_server.url}/v1", api_key="-", max_retries=0, timeout=120)
    messages = [{"role": "user", "content": HARD_Q}]
    with client.chat.completions.with_streaming_response.create(
            model="routellm", messages=messages, max_tokens=4, temperature=0, stream=True) as raw:
        assert raw.headers["x-routellm-role"] == "strong"
        chunks = list(raw.parse())
    assert chunks and all(c.usage is None for c in chunks)
    metrics = _metrics(controls_server)
    assert metrics['routellm_unpriced_answers_total{role="strong"}'] == 1.0
    assert metrics['routellm_budget_without_usage_total{charged="bound"}'] == 1.0
    charged = metrics["routellm_budget_spent_dollars"]
    # the same request answered whole reports its usage: the bound is above its true cost
    usage = client.chat.completions.create(model="routellm", messages=messages, max_tokens=4, temperature=0).usage
    assert 0 < usage.prompt_tokens and usage.completion_tokens <= 4
    assert charged > (usage.prompt_tokens * 10.0 + usage.completion_tokens * 30.0) / 1e6 > 0
    assert _metrics(controls_server)["routellm_budget_remaining_dollars"] > 0.9  # strong calls go on
    with client.chat.completions.with_streaming_response.create(
            model="routellm", messages=messages, temperature=0, stream=True) as raw:  # no max_tokens: no bound
        assert raw.headers["x-routellm-role"] == "strong"
        list(raw.parse())
    metrics = _metrics(controls_server)
    assert metrics['routellm_budget_without_usage_total{charged="period"}'] == 1.0
    assert metrics["routellm_budget_remaining_dollars"] <= 0.0
    raw = client.chat.completions.with_raw_response.create(model="routellm", messages=messages, max_tokens=4,
                                                           temperature=0)
    assert (raw.headers["x-routellm-role"], raw.headers["x-routellm-reason"]) == ("weak", "budget_exhausted")
