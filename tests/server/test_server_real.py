"""The official ``openai`` client and LangChain's ``ChatOpenAI`` against the routing
server, with SmolLM2-135M-Instruct (llama-cpp-python's OpenAI-compatible server)
as both upstreams: real HTTP on 127.0.0.1.

Needs ``ROUTELLM_TEST_SERVER_URL`` (e.g. http://127.0.0.1:8765/v1), which
scripts/test.sh sets after starting scripts/llama_server.sh.
"""

from __future__ import annotations

import json
import os

import pytest

pytestmark = pytest.mark.server

URL = os.environ.get("ROUTELLM_TEST_SERVER_URL")
if not URL:
    pytest.skip("ROUTELLM_TEST_SERVER_URL is not set; start the local SmolLM2 server (scripts/llama_server.sh "
                "start) and export its /v1 URL", allow_module_level=True)
openai = pytest.importorskip("openai")

from server_support import KeywordRouter, ServerThread  # noqa: E402
from shared_core.engine import RoutingEngine  # noqa: E402
from shared_core.server.app import create_app  # noqa: E402
from shared_core.server.config import load_config  # noqa: E402

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
