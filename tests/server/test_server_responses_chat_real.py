"""The Responses API through the routing server to a real model server that has chat completions
only: SmolLM2-135M-Instruct under llama-cpp-python's server (no ``/v1/responses``) as both
upstreams with ``responses="chat"``, real HTTP on 127.0.0.1, the official ``openai`` client and
LangChain's ``ChatOpenAI(use_responses_api=True)`` in front.

Needs ``ROUTELLM_TEST_SERVER_URL`` (e.g. http://127.0.0.1:8765/v1), which scripts/test.sh sets
after starting scripts/llama_server.sh.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from server_support import KeywordRouter, ServerThread, metric, real_server_url
from shared_core.engine import RoutingEngine
from shared_core.server.app import create_app
from shared_core.server.config import load_config

pytestmark = pytest.mark.server
URL = real_server_url("ROUTELLM_TEST_SERVER_URL", "start the local SmolLM2 server (scripts/llama_server.sh start)")
openai = pytest.importorskip("openai")

EASY = "Say hello in one short sentence."
HARD_Q = "In one sentence, prove that 2 + 2 = 4."
WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture(scope="module")
def server():
    config = load_config({"strong_base_url": URL, "strong_model": "smollm2-as-strong", "weak_base_url": URL,
                          "weak_model": "smollm2-as-weak", "upstream_timeout": 120, "strong_responses": "chat",
                          "weak_responses": "chat"}, env={})
    with ServerThread(create_app(config, RoutingEngine(KeywordRouter(), 0.5))) as thread:
        thread.url_v1 = f"{thread.url}/v1"
        yield thread


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url_v1, api_key="unused", max_retries=0, timeout=120)


def direct_chat(**request):
    """The same question asked of the model server itself, as a chat completion."""
    return openai.OpenAI(base_url=URL, api_key="unused", max_retries=0, timeout=120).chat.completions.create(
        model="smollm2-as-weak", **request)


def test_the_model_servers_lack_of_a_responses_api_is_what_is_translated_around():
    r = httpx.post(f"{URL}/responses", json={"model": "smollm2-as-weak", "input": EASY}, timeout=60)
    assert r.status_code == 404


def test_create_answers_what_the_model_answers_as_a_chat_completion(client, server):
    before = metric(server, "routellm_tokens_total", 'kind="prompt",role="strong"', missing=0.0)
    raw = client.responses.with_raw_response.create(model="routellm", input=HARD_Q, instructions="Be brief.",
                                                    max_output_tokens=16, temperature=0)
    response = raw.parse()
    assert raw.headers["x-routellm-role"] == "strong" and response.id.startswith("resp_rls_resp_")
    expected = direct_chat(messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": HARD_Q}],
                           max_tokens=16, temperature=0)
    assert response.output_text == expected.choices[0].message.content and response.output_text.strip()
    assert (response.usage.input_tokens, response.usage.output_tokens) == \
        (expected.usage.prompt_tokens, expected.usage.completion_tokens)
    assert metric(server, "routellm_tokens_total", 'kind="prompt",role="strong"', missing=0.0) - before == \
        expected.usage.prompt_tokens
    cut = client.responses.create(model="routellm", input=EASY, max_output_tokens=3, temperature=0)
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"
    assert cut.usage.output_tokens == 3


def direct_stream(**request) -> tuple[str, object]:
    """The text and the usage (``None`` without a usage chunk) of the model server's own chat stream."""
    chunks = list(direct_chat(stream=True, stream_options={"include_usage": True}, **request))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, next((c.usage for c in reversed(chunks) if c.usage is not None), None)


