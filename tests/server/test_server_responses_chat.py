"""The Responses API served by an upstream with chat completions only (``--weak-responses chat``):
the translation of requests, answers and streams (:mod:`shared_core.server.responses_chat`), and
the routing server over the stand-in upstreams with the official ``openai`` client and LangChain's
``ChatOpenAI(use_responses_api=True)`` in front."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from server_support import PRICES, STRONG_RESPONSE, access_log, completion, metric, openai_sse_chunks, sse_chunks
from shared_core.server.protocol import APIError
from shared_core.server.responses import response_stream_view, response_view
from shared_core.server.responses_chat import (
    ResponsesFromChatStream,
    Untranslatable,
    chat_request,
    response_from_completion,
)

HARD_Q = "Please prove that there are infinitely many primes."
EASY_Q = "Say hello."
WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def respond(server, input, **body):
    return httpx.post(f"{server.url_v1}/responses", json={"model": "routellm", "input": input, **body}, timeout=30)


def events_of(raw: bytes) -> list[dict]:
    """The ``data:`` objects of a Responses event stream, each checked against its ``event:`` line."""
    blocks = [b for b in raw.split(b"\n\n") if b.strip()]
    out = []
    for block in blocks:
        lines = block.split(b"\n")
        assert lines[0].startswith(b"event: ") and lines[1].startswith(b"data: "), block
        data = json.loads(lines[1][6:])
        assert data["type"] == lines[0][7:].decode()
        out.append(data)
    return out


# The request -------------------------------------------------------------------------------
def test_a_request_becomes_the_chat_request_that_means_the_same():
    items = [
        {"role": "developer", "content": "Answer in French."},
        {"role": "user", "content": [{"type": "input_text", "text": "What is on this picture, and the weather?"},
                                     {"type": "input_image", "image_url": "data:image/png;base64,AAAA",
                                      "detail": "low"}]},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "A city. Let me look.", "annotations": []}]},
        {"type": "function_call", "id": "fc_1", "call_id": "call_a", "name": "get_weather",
         "arguments": '{"city": "Paris"}', "status": "completed"},
        {"type": "function_call", "call_id": "call_b", "name": "get_weather", "arguments": '{"city": "Lyon"}'},
        {"type": "function_call_output", "call_id": "call_a", "output": "sunny"},
        {"type": "function_call_output", "call_id": "call_b", "output": [{"type": "input_text", "text": "rain"}]},
        {"role": "user", "content": "Thanks."},
    ]
    body = chat_request({
        "model": "weak-model", "instructions": "Be brief.", "input": items, "max_output_tokens": 64,
        "temperature": 0.2, "top_p": 0.9, "parallel_tool_calls": False, "user": "u1", "stream": True,
        "tools": [WEATHER], "tool_choice": {"type": "function", "name": "get_weather"},
        "text": {"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": True}},
        "reasoning": {"effort": "low"}, "metadata": {"trace": "t1"}, "store": False, "truncation": "disabled",
        "top_k": 40,  # a vendor's own field passes through
        "background": False, "conversation": None, "top_logprobs": 0, "include": [],  # not set: not sent
    })
    assert body == {
        "model": "weak-model",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is on this picture, and the weather?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}}]},
            {"role": "assistant", "content": "A city. Let me look.", "tool_calls": [
                {"id": "call_a", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
                {"id": "call_b", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Lyon"}'}}]},
            {"role": "tool", "tool_call_id": "call_a", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_b", "content": "rain"},
            {"role": "user", "content": "Thanks."},
        ],
        "top_k": 40, "temperature": 0.2, "top_p": 0.9, "parallel_tool_calls": False, "user": "u1", "stream": True,
        "max_tokens": 64,
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
                                                    "parameters": WEATHER["parameters"]}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True}},
        "reasoning_effort": "low",
    }
    # A function call with no assistant message before it is an assistant turn of its own.
    alone = chat_request({"input": [{"role": "user", "content": "Hi"},
                                    {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}]})
    assert alone["messages"][1] == {"role": "assistant", "content": "", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
    assert chat_request({"input": "Hi", "text": {"format": {"type": "json_object"}}})["response_format"] == \
        {"type": "json_object"}
    assert "response_format" not in chat_request({"input": "Hi", "text": {"format": {"type": "text"}}})
    with pytest.raises(APIError, match=r"input\[0\]\.arguments must be a string, got null"):
        chat_request({"input": [{"type": "function_call", "call_id": "c", "name": "f"}]})


@pytest.mark.parametrize("extra, param", [
    ({"tools": [WEATHER, {"type": "web_search"}]}, "tools[1].type"),
    ({"input": [{"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "t"}],
                 "encrypted_content": "gAAA"}]}, "input[0].encrypted_content"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}, "input[0].content[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]},
     "input[0].content[0].image_url"),
    ({"include": ["file_search_call.results"]}, "include"),
    ({"prompt": {"id": "pmpt_1"}}, "prompt"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"max_tool_calls": 2}, "max_tool_calls"),
    ({"truncation": "auto"}, "truncation"),
    ({"reasoning": {"effort": "low", "summary": "auto"}}, "reasoning.summary"),
    ({"text": {"format": {"type": "grammar"}}}, "text.format"),
    ({"tool_choice": {"type": "allowed_tools", "tools": []}}, "tool_choice"),
    ({"stream_options": {"include_obfuscation": True}}, "stream_options.include_obfuscation"),
    ({"previous_response_id": "resp_1"}, "previous_response_id"),
])
def test_what_a_chat_completion_cannot_say_is_refused_naming_the_parameter(extra, param):
    with pytest.raises(Untranslatable) as caught:
        chat_request({"input": "Hi", **extra})
    assert (caught.value.status, caught.value.param) == (400, param)
    assert "chat completions" in caught.value.message


def test_reasoning_items_become_the_reasoning_content_of_their_assistant_turn():
    thought = {"type": "reasoning", "id": "rs_1", "summary": [],
               "content": [{"type": "reasoning_text", "text": "The user wants Paris."}]}
    call = {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}
    said = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]}
    sent = chat_request({"input": [{"role": "user", "content": "Weather?"}, thought, said, call,
                                   {"type": "function_call_output", "call_id": "c", "output": "sunny"}]})["messages"]
    assert sent[1:] == [{"role": "assistant", "content": "Checking.", "reasoning_content": "The user wants Paris.",
                         "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                        {"role": "tool", "tool_call_id": "c", "content": "sunny"}]
    # Reasoning, then calls only; a summary's text when there is no reasoning text (the Agents SDK's form).
    summary = {"type": "reasoning", "id": "rs_2", "summary": [{"type": "summary_text", "text": "Look it up."}]}
    sent = chat_request({"input": [{"role": "user", "content": "Weather?"}, summary, call]})["messages"]
    assert sent[1] == {"role": "assistant", "content": "", "reasoning_content": "Look it up.", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
    # An item with no text (LangChain's streamed messages keep one) adds nothing.
    empty = {"type": "reasoning", "id": "rs_3", "summary": [], "content": [], "status": "in_progress"}
    sent = chat_request({"input": [{"role": "user", "content": "Hi"}, empty, said]})["messages"]
    assert sent == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Checking."}]
    # A second assistant message after the first turn's answer is a turn of its own.
    sent = chat_request({"input": [thought, said, said]})["messages"]
    assert [m.get("reasoning_content") for m in sent] == ["The user wants Paris.", None]
    with pytest.raises(APIError, match=r"input\[0\]\.content\[0\] must be a reasoning_text part"):
        chat_request({"input": [{"type": "reasoning", "summary": [], "content": [{"type": "text", "text": 1}]}]})


# The answer --------------------------------------------------------------------------------
def test_a_chat_completion_becomes_a_response_with_its_calls_status_usage_and_the_request_echoed():
    answer = completion("weak-model", "", tool_calls=[("get_weather", '{"city": "Paris"}')])
    answer["usage"] = {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28,
                       "prompt_tokens_details": {"cached_tokens": 4}}
    request = {"input": "Weather?", "tools": [WEATHER], "metadata": {"trace": "t1"}, "instructions": "Be brief.",
               "max_output_tokens": 50}
    response = response_from_completion(answer, request)
    assert response["id"] == "resp_chatcmpl-standin" and response["object"] == "response"
    assert response["status"] == "completed" and response["model"] == "weak-model"
    assert response["output"] == [{"type": "function_call", "id": "fc_call_0", "call_id": "call_0",
                                   "name": "get_weather", "arguments": '{"city": "Paris"}', "status": "completed"}]
    assert response["usage"] == {"input_tokens": 20, "input_tokens_details": {"cached_tokens": 4},
                                 "output_tokens": 8, "output_tokens_details": {"reasoning_tokens": 0},
                                 "total_tokens": 28}
    assert (response["tools"], response["metadata"], response["instructions"], response["max_output_tokens"],
            response["store"], response["previous_response_id"]) == \
        ([WEATHER], {"trace": "t1"}, "Be brief.", 50, False, None)
    view = response_view(response)
    assert view.tool_calls[0].name == "get_weather" and view.tool_calls[0].args == {"city": "Paris"}
    cut = response_from_completion(completion("m", "Once upon", finish="length"), {"input": "Tell"})
    assert (cut["status"], cut["incomplete_details"]) == ("incomplete", {"reason": "max_output_tokens"})
    assert response_view(cut).finish_reason == "max_output_tokens"
    refused = response_from_completion({"id": "c", "choices": [{"message": {"role": "assistant", "content": None,
                                                                            "refusal": "I can't."},
                                                                "finish_reason": "stop"}]}, {"input": "x"})
    assert refused["output"][0]["content"] == [{"type": "refusal", "refusal": "I can't."}]
    assert refused["usage"] is None


def test_a_chat_models_reasoning_becomes_a_reasoning_item_before_its_answer():
    answer = completion("m", "Paris.", reasoning="The capital of France is Paris.")
    answer["usage"] = {"prompt_tokens": 9, "completion_tokens": 12,
                       "completion_tokens_details": {"reasoning_tokens": 8}}
    response = response_from_completion(answer, {"input": "Capital of France?"})
    assert response["output"][0] == {"type": "reasoning", "id": "rs_chatcmpl-standin", "summary": [], "status":
                                     "completed", "content": [{"type": "reasoning_text",
                                                               "text": "The capital of France is Paris."}]}
    assert response["output"][1]["content"][0]["text"] == "Paris." and response_view(response).text == "Paris."
    assert response["usage"]["output_tokens_details"] == {"reasoning_tokens": 8}
    ollama = {"id": "c", "choices": [{"message": {"role": "assistant", "content": "Hi", "reasoning": "Greet."},
                                      "finish_reason": "stop"}]}  # Ollama's and OpenRouter's name for it
    assert response_from_completion(ollama, {"input": "x"})["output"][0]["content"][0]["text"] == "Greet."
    # Sent back as input (the Agents SDK replays a turn's items), it is that turn's reasoning again.
    sent = chat_request({"input": [{"role": "user", "content": "Capital of France?"}, *response["output"]]})
    assert sent["messages"][1] == {"role": "assistant", "content": "Paris.",
                                   "reasoning_content": "The capital of France is Paris."}


@pytest.mark.parametrize("cut", [0, 3, 64])
def test_a_streamed_reasoning_is_a_reasoning_item_with_its_text_deltas(cut):
    chunks = sse_chunks("m", ["Paris", "."], reasoning="The capital is Paris.",
                        tool_calls=[("get_weather", '{"city": "Paris"}')])
    events = _translated(chunks, cut)
    kinds = [e["type"] for e in events]
    assert kinds[:9] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"] + ["response.reasoning_text.delta"] * 4 + [
        "response.reasoning_text.done"]
    assert kinds[9:12] == ["response.content_part.done", "response.output_item.done", "response.output_item.added"]
    assert events[2]["item"] == {"type": "reasoning", "id": "rs_chatcmpl-standin_0", "summary": [], "content": [],
                                 "status": "in_progress"}
    assert "".join(e["delta"] for e in events if e["type"] == "response.reasoning_text.delta") == \
        events[8]["text"] == "The capital is Paris."
    final = events[-1]["response"]
    assert [item["type"] for item in final["output"]] == ["reasoning", "message", "function_call"]
    assert final["output"][0]["content"] == [{"type": "reasoning_text", "text": "The capital is Paris."}]
    assert final["output"][0]["status"] == "completed" and final["output"][1]["content"][0]["text"] == "Paris."
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    # Cut off while reasoning: the item is closed with what came, and the response failed.
    broken = _translated(chunks[:2])
    assert broken[-1]["type"] == "response.failed"
    assert broken[-1]["response"]["output"][0]["content"][0]["text"] == "The capital "


def _translated(chunks: list[bytes], cut: int = 0) -> list[dict]:
    """The Responses events of a chat stream, fed ``cut`` bytes at a time (0: chunk by chunk)."""
    whole = b"".join(chunks)
    pieces = [whole[i:i + cut] for i in range(0, len(whole), cut)] if cut else chunks
    stream = ResponsesFromChatStream({"input": "x", "model": "m"})
    raw = b"".join(stream.feed(piece) for piece in pieces) + stream.flush()
    return events_of(raw)


@pytest.mark.parametrize("cut", [0, 1, 7, 64])
def test_a_chat_stream_becomes_the_responses_events_of_the_same_answer(cut):
    words = ["Hello", " from", " the", " stand-in", "."]
    events = _translated(openai_sse_chunks("weak-model", words, include_usage=True), cut)
    kinds = [e["type"] for e in events]
    assert kinds == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added"] + ["response.output_text.delta"] * 5 + [
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.completed"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "".join(words)
    final = events[-1]["response"]
    assert final["id"] == events[0]["response"]["id"] == "resp_chatcmpl-standin"
    assert final["output"][0]["content"][0]["text"] == "Hello from the stand-in."
    assert final["usage"]["input_tokens"] == 5 and final["usage"]["output_tokens"] == 5
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []
    # The same answer as a whole: the stream's final response is the non-streamed translation's.
    whole = response_from_completion({**completion("weak-model", "Hello from the stand-in."),
                                      "usage": {"prompt_tokens": 5, "completion_tokens": 5}}, {"input": "x"})
    assert final["output"][0]["content"] == whole["output"][0]["content"]
    # What the escalation checks see of the translated stream.
    stream = ResponsesFromChatStream({"input": "x"})
    translated = stream.feed(b"".join(openai_sse_chunks("weak-model", words, include_usage=True))) + stream.flush()
    assert response_stream_view([translated]).text == "Hello from the stand-in."


def test_tool_calls_stream_as_function_call_items_with_their_arguments():
    calls = [("get_weather", '{"city": "Paris"}'), ("get_time", '{"zone": "CET"}')]
    events = _translated(sse_chunks("m", ["Checking."], tool_calls=calls), cut=5)
    kinds = [e["type"] for e in events]
    assert kinds == ["response.created", "response.in_progress",
                     "response.output_item.added", "response.content_part.added", "response.output_text.delta",
                     "response.output_text.done", "response.content_part.done", "response.output_item.done",
                     "response.output_item.added", "response.function_call_arguments.delta",
                     "response.function_call_arguments.delta", "response.function_call_arguments.done",
                     "response.output_item.done",
                     "response.output_item.added", "response.function_call_arguments.delta",
                     "response.function_call_arguments.delta", "response.function_call_arguments.done",
                     "response.output_item.done", "response.completed"]
    final = events[-1]["response"]
    assert [item["type"] for item in final["output"]] == ["message", "function_call", "function_call"]
    assert [(i["call_id"], i["name"], i["arguments"], i["status"]) for i in final["output"][1:]] == \
        [("call_0", "get_weather", '{"city": "Paris"}', "completed"), ("call_1", "get_time", '{"zone": "CET"}',
                                                                        "completed")]
    assert [e["output_index"] for e in events if e["type"] == "response.output_item.added"] == [0, 1, 2]


def test_a_streamed_refusal_is_the_message_s_refusal_part():
    chunk = {"id": "c", "choices": [{"index": 0, "delta": {"refusal": "I can't"}, "finish_reason": None}]}
    end = {"id": "c", "choices": [{"index": 0, "delta": {"refusal": " help."}, "finish_reason": "stop"}]}
    events = _translated([f"data: {json.dumps(chunk)}\n\n".encode(), f"data: {json.dumps(end)}\n\n".encode(),
                          b"data: [DONE]\n\n"])
    assert [e["type"] for e in events if "refusal" in e["type"]] == ["response.refusal.delta"] * 2 + [
        "response.refusal.done"]
    assert events[-1]["response"]["output"][0]["content"] == [{"type": "refusal", "refusal": "I can't help."}]
    assert response_view(events[-1]["response"]).text == "I can't help."


def test_a_stream_that_breaks_off_or_reports_an_error_ends_as_the_responses_api_ends_one():
    chunks = sse_chunks("m", ["Hel", "lo"])
    unfinished = _translated(chunks[:2])  # no finish reason, no [DONE]
    assert unfinished[-1]["type"] == "response.failed"
    assert unfinished[-1]["response"]["output"][0]["content"][0]["text"] == "Hello"
    errored = _translated(chunks[:1] + [b'data: {"error": {"message": "model crashed", "code": "oops"}}\n\n'])
    assert errored[-1] == {"type": "error", "sequence_number": len(errored) - 1, "code": "oops",
                           "message": "model crashed", "param": None}
    cut = _translated(sse_chunks("m", ["Once"], finish="length"))
    assert cut[-1]["type"] == "response.incomplete"
    assert cut[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


# Through the server ------------------------------------------------------------------------
def test_a_chat_upstream_answers_responses_requests_as_chat_completions(make_server, strong, weak):
    server = make_server(weak_responses="chat")
    r = respond(server, EASY_Q, instructions="Be brief.", max_output_tokens=20, metadata={"k": "v"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert r.headers["x-routellm-role"] == "weak" and body["id"] == "resp_rlw_resp_chatcmpl-standin"
    assert body["output"][0]["content"][0]["text"] == "weak answers" and body["metadata"] == {"k": "v"}
    assert body["usage"]["input_tokens"] == 7 and body["store"] is False
    assert weak.requests[-1] == {"model": "weak-model", "max_tokens": 20, "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": EASY_Q}]}
    assert metric(server, "routellm_tokens_total", 'kind="prompt",role="weak"') == 7
    # The strong upstream still gets its own /responses, the body unchanged but the model.
    r = respond(server, HARD_Q)
    assert r.json()["id"] == "resp_rls_resp_strong_0" and strong.requests[-1] == {"model": "strong-model",
                                                                                  "input": HARD_Q}
    health = httpx.get(f"{server.url}/health").json()
    assert health["responses"] == {"strong": "native", "weak": "chat"}


def test_what_the_chat_upstream_cannot_take_goes_to_the_other_unscored_whatever_its_score(make_server, strong,
                                                                                          weak):
    server = make_server(weak_responses="chat")
    tools = [{"type": "web_search"}]
    for question in (HARD_Q, EASY_Q):  # strong or weak by its score: strong, the same way
        r = respond(server, question, tools=tools)
        assert r.status_code == 200, r.text
        assert (r.headers["x-routellm-role"], r.headers["x-routellm-reason"]) == ("strong", "needs_responses_api")
        assert "x-routellm-score" not in r.headers and r.json()["routellm"]["score"] is None
        assert r.json()["id"].startswith("resp_rls_")
        assert strong.requests[-1] == {"model": "strong-model", "input": question, "tools": tools}
    assert not weak.requests
    # Streamed, the same.
    with httpx.stream("POST", f"{server.url_v1}/responses", json={"input": EASY_Q, "tools": tools,
                                                                 "stream": True}) as r:
        assert r.headers["x-routellm-reason"] == "needs_responses_api"
        assert b"response.completed" in b"".join(r.iter_raw())
    assert not weak.requests
    # A malformed request is refused before any model, as is one that neither upstream can take.
    r = respond(server, EASY_Q, tools={"type": "web_search"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools", r.text
    both = make_server(weak_responses="chat", strong_responses="chat")
    for question in (HARD_Q, EASY_Q):
        r = respond(both, question, tools=tools)
        assert r.status_code == 400 and r.json()["error"]["param"] == "tools[0].type", r.text
    assert len(strong.requests) == 3 and not weak.requests
    # A follow-up of a native upstream's response is that upstream's, and is not checked.
    first = respond(server, HARD_Q).json()
    r = respond(server, EASY_Q, previous_response_id=first["id"], tools=tools)
    assert r.status_code == 200 and r.headers["x-routellm-reason"] == "previous_response"
    unscored = 'reason="{}",role="strong"'
    assert metric(server, "routellm_unscored_decisions_total", unscored.format("needs_responses_api")) == 3
    assert metric(server, "routellm_unscored_decisions_total", unscored.format("previous_response")) == 1
    assert metric(server, "routellm_decisions_total", 'role="strong",router="keyword"') == 5


def test_a_request_only_one_upstream_can_take_neither_falls_back_nor_escalates(make_server, strong, weak, caplog):
    server = make_server(weak_responses="chat", fallback=True)
    strong.mode = "error"
    r = respond(server, EASY_Q, include=["message.output_text.logprobs"])
    assert r.status_code == 500 and "x-routellm-fallback-from" not in r.headers, r.text
    assert not weak.requests  # the weak upstream could not have taken it
    strong.mode = "ok"
    # The other way round: only the weak upstream has the Responses API, and a weak answer the
    # checks reject is not escalated to a strong one that cannot take the request.
    weak.finish = "length"
    other = make_server(strong_responses="chat", escalate_on="length")
    with access_log(caplog) as log:
        r = respond(other, HARD_Q, tools=[{"type": "file_search", "vector_store_ids": ["vs_1"]}])
        assert r.status_code == 200 and r.json()["status"] == "incomplete", r.text
        assert (r.headers["x-routellm-role"], r.headers["x-routellm-reason"]) == ("weak", "needs_responses_api")
        assert "x-routellm-escalated-from" not in r.headers and len(strong.requests) == 1
        [entry] = log.wait(lambda e: e.get("event") == "responses")
    assert entry["needs"] == "tools[0].type" and entry["reason"] == "needs_responses_api"


def test_a_request_only_the_strong_upstream_can_take_is_refused_once_the_budget_is_spent(make_server, strong):
    server = make_server(weak_responses="chat", prices=PRICES, strong_budget=1.5 * STRONG_RESPONSE)
    tools = [{"type": "web_search"}]
    r = respond(server, EASY_Q, tools=tools)  # within the budget: strong, charged
    assert r.status_code == 200 and r.headers["x-routellm-reason"] == "needs_responses_api"
    assert metric(server, "routellm_budget_spent_dollars") == pytest.approx(STRONG_RESPONSE, abs=1e-12)
    r = respond(server, EASY_Q, tools=tools)
    assert metric(server, "routellm_budget_spent_dollars") == pytest.approx(2 * STRONG_RESPONSE, abs=1e-12)
    n = len(strong.requests)
    r = respond(server, EASY_Q, tools=tools)
    error = r.json()["error"]
    assert r.status_code == 429 and error["code"] == "budget_exhausted" and error["param"] == "tools[0].type"
    assert "weak one cannot take it" in error["message"] and len(strong.requests) == n


def test_a_chat_upstream_keeps_no_responses_to_continue_or_retrieve(make_server, strong, weak):
    server = make_server(weak_responses="chat")
    made = respond(server, EASY_Q).json()["id"]
    r = respond(server, HARD_Q, previous_response_id=made)
    assert r.status_code == 400 and r.json()["error"]["param"] == "previous_response_id"
    assert "keeps no responses" in r.json()["error"]["message"]
    r = httpx.get(f"{server.url_v1}/responses/{made}")
    assert r.status_code == 404 and "chat completions" in r.json()["error"]["message"]
    assert len(weak.requests) == 1 and not strong.requests


def test_a_translated_stream_asks_for_usage_and_counts_it(make_server, weak):
    server = make_server(weak_responses="chat")
    weak.stream_usage = "openai"  # usage only when asked, as OpenAI
    with httpx.stream("POST", f"{server.url_v1}/responses", json={"input": EASY_Q, "stream": True}) as r:
        raw = b"".join(r.iter_raw())
    events = events_of(raw)
    assert weak.requests[-1]["stream_options"] == {"include_usage": True}
    assert events[-1]["type"] == "response.completed"
    assert events[0]["response"]["id"] == events[-1]["response"]["id"] == "resp_rlw_resp_chatcmpl-standin"
    assert events[-1]["response"]["usage"]["output_tokens"] == 5
    assert metric(server, "routellm_tokens_total", 'kind="completion",role="weak"') == 5
    # An upstream that refuses stream_options is asked once, then no more.
    weak.refuse_stream_options = True
    for _ in range(2):
        with httpx.stream("POST", f"{server.url_v1}/responses", json={"input": EASY_Q, "stream": True}) as r:
            assert events_of(b"".join(r.iter_raw()))[-1]["type"] == "response.completed"
    assert ["stream_options" in body for body in weak.requests[1:]] == [True, False, False]
    # one memory of it, the chat path's: /health lists the upstream
    assert httpx.get(f"{server.url}/health").json()["stream_options_refused_by"] == ["weak"]


def test_a_cut_off_translated_weak_stream_escalates_to_the_strong_model(make_server, strong, weak):
    server = make_server(weak_responses="chat", escalate_on="length")
    weak.finish = "length"
    with httpx.stream("POST", f"{server.url_v1}/responses", json={"input": EASY_Q, "stream": True}) as r:
        assert r.headers["x-routellm-escalated-from"] == "weak"
        assert r.headers["x-routellm-escalation-reason"] == "length: the answer was cut off (finish reason 'max_output_tokens')"
        events = events_of(b"".join(r.iter_raw()))
    assert events[-1]["response"]["id"] == "resp_rls_resp_strong_0"
    assert "messages" in weak.requests[-1] and strong.requests[-1]["input"] == EASY_Q


def test_a_translated_strong_answer_is_charged_to_the_budget(make_server, strong, weak):
    server = make_server(strong_responses="chat", prices=PRICES, strong_budget=1.0)
    r = respond(server, HARD_Q)
    assert r.status_code == 200 and r.headers["x-routellm-role"] == "strong"
    assert "messages" in strong.requests[-1]
    assert metric(server, "routellm_budget_spent_dollars") == pytest.approx((7 * 10.0 + 3 * 30.0) / 1e6)


# The official clients ----------------------------------------------------------------------
def test_the_openai_client_creates_streams_and_calls_tools_through_a_chat_upstream(make_server, strong, weak):
    openai = pytest.importorskip("openai")
    server = make_server(weak_responses="chat")
    client = openai.OpenAI(base_url=server.url_v1, api_key="unused", max_retries=0)
    response = client.responses.create(model="routellm", input=EASY_Q)
    assert response.output_text == "weak answers" and response.id.startswith("resp_rlw_")
    # The SDK's stream helper accumulates the events into the same answer.
    with client.responses.stream(model="routellm", input=EASY_Q) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == "Hello from the stand-in."
    # A tool call, then its output sent back: the chat upstream sees the call and the result.
    weak.tool_calls = [("get_weather", '{"city": "Paris"}')]
    called = client.responses.create(model="routellm", input=EASY_Q, tools=[WEATHER])
    call = called.output[0]
    assert (call.type, call.name, call.arguments, call.call_id) == ("function_call", "get_weather",
                                                                     '{"city": "Paris"}', "call_0")
    history = [{"role": "user", "content": EASY_Q}, call.model_dump(exclude_none=True),
               {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}]
    client.responses.create(model="routellm", input=history, tools=[WEATHER])
    sent = weak.requests[-1]["messages"]
    assert sent[1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert sent[2] == {"role": "tool", "tool_call_id": "call_0", "content": "sunny"}
    assert weak.requests[-1]["tools"][0]["function"]["name"] == "get_weather"
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="routellm", input=EASY_Q, previous_response_id=response.id)
    assert "keeps no responses" in str(caught.value)


def test_langchain_chat_openai_on_the_responses_api_through_a_chat_upstream(make_server, strong, weak):
    pytest.importorskip("langchain_openai")
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_openai import ChatOpenAI

    server = make_server(weak_responses="chat", strong_responses="chat")
    llm = ChatOpenAI(model="routellm", base_url=server.url_v1, api_key="unused", use_responses_api=True,
                     max_retries=0)
    assert llm.invoke(EASY_Q).text == "weak answers"
    assert "".join(chunk.text for chunk in llm.stream(HARD_Q)) == "Hello from the stand-in."
    assert "messages" in strong.requests[-1] and strong.requests[-1]["stream"] is True
    weak.tool_calls = [("get_weather", '{"city": "Paris"}')]
    message = llm.bind_tools([WEATHER]).invoke(EASY_Q)
    assert message.tool_calls == [{"name": "get_weather", "args": {"city": "Paris"}, "id": "call_0",
                                   "type": "tool_call"}]
    weak.stream_usage = "openai"
    streamed = None
    for chunk in llm.bind_tools([WEATHER]).stream(EASY_Q):
        streamed = chunk if streamed is None else streamed + chunk
    assert streamed.tool_calls[0]["name"] == "get_weather" and streamed.tool_calls[0]["args"] == {"city": "Paris"}
    assert streamed.usage_metadata["output_tokens"] == len(weak.words)  # as the stand-in counts it
    # The call's result sent back as LangChain sends a tool message: the chat upstream reads it.
    answer = llm.bind_tools([WEATHER]).invoke([HumanMessage(EASY_Q), message,
                                               ToolMessage("sunny", tool_call_id=message.tool_calls[0]["id"])])
    assert answer.text == "weak answers" and not answer.tool_calls
    sent = weak.requests[-1]["messages"]
    assert sent[-2]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert sent[-1] == {"role": "tool", "tool_call_id": "call_0", "content": "sunny"}


def test_langchain_chat_openai_keeps_a_reasoning_models_thoughts_through_a_chat_upstream(make_server, weak):
    pytest.importorskip("langchain_openai")
    from langchain_core.messages import HumanMessage
    from langchain_openai import ChatOpenAI

    server = make_server(weak_responses="chat", strong_responses="chat")
    weak.reasoning = "The user greets me."
    llm = ChatOpenAI(model="routellm", base_url=server.url_v1, api_key="unused", use_responses_api=True,
                     max_retries=0)
    message = llm.invoke(EASY_Q)
    assert message.text == "weak answers"
    assert message.content[0]["type"] == "reasoning"
    assert message.content[0]["content"] == [{"type": "reasoning_text", "text": "The user greets me."}]
    llm.invoke([HumanMessage(EASY_Q), message, HumanMessage("Again.")])
    assert weak.requests[-1]["messages"][1] == {"role": "assistant", "content": "weak answers",
                                                "reasoning_content": "The user greets me."}
    # LangChain's streamed message keeps the reasoning item but not its text (it reads summary deltas
    # only): sent back, that empty item adds nothing, and the turn goes through.
    streamed = None
    for chunk in llm.stream(EASY_Q):
        streamed = chunk if streamed is None else streamed + chunk
    assert streamed.content[0]["type"] == "reasoning" and streamed.text == "Hello from the stand-in."
    answer = llm.invoke([HumanMessage(EASY_Q), streamed, HumanMessage("Again.")])
    assert answer.text == "weak answers"
    assert weak.requests[-1]["messages"][1] == {"role": "assistant", "content": "Hello from the stand-in."}


def _agents():
    agents = pytest.importorskip("agents")  # the OpenAI Agents SDK (openai-agents)
    agents.set_tracing_disabled(True)  # it would send traces to OpenAI
    return agents


def test_the_openai_agents_sdk_runs_an_agent_with_a_tool_through_a_chat_upstream(make_server, strong, weak):
    """The Agents SDK's default model is the Responses API: an agent whose model is the routing
    server runs its loop (call, tool, result, answer) against an upstream with chat completions only."""
    agents = _agents()
    openai = pytest.importorskip("openai")
    server = make_server(weak_responses="chat")
    seen = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        seen.append(city)
        return f"sunny in {city}"

    def agent():  # a client a run's event loop owns (run_sync and asyncio.run each make one)
        model = agents.OpenAIResponsesModel("routellm", openai.AsyncOpenAI(base_url=server.url_v1, api_key="unused",
                                                                           max_retries=0))
        return agents.Agent(name="weather", instructions="Use the tool.", model=model, tools=[get_weather])

    weak.tool_calls = [("get_weather", '{"city": "Paris"}')]
    result = agents.Runner.run_sync(agent(), EASY_Q)
    assert seen == ["Paris"] and result.final_output == "weak answers"
    first, second = weak.requests[-2:]
    assert first["messages"][0] == {"role": "system", "content": "Use the tool."}
    assert first["tools"][0]["function"]["name"] == "get_weather"
    assert second["messages"][-1] == {"role": "tool", "tool_call_id": "call_0", "content": "sunny in Paris"}
    assert not strong.requests  # both turns routed on the user's easy question
    # Streamed, through the SDK's event stream.
    weak.tool_calls = [("get_weather", '{"city": "Rome"}')]

    async def streamed():
        run = agents.Runner.run_streamed(agent(), EASY_Q)
        kinds = [event.type async for event in run.stream_events()]
        return run.final_output, kinds

    final, kinds = asyncio.run(streamed())
    assert final == "Hello from the stand-in." and seen == ["Paris", "Rome"]
    assert "raw_response_event" in kinds and "run_item_stream_event" in kinds


def test_a_reasoning_models_thoughts_reach_the_clients_and_go_back_with_the_next_turn(make_server, strong, weak):
    """A reasoning model on a chat upstream (``reasoning_content``, as llama.cpp's server sends
    it): the openai client and its stream helper get its reasoning item, and the Agents SDK,
    which sends a turn's items back with the tool's result, has it reach the model again."""
    agents = _agents()
    openai = pytest.importorskip("openai")
    server = make_server(weak_responses="chat")
    weak.reasoning = "The user wants a greeting."
    client = openai.OpenAI(base_url=server.url_v1, api_key="unused", max_retries=0)
    response = client.responses.create(model="routellm", input=EASY_Q)
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.output[0].content[0].text == "The user wants a greeting." and response.output_text == \
        "weak answers"
    with client.responses.stream(model="routellm", input=EASY_Q) as stream:
        thoughts = [e.delta for e in stream if e.type == "response.reasoning_text.delta"]
        final = stream.get_final_response()
    assert "".join(thoughts) == final.output[0].content[0].text == "The user wants a greeting."
    assert final.output_text == "Hello from the stand-in."

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    model = agents.OpenAIResponsesModel("routellm", openai.AsyncOpenAI(base_url=server.url_v1, api_key="unused",
                                                                       max_retries=0))
    weak.tool_calls = [("get_weather", '{"city": "Paris"}')]
    result = agents.Runner.run_sync(agents.Agent(name="weather", model=model, tools=[get_weather]), EASY_Q)
    assert result.final_output == "weak answers"
    turn = weak.requests[-1]["messages"]
    assert turn[-2]["reasoning_content"] == "The user wants a greeting."
    assert turn[-2]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert turn[-1] == {"role": "tool", "tool_call_id": "call_0", "content": "sunny in Paris"}
