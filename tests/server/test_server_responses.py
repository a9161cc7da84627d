"""The Responses API (``/v1/responses``) over the stand-in upstreams on 127.0.0.1: routing,
response ids pinned to the upstream that made them, follow-ups, streams, stored responses,
the budget; and the official ``openai`` client and LangChain's ``ChatOpenAI`` through it."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from server_support import PRICES, STRONG_RESPONSE, access_log, metric
from shared_core.ledger import prompt_token_bound
from shared_core.routers import Role
from shared_core.server.responses import (
    pinned_id,
    response_pin,
    response_stream_view,
    response_token_bounds,
    response_view,
    responses_call_context,
)

HARD_Q = "Please prove that there are infinitely many primes."
EASY_Q = "Say hello."


def respond(server, input, **body):
    return httpx.post(f"{server.url_v1}/responses", json={"model": "routellm", "input": input, **body}, timeout=30)


# Routing and ids ---------------------------------------------------------------------------
def test_routed_on_the_last_user_message_with_every_other_field_unchanged(make_server, strong, weak):
    server = make_server()
    extra = {"temperature": 0.2, "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
             "metadata": {"k": "v"}, "store": True, "max_output_tokens": 64}
    r = respond(server, HARD_Q, instructions="Be careful.", **extra)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (r.headers["x-routellm-role"], r.headers["x-routellm-model"]) == ("strong", "strong-model")
    assert body["routellm"]["role"] == "strong" and body["routellm"]["reason"] == "score"
    assert body["id"] == pinned_id(Role.STRONG, "resp_strong_0") == "resp_rls_resp_strong_0"
    assert body["output"][0]["content"][0]["text"] == "strong answers"
    sent = strong.requests[-1]
    assert sent == {"model": "strong-model", "input": HARD_Q, "instructions": "Be careful.", **extra}
    assert not weak.requests
    # An item list: the last user message is what is scored, not the instructions or the assistant turn.
    items = [{"role": "user", "content": "Please prove it."},
             {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Done."}]},
             {"role": "user", "content": [{"type": "input_text", "text": EASY_Q}]}]
    r = respond(server, items, instructions="prove everything")
    assert r.headers["x-routellm-role"] == "weak" and r.json()["id"].startswith("resp_rlw_")
    assert weak.requests[-1]["input"] == items


def test_a_follow_up_goes_to_the_upstream_that_made_the_response_unscored(make_server, strong, weak):
    server = make_server()
    first = respond(server, HARD_Q).json()
    r = respond(server, EASY_Q, previous_response_id=first["id"])  # weak on its own text
    assert r.status_code == 200, r.text
    assert (r.headers["x-routellm-role"], r.headers["x-routellm-reason"]) == ("strong", "previous_response")
    assert "x-routellm-score" not in r.headers and r.json()["routellm"]["score"] is None
    assert strong.requests[-1]["previous_response_id"] == "resp_strong_0"  # the upstream's own id
    assert r.json()["previous_response_id"] == first["id"]  # as the client knows it
    assert r.json()["id"] == "resp_rls_resp_strong_1"
    assert not weak.requests
    # and a weak thread stays weak, whatever its next message says
    easy = respond(server, EASY_Q).json()
    r = respond(server, HARD_Q, previous_response_id=easy["id"])
    assert r.headers["x-routellm-role"] == "weak" and weak.requests[-1]["previous_response_id"] == "resp_weak_0"


def test_a_follow_up_does_not_fall_back_to_the_upstream_without_the_conversation(make_server, strong, weak):
    server = make_server(fallback=True)
    first = respond(server, HARD_Q).json()
    strong.mode, strong.status = "error", 503
    r = respond(server, HARD_Q)  # a new conversation falls back, and its ids are the weak model's
    assert (r.status_code, r.headers["x-routellm-role"], r.headers["x-routellm-fallback-from"]) == \
        (200, "weak", "strong")
    assert r.json()["id"].startswith("resp_rlw_")
    n_weak = len(weak.requests)
    r = respond(server, EASY_Q, previous_response_id=first["id"])
    assert r.status_code == 503 and r.json()["routellm"]["role"] == "strong"
    assert len(weak.requests) == n_weak


@pytest.mark.parametrize("body, param, status", [
    ({"model": "routellm"}, "input", 400),
    ({"input": []}, "input", 400),
    ({"input": 3}, "input", 400),
    ({"input": ["hi"]}, "input[0]", 400),
    ({"input": [{"role": "robot", "content": "hi"}]}, "input[0].role", 400),
    ({"input": "hi", "instructions": 5}, "instructions", 400),
    ({"input": "hi", "stream": "yes"}, "stream", 400),
    ({"input": "hi", "previous_response_id": "resp_made_elsewhere"}, "previous_response_id", 400),
    ({"input": "hi", "conversation": "conv_123"}, "conversation", 400),
    ({"input": "hi", "background": True}, "background", 400),
])
def test_bad_requests_are_refused_before_any_upstream_call(make_server, strong, weak, body, param, status):
    server = make_server()
    r = httpx.post(f"{server.url_v1}/responses", json=body, timeout=30)
    assert r.status_code == status and r.json()["error"]["param"] == param, r.text
    assert not strong.requests and not weak.requests


def test_too_many_input_items_are_refused(make_server):
    server = make_server(max_messages=2)
    r = respond(server, [{"role": "user", "content": "a"}] * 3)
    assert r.status_code == 400 and r.json()["error"]["code"] == "too_many_messages"


def test_pinned_ids_round_trip_and_refuse_other_strings():
    for role in Role:
        assert response_pin(pinned_id(role, "resp_x_1")) == (role, "resp_x_1")
    for other in ("resp_abc", "resp_rl", "resp_rlx_abc", "resp_rls-abc", ""):
        assert response_pin(other) is None


# Streams -----------------------------------------------------------------------------------
def test_a_stream_passes_the_events_with_the_response_ids_pinned_and_counts_its_usage(make_server, strong):
    server = make_server(prices=PRICES)
    with httpx.stream("POST", f"{server.url_v1}/responses", timeout=30,
                      json={"model": "routellm", "input": HARD_Q, "stream": True}) as r:
        assert r.headers["x-routellm-role"] == "strong"
        raw = r.read()
    events = [json.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: ")]
    assert [e["type"] for e in events][:2] == ["response.created", "response.in_progress"]
    assert events[-1]["type"] == "response.completed"
    assert {e["response"]["id"] for e in events if "response" in e} == {"resp_rls_resp_strong_0"}
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert "".join(deltas) == "".join(strong.words)
    # the event lines and the lines without a response object pass byte for byte
    assert raw.count(b"event: response.output_text.delta\n") == 5
    assert b'"delta":" from","sequence_number":5}\n' in raw
    assert metric(server, "routellm_tokens_total", 'kind="prompt",role="strong"') == 11.0
    assert metric(server, "routellm_tokens_total", 'kind="completion",role="strong"') == 4.0
    assert metric(server, "routellm_cost_dollars_total", 'role="strong"') == pytest.approx(STRONG_RESPONSE, abs=1e-12)
    assert metric(server, "routellm_requests_total", 'path="/v1/responses",status="200"') == 1.0


def test_an_upstream_error_mid_stream_ends_it_with_an_error_event(make_server, strong):
    server = make_server()
    strong.mode = "drop"
    with httpx.stream("POST", f"{server.url_v1}/responses", timeout=30,
                      json={"input": HARD_Q, "stream": True}) as r:
        raw = r.read()
    assert raw.endswith(b"\n\n") and b"event: error\ndata: " in raw
    error = json.loads(raw.split(b"event: error\ndata: ")[1])
    assert error["type"] == "error" and "strong" in error["message"]


# Stored responses --------------------------------------------------------------------------
def test_retrieve_list_items_and_delete_reach_the_upstream_that_holds_the_response(make_server, strong, weak):
    server = make_server()
    made = respond(server, EASY_Q).json()
    r = httpx.get(f"{server.url_v1}/responses/{made['id']}")
    assert r.status_code == 200 and r.json()["id"] == made["id"] and r.json()["model"] == "weak-model"
    r = httpx.get(f"{server.url_v1}/responses/{made['id']}/input_items", params={"limit": "5", "order": "asc"})
    assert r.status_code == 200 and r.json()["data"][0]["content"][0]["text"] == EASY_Q
    assert weak.stored_requests[-1] == ("GET", "/v1/responses/resp_weak_0/input_items", "limit=5&order=asc")
    r = httpx.delete(f"{server.url_v1}/responses/{made['id']}")
    assert r.json() == {"id": made["id"], "object": "response.deleted", "deleted": True}
    assert httpx.get(f"{server.url_v1}/responses/{made['id']}").status_code == 404  # the upstream's answer
    assert not strong.stored_requests
    r = httpx.get(f"{server.url_v1}/responses/resp_abc")
    assert r.status_code == 404 and r.json()["error"]["param"] == "response_id"


def test_stored_responses_need_the_client_token_like_every_endpoint(make_server, weak):
    server = make_server(env={"ROUTELLM_SERVE_AUTH_TOKENS": "tok-1"})
    made = httpx.post(f"{server.url_v1}/responses", json={"input": EASY_Q},
                      headers={"authorization": "Bearer tok-1"}, timeout=30).json()
    assert httpx.get(f"{server.url_v1}/responses/{made['id']}").status_code == 401
    assert httpx.post(f"{server.url_v1}/responses", json={"input": EASY_Q}).status_code == 401
    assert not weak.stored_requests and len(weak.requests) == 1


# The budget --------------------------------------------------------------------------------
def test_a_strong_follow_up_is_charged_and_refused_once_the_budget_is_spent(make_server, strong):
    server = make_server(prices=PRICES, strong_budget=1.5 * STRONG_RESPONSE)
    first = respond(server, HARD_Q).json()
    assert metric(server, "routellm_budget_spent_dollars") == pytest.approx(STRONG_RESPONSE, abs=1e-12)
    r = respond(server, EASY_Q, previous_response_id=first["id"])  # within the budget: strong, charged
    assert r.status_code == 200 and r.headers["x-routellm-role"] == "strong"
    assert metric(server, "routellm_budget_spent_dollars") == pytest.approx(2 * STRONG_RESPONSE, abs=1e-12)
    n = len(strong.requests)
    r = respond(server, EASY_Q, previous_response_id=first["id"])
    assert r.status_code == 429 and r.json()["error"]["code"] == "budget_exhausted", r.text
    assert r.json()["error"]["param"] == "previous_response_id" and len(strong.requests) == n
    r = respond(server, HARD_Q)  # a new conversation is routed: weak, budget_exhausted
    assert (r.status_code, r.headers["x-routellm-role"], r.headers["x-routellm-reason"]) == \
        (200, "weak", "budget_exhausted")


def test_a_strong_stream_the_client_leaves_is_charged_its_bound(make_server, strong):
    server = make_server(prices=PRICES, strong_budget=1.0)
    strong.delay = 0.5
    body = {"model": "routellm", "input": HARD_Q, "stream": True, "max_output_tokens": 200}
    with httpx.stream("POST", f"{server.url_v1}/responses", json=body, timeout=30) as r:
        assert r.headers["x-routellm-role"] == "strong"
        assert next(r.iter_raw()).startswith(b"event: response.created\ndata: ")
    assert strong.stream_cancelled.wait(timeout=5.0), "the strong stream was left open"
    bound = (prompt_token_bound([json.dumps(body, ensure_ascii=False)], 1), 200)
    assert response_token_bounds(body) == bound
    deadline = time.monotonic() + 5.0
    while metric(server, "routellm_budget_spent_dollars") == 0.0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert metric(server, "routellm_budget_spent_dollars") == pytest.approx(
        (bound[0] * 10.0 + bound[1] * 30.0) / 1e6, abs=1e-12)
    assert metric(server, "routellm_budget_without_usage_total", 'charged="bound"') == 1.0


def test_a_left_follow_up_stream_has_no_bound_and_is_charged_the_reserve(make_server, strong, caplog):
    """The upstream adds the stored conversation to a follow-up's input, which the server never sees."""
    server = make_server(prices=PRICES, strong_budget=1.0, budget_reserve=0.01)
    first = respond(server, HARD_Q).json()
    strong.delay = 0.5
    body = {"input": EASY_Q, "stream": True, "max_output_tokens": 200, "previous_response_id": first["id"]}
    with access_log(caplog) as log:
        with httpx.stream("POST", f"{server.url_v1}/responses", json=body, timeout=30) as r:
            assert r.headers["x-routellm-reason"] == "previous_response"
            next(r.iter_raw())
        assert strong.stream_cancelled.wait(timeout=5.0)
        logged = log.wait(lambda entry: "budget_charged" in entry)
    assert metric(server, "routellm_budget_spent_dollars") == pytest.approx(STRONG_RESPONSE + 0.01, abs=1e-12)
    assert logged[-1]["event"] == "responses" and logged[-1]["budget_charged"] == {"reserve": 0.01}