def test_the_sdk_stream_helper_accumulates_the_translated_events(client):
    # room to finish: the SDK's helper wants a response.completed, which a cut-off stream does not end with
    request = dict(input=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": EASY}],
                   max_output_tokens=60, temperature=0)
    with client.responses.stream(model="routellm", **request) as stream:
        kinds = []
        deltas = []
        for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert len(deltas) > 2 and "".join(deltas) == final.output_text
    text, usage = direct_stream(messages=[{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": EASY}], max_tokens=60, temperature=0)
    assert final.output_text == text and final.id.startswith("resp_rlw_")
    # llama-cpp-python's server sends no usage chunk (as of 0.3): the translation reports what it got
    assert (final.usage is None) == (usage is None)
    if usage is not None:
        assert final.usage.output_tokens == usage.completion_tokens


def test_a_function_call_and_its_output_round_trip(client):
    first = client.responses.create(model="routellm", input="What is the weather in Paris?", tools=[WEATHER],
                                    tool_choice={"type": "function", "name": "get_weather"}, max_output_tokens=30,
                                    temperature=0)
    call = next(item for item in first.output if item.type == "function_call")
    assert call.name == "get_weather" and "city" in json.loads(call.arguments)
    second = client.responses.create(model="routellm", tools=[WEATHER], max_output_tokens=16, temperature=0, input=[
        {"role": "user", "content": "What is the weather in Paris?"}, call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C."}])
    assert second.status in ("completed", "incomplete") and second.output_text.strip()


def test_langchain_chat_openai_on_the_responses_api(server):
    langchain_openai = pytest.importorskip("langchain_openai")
    llm = langchain_openai.ChatOpenAI(model="routellm", base_url=server.url_v1, api_key="unused", temperature=0,
                                      max_retries=0, timeout=120, use_responses_api=True, max_tokens=12)
    message = llm.invoke(HARD_Q)
    assert message.text.strip() and message.usage_metadata["output_tokens"] > 0
    full = None
    for chunk in llm.stream(EASY):
        full = chunk if full is None else full + chunk
    assert full.text.strip() and full.response_metadata["model_name"] == "smollm2-as-weak"


def test_an_openai_agents_sdk_agent_runs_on_the_real_model(server):
    """The Agents SDK's default model speaks the Responses API; here it reaches SmolLM2 through the
    routing server's translation, non-streamed and streamed."""
    agents = pytest.importorskip("agents")
    agents.set_tracing_disabled(True)  # it would send traces to OpenAI

    def agent():  # a client the run's event loop owns
        model = agents.OpenAIResponsesModel("routellm", openai.AsyncOpenAI(base_url=server.url_v1, api_key="unused",
                                                                           max_retries=0, timeout=120))
        # room to finish: the SDK refuses a cut-off answer (response.incomplete)
        return agents.Agent(name="brief", instructions="Answer in one short sentence.", model=model,
                            model_settings=agents.ModelSettings(temperature=0, max_tokens=400))

    result = agents.Runner.run_sync(agent(), EASY)
    assert isinstance(result.final_output, str) and result.final_output.strip()
    assert result.context_wrapper.usage.input_tokens > 0  # the real usage, translated

    async def streamed():
        run = agents.Runner.run_streamed(agent(), HARD_Q)
        deltas = [event.data.delta async for event in run.stream_events()
                  if event.type == "raw_response_event" and event.data.type == "response.output_text.delta"]
        return run.final_output, deltas

    final, deltas = asyncio.run(streamed())
    assert len(deltas) > 2 and "".join(deltas) == final and final.strip()


def test_what_the_chat_upstream_cannot_take_goes_to_the_upstream_with_the_responses_api():
    """The strong upstream llama.cpp's ``llama-server`` (its own ``/v1/responses``), the weak one
    llama-cpp-python's server (chat completions only): a request with ``include`` goes strong,
    unscored, and is answered there; without it, the easy question goes weak, translated."""
    native = real_server_url("ROUTELLM_TEST_RESPONSES_URL", "start llama.cpp's llama-server "
                             "(scripts/llama_server.sh start PORT cpp)")
    config = load_config({"strong_base_url": native, "strong_model": "smollm2-as-strong", "weak_base_url": URL,
                          "weak_model": "smollm2-as-weak", "upstream_timeout": 120, "weak_responses": "chat"}, env={})
    with ServerThread(create_app(config, RoutingEngine(KeywordRouter(), 0.5))) as thread:
        client = openai.OpenAI(base_url=f"{thread.url}/v1", api_key="unused", max_retries=0, timeout=120)
        raw = client.responses.with_raw_response.create(model="routellm", input=EASY, max_output_tokens=8,
                                                        temperature=0, include=["message.output_text.logprobs"])
        response = raw.parse()
        assert (raw.headers["x-routellm-role"], raw.headers["x-routellm-reason"]) == ("strong", "needs_responses_api")
        assert response.id.startswith("resp_rls_") and response.output_text.strip()
        assert not response.id.startswith("resp_rls_resp_chatcmpl")  # llama-server's own response, not a translation
        plain = client.responses.with_raw_response.create(model="routellm", input=EASY, max_output_tokens=8,
                                                          temperature=0)
        assert (plain.headers["x-routellm-role"], plain.headers["x-routellm-reason"]) == ("weak", "score")
        assert plain.parse().id.startswith("resp_rlw_resp_chatcmpl")