# Escalation -------------------------------------------------------------------------------
def test_a_weak_response_the_checks_reject_is_answered_by_the_strong_model(make_server, strong, weak):
    server = make_server(prices=PRICES, escalate_on="refusal,empty")
    weak.text = "I'm sorry, but I can't help with that."
    r = respond(server, EASY_Q)
    assert r.status_code == 200, r.text
    assert (r.headers["x-routellm-role"], r.headers["x-routellm-escalated-from"]) == ("strong", "weak")
    body = r.json()
    assert body["id"] == "resp_rls_resp_strong_0" and body["output"][0]["content"][0]["text"] == "strong answers"
    assert body["routellm"]["escalations"][0]["usage"] == {"prompt_tokens": 11, "completion_tokens": 4}
    assert weak.requests[-1]["input"] == strong.requests[-1]["input"] == EASY_Q
    for role in ("weak", "strong"):  # each answer counted once
        assert metric(server, "routellm_tokens_total", f'kind="prompt",role="{role}"') == 11.0
    assert metric(server, "routellm_escalations_total", 'check="refusal",from_role="weak"') == 1.0


def test_a_cut_off_weak_stream_escalates_and_the_client_gets_the_strong_events(make_server, strong, weak):
    server = make_server(escalate_on="length")
    weak.finish = "length"
    with httpx.stream("POST", f"{server.url_v1}/responses", timeout=30,
                      json={"input": EASY_Q, "stream": True}) as r:
        assert r.headers["x-routellm-escalated-from"] == "weak"
        raw = r.read()
    events = [json.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: ")]
    assert events[-1]["type"] == "response.completed" and events[-1]["response"]["id"].startswith("resp_rls_")
    assert b"resp_weak" not in raw  # nothing of the rejected stream reaches the client


def test_a_follow_up_is_not_escalated_to_a_model_without_the_conversation(make_server, strong, weak):
    server = make_server(escalate_on="refusal")
    first = respond(server, EASY_Q).json()
    weak.text = "I'm sorry, but I can't help with that."
    r = respond(server, "and again?", previous_response_id=first["id"])
    assert r.headers["x-routellm-role"] == "weak" and "x-routellm-escalated-from" not in r.headers
    assert not strong.requests


def test_what_the_checks_see_of_a_response():
    response = {"status": "completed", "output": [
        {"type": "reasoning", "summary": []},
        {"type": "message", "content": [{"type": "output_text", "text": "A"}, {"type": "refusal", "refusal": "B"}]},
        {"type": "function_call", "name": "f", "arguments": '{"x": 1}', "call_id": "c1"},
        {"type": "function_call", "name": "g", "arguments": "{not json"}]}
    view = response_view(response)
    assert (view.text, view.finish_reason) == ("AB", "completed")
    assert [(c.name, c.args) for c in view.tool_calls] == [("f", {"x": 1}), ("g", "{not json")]
    cut = response_view({"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}})
    assert cut.finish_reason == "max_output_tokens" and cut.text == ""
    # a stream that broke before its last response object: the text of its deltas
    chunks = [b'event: response.created\n',
              b'data: {"type":"response.created","response":{"id":"r","status":"in_progress"}}\n\n',
              b'data: {"type":"response.output_text.delta","delta":"Hel"}\n\ndata: {"type":"response.output_',
              b'text.delta","delta":"lo"}\n\n']
    broken = response_stream_view(chunks)
    assert (broken.text, broken.finish_reason) == ("Hello", "in_progress")
    context = responses_call_context({
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object", "required": ["x"]}},
                  {"type": "web_search"}],
        "tool_choice": "required",
        "text": {"format": {"type": "json_schema", "name": "s", "schema": {"type": "array"}}}})
    assert context.tools == {"f": {"type": "object", "required": ["x"]}} and context.tool_required
    assert context.output_schema == {"type": "array"}
    assert responses_call_context({"text": {"format": {"type": "text"}}}).output_schema is None


# Real clients ------------------------------------------------------------------------------
def test_the_official_openai_client_creates_continues_streams_and_retrieves(make_server, strong, weak):
    openai = pytest.importorskip("openai")
    server = make_server()
    client = openai.OpenAI(base_url=server.url_v1, api_key="unused", max_retries=0)
    first = client.responses.create(model="routellm", input=HARD_Q)
    assert first.output_text == "strong answers" and first.model == "strong-model"
    follow = client.responses.create(model="routellm", input=EASY_Q, previous_response_id=first.id)
    assert follow.model == "strong-model" and follow.previous_response_id == first.id
    assert client.responses.retrieve(follow.id).id == follow.id
    with client.responses.stream(model="routellm", input=EASY_Q) as events:
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        final = events.get_final_response()
    assert text == "".join(weak.words) and final.id.startswith("resp_rlw_") and final.usage.output_tokens == 4
    raw = client.responses.with_raw_response.create(model="routellm", input=EASY_Q)
    assert raw.headers["x-routellm-role"] == "weak"
    with pytest.raises(openai.BadRequestError, match="not the id of a response this server made"):
        client.responses.create(model="routellm", input=EASY_Q, previous_response_id="resp_elsewhere")


def test_langchain_chat_openai_on_the_responses_api(make_server, strong, weak):
    pytest.importorskip("langchain_openai")
    from langchain_openai import ChatOpenAI

    server = make_server()
    llm = ChatOpenAI(model="routellm", base_url=server.url_v1, api_key="unused", use_responses_api=True,
                     max_retries=0)
    answer = llm.invoke(HARD_Q)
    assert answer.text == "strong answers" and answer.response_metadata["id"].startswith("resp_rls_")
    assert answer.usage_metadata["input_tokens"] == 11 and strong.requests[-1]["model"] == "strong-model"
    chunks = list(llm.stream(EASY_Q))
    assert "".join(c.text for c in chunks) == "".join(weak.words)
    # use_previous_response_id: LangChain sends the last AI message's id as previous_response_id
    chained = ChatOpenAI(model="routellm", base_url=server.url_v1, api_key="unused", use_responses_api=True,
                         use_previous_response_id=True, max_retries=0)
    follow = chained.invoke([("human", HARD_Q), answer, ("human", EASY_Q)])
    assert follow.text == "strong answers" and strong.requests[-1]["previous_response_id"] == "resp_strong_0"
