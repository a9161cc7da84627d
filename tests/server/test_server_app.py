"""The routing app over two stand-in upstreams on 127.0.0.1: requests, answers,
decisions, streams and the OpenAI-style errors."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from unittest.mock import ANY

import httpx
import pytest

from server_support import STRONG_KEY, WEAK_KEY, KeywordRouter, closed_port, metric, sse_chunks
from shared_core.engine import RoutingEngine

HARD_Q = "Please prove that there are infinitely many primes."
EASY_Q = "Say hello."


def chat(server, body, **kwargs):
    return httpx.post(f"{server.url_v1}/chat/completions", json=body, timeout=30, **kwargs)


def test_routes_and_forwards_every_field_unchanged(make_server, strong, weak):
    server = make_server()
    tools = [{"type": "function", "function": {"name": "add", "description": "add two numbers",
                                               "parameters": {"type": "object", "properties": {"a": {"type": "number"}}}}}]
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": EASY_Q}]},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{\"a\": 1}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "prove nothing here"},  # tool text is not routed on
    ]
    body = {"model": "routellm", "messages": messages, "tools": tools, "tool_choice": "auto", "temperature": 0.2,
            "response_format": {"type": "json_object"}, "seed": 7, "max_tokens": 5, "user": "u1",
            "some_vendor_field": {"nested": [1, 2]}}
    r = chat(server, body)
    assert r.status_code == 200, r.text
    assert r.headers["x-routellm-role"] == "weak" and r.headers["x-routellm-model"] == "weak-model"
    assert float(r.headers["x-routellm-score"]) == pytest.approx(0.1, abs=1e-9)
    assert float(r.headers["x-routellm-threshold"]) == pytest.approx(0.5, abs=1e-12)
    assert r.headers["x-routellm-router"] == "keyword"
    data = r.json()
    assert data["choices"][0]["message"]["content"] == "weak answers"
    assert data["routellm"] == {"role": "weak", "model": "weak-model", "score": pytest.approx(0.1, abs=1e-9),
                                "threshold": 0.5, "router": "keyword", "reason": "score", "fallback": None,
                                "failures": [], "id": ANY}
    assert strong.requests == []
    assert weak.requests == [{**body, "model": "weak-model"}]  # only model differs

    r = chat(server, {"messages": [{"role": "user", "content": HARD_Q}]})  # no model: the default
    assert r.status_code == 200 and r.headers["x-routellm-role"] == "strong"
    assert strong.requests[-1] == {"messages": [{"role": "user", "content": HARD_Q}], "model": "strong-model"}


def test_each_key_goes_only_to_its_own_upstream(make_server, strong, weak):
    server = make_server()
    assert chat(server, {"messages": [{"role": "user", "content": HARD_Q}]}).status_code == 200
    assert chat(server, {"messages": [{"role": "user", "content": EASY_Q}]}).status_code == 200
    assert [h["authorization"] for h in strong.headers] == [f"Bearer {STRONG_KEY}"]
    assert [h["authorization"] for h in weak.headers] == [f"Bearer {WEAK_KEY}"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_redirect_is_not_followed_so_no_key_leaves_its_url(make_server, strong, weak, stream):
    strong.mode, strong.error_body = "redirect", f"{weak.url}/chat/completions"
    r = chat(make_server(fallback=False), {"messages": [{"role": "user", "content": HARD_Q}], "stream": stream})
    assert r.status_code == 502 and "HTTP 307" in r.json()["error"]["message"]
    assert weak.requests == []


def test_no_text_goes_to_on_no_text_without_score(make_server):
    server = make_server()
    r = chat(server, {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]})
    assert r.status_code == 200
    assert r.headers["x-routellm-role"] == "strong" and r.headers["x-routellm-reason"] == "no_text"
    assert "x-routellm-score" not in r.headers and r.json()["routellm"]["score"] is None
    assert metric(server, "routellm_unscored_decisions_total", 'reason="no_text",role="strong"') == 1
    chat(server, {"messages": [{"role": "user", "content": HARD_Q}]})  # scored: not counted there
    assert metric(server, "routellm_unscored_decisions_total", 'reason="no_text",role="strong"') == 1


def test_stream_passes_upstream_events_through_as_they_arrive(make_server, weak):
    weak.delay = 0.15
    server = make_server()
    arrivals, received = [], b""
    with httpx.stream("POST", f"{server.url_v1}/chat/completions", timeout=30,
                      json={"messages": [{"role": "user", "content": EASY_Q}], "stream": True}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-routellm-role"] == "weak" and r.headers["x-routellm-model"] == "weak-model"
        for chunk in r.iter_raw():
            arrivals.append(time.monotonic())
            received += chunk
    assert received == b"".join(sse_chunks("weak-model", weak.words))  # byte for byte
    assert received.endswith(b"data: [DONE]\n\n")
    # seven events 0.15 s apart: the first reached the client long before the last was sent
    assert arrivals[-1] - arrivals[0] > 0.6


def test_models_health_and_metrics(make_server):
    server = make_server(aliases={"cheap": "router-random-1.0"})
    models = httpx.get(f"{server.url_v1}/models").json()
    assert [m["id"] for m in models["data"]] == ["routellm", "cheap"]
    health = httpx.get(f"{server.url}/health").json()
    assert health == {"status": "ok", "model": "routellm", "router": "keyword", "threshold": 0.5,
                      "strong_model": "strong-model", "weak_model": "weak-model", "prices": None,
                      "escalate_on": None, "stream_usage": True, "stream_options_refused_by": [],
                      "responses": {"strong": "native", "weak": "native"}}  # no cost controls: no controller or budget
    chat(server, {"messages": [{"role": "user", "content": HARD_Q}]})
    chat(server, {"messages": [{"role": "user", "content": EASY_Q}]})
    chat(server, {"messages": [{"role": "user", "content": EASY_Q}]})
    with httpx.stream("POST", f"{server.url_v1}/chat/completions",
                      json={"messages": [{"role": "user", "content": EASY_Q}], "stream": True}) as r:
        r.read()
    text = httpx.get(f"{server.url}/metrics").text
    assert 'routellm_decisions_total{role="strong",router="keyword"} 1.0' in text
    assert 'routellm_decisions_total{role="weak",router="keyword"} 3.0' in text
    assert 'routellm_requests_total{path="/v1/chat/completions",status="200"} 4.0' in text
    assert 'routellm_tokens_total{kind="prompt",role="weak"} 19.0' in text  # 7 + 7 + 5 from the stream's usage
    assert 'routellm_tokens_total{kind="completion",role="strong"} 3.0' in text
    assert 'routellm_routing_seconds_count 4.0' in text
    assert 'routellm_upstream_seconds_count{role="weak"} 3.0' in text


def test_model_field_selects_the_engine(make_server, strong, weak):
    server = make_server(aliases={"all-weak": "router-random-1.0"})
    r = chat(server, {"model": "router-random-0.0", "messages": [{"role": "user", "content": EASY_Q}]})
    assert r.status_code == 200, r.text
    assert r.headers["x-routellm-router"] == "random" and r.headers["x-routellm-role"] == "strong"
    assert float(r.headers["x-routellm-threshold"]) == 0.0
    r = chat(server, {"model": "all-weak", "messages": [{"role": "user", "content": HARD_Q}]})
    assert r.status_code == 200 and r.headers["x-routellm-role"] == "weak"
    assert float(r.headers["x-routellm-threshold"]) == 1.0


@pytest.mark.parametrize("body, status, needle", [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "must be a JSON object"),
    (json.dumps({"model": "routellm"}).encode(), 400, "missing required parameter: 'messages'"),
    (json.dumps({"messages": "hi"}).encode(), 400, "'messages' must be a non-empty array"),
    (json.dumps({"messages": [{"content": "no role"}]}).encode(), 400, "messages[0] must be an object"),
    (json.dumps({"messages": [{"role": "user", "content": "x"}] * 4}).encode(), 400, "at most 3"),
    (json.dumps({"messages": [{"role": "user", "content": "x"}], "stream": "yes"}).encode(), 400, "'stream'"),
    (json.dumps({"model": "router-nosuch-0.5", "messages": [{"role": "user", "content": "x"}]}).encode(), 400,
     "nosuch"),
    (json.dumps({"model": "router-mf-2.5", "messages": [{"role": "user", "content": "x"}]}).encode(), 400,
     "threshold must be in [0, 1]"),
    (json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}).encode(), 404, "'gpt-4o'"),
    (json.dumps({"messages": [{"role": "user", "content": "x" * 3000}]}).encode(), 413, "at most 2048"),
])
def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(make_server, body, status, needle):
    server = make_server(max_messages=3, max_body_bytes=2048)
    r = httpx.post(f"{server.url_v1}/chat/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert needle in error["message"] and error["type"] == "invalid_request_error"
    assert set(error) == {"message", "type", "param", "code"}
    assert chat(server, {"messages": [{"role": "user", "content": EASY_Q}]}).status_code == 200


def test_body_too_large_without_content_length(make_server):
    server = make_server(max_body_bytes=1000)

    def chunks():
        for _ in range(5):
            yield b" " * 400

    r = httpx.post(f"{server.url_v1}/chat/completions", content=chunks())
    assert r.status_code == 413 and "exceeds 1000 bytes" in r.json()["error"]["message"]


def test_bearer_tokens(make_server):
    server = make_server(env={"ROUTELLM_SERVE_AUTH_TOKENS": "tok-a, tok-b"})
    body = {"messages": [{"role": "user", "content": EASY_Q}]}
    missing = chat(server, body)
    assert missing.status_code == 401 and "missing bearer token" in missing.json()["error"]["message"]
    wrong = chat(server, body, headers={"authorization": "Bearer tok-c"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    assert "tok-a" not in wrong.text
    assert chat(server, body, headers={"authorization": "Bearer tok-b"}).status_code == 200
    assert httpx.get(f"{server.url_v1}/models").status_code == 401
    assert httpx.get(f"{server.url}/metrics", headers={"authorization": "Bearer tok-a"}).status_code == 200
    assert httpx.get(f"{server.url}/health").status_code == 200  # liveness probes need no token


def test_unknown_path_is_an_openai_error(make_server):
    r = httpx.get(f"{make_server().url}/v1/nothing")
    assert r.status_code == 404 and "/v1/nothing" in r.json()["error"]["message"]


# Upstream failures -------------------------------------------------------------------------
def test_upstream_error_keeps_its_status_and_message(make_server, weak):
    weak.mode, weak.status = "error", 429
    weak.error_body = {"error": {"message": "Rate limit reached", "type": "rate_limit_error", "code": "rate_limit"}}
    server = make_server()
    r = chat(server, {"messages": [{"role": "user", "content": EASY_Q}]})
    assert r.status_code == 429
    error = r.json()["error"]
    assert "Rate limit reached" in error["message"] and "weak model 'weak-model'" in error["message"]
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit"
    assert r.headers["x-routellm-role"] == "weak" and r.json()["routellm"]["role"] == "weak"
    assert WEAK_KEY not in r.text and weak.url not in r.text


def test_upstream_plain_text_error(make_server, strong):
    strong.mode, strong.status, strong.error_body = "error", 503, "upstream overloaded"
    r = chat(make_server(), {"messages": [{"role": "user", "content": HARD_Q}]})
    assert r.status_code == 503 and "upstream overloaded" in r.json()["error"]["message"]


def test_upstream_timeout_is_504(make_server, weak):
    weak.mode, weak.delay = "stall", 3.0
    server = make_server(upstream_timeout=0.5)
    started = time.monotonic()
    r = chat(server, {"messages": [{"role": "user", "content": EASY_Q}]})
    assert r.status_code == 504 and r.json()["error"]["type"] == "timeout"
    assert time.monotonic() - started < 2.5


def test_unreachable_upstream_is_502(make_server, strong):
    server = make_server(weak_base_url=f"http://127.0.0.1:{closed_port()}/v1")
    r = chat(server, {"messages": [{"role": "user", "content": EASY_Q}]})
    assert r.status_code == 502 and "unreachable" in r.json()["error"]["message"]


def test_fallback_to_the_other_model(make_server, strong, weak):
    strong.mode, strong.status = "error", 503
    server = make_server(fallback=True)
    r = chat(server, {"messages": [{"role": "user", "content": HARD_Q}]})
    assert r.status_code == 200, r.text
    assert r.headers["x-routellm-role"] == "weak" and r.headers["x-routellm-fallback-from"] == "strong"
    record = r.json()["routellm"]
    assert record["role"] == "weak" and record["score"] == pytest.approx(0.9, abs=1e-9)
    assert record["fallback"]["from"] == "strong" and "HTTP 503" in record["fallback"]["error"]
    assert [f["role"] for f in record["failures"]] == ["strong"]
    assert len(strong.requests) == 1 and len(weak.requests) == 1


def test_fallback_when_both_fail_names_both(make_server, strong, weak):
    strong.mode, strong.status = "error", 503
    weak.mode, weak.status = "error", 500
    r = chat(make_server(fallback=True), {"messages": [{"role": "user", "content": HARD_Q}]})
    assert r.status_code == 500
    message = r.json()["error"]["message"]
    assert "strong model 'strong-model'" in message and "weak model 'weak-model'" in message


def test_no_fallback_on_a_client_error(make_server, strong, weak):
    strong.mode, strong.status = "error", 400
    r = chat(make_server(fallback=True), {"messages": [{"role": "user", "content": HARD_Q}]})
    assert r.status_code == 400 and weak.requests == []


def test_stream_fallback_before_the_first_chunk(make_server, strong, weak):
    strong.mode, strong.status = "error", 502
    server = make_server(fallback=True)
    with httpx.stream("POST", f"{server.url_v1}/chat/completions",
                      json={"messages": [{"role": "user", "content": HARD_Q}], "stream": True}) as r:
        body = r.read()
    assert r.status_code == 200 and r.headers["x-routellm-role"] == "weak"
    assert r.headers["x-routellm-fallback-from"] == "strong"
    assert body == b"".join(sse_chunks("weak-model", weak.words))


def test_stream_error_before_the_first_chunk_is_a_json_error(make_server, weak):
    weak.mode, weak.status = "error", 401
    weak.error_body = {"error": {"message": "bad upstream key", "type": "invalid_request_error"}}
    with httpx.stream("POST", f"{make_server().url_v1}/chat/completions",
                      json={"messages": [{"role": "user", "content": EASY_Q}], "stream": True}) as r:
        r.read()
    assert r.status_code == 401 and "bad upstream key" in r.json()["error"]["message"]


def test_stream_broken_mid_way_ends_with_an_error_event(make_server, weak):
    weak.mode = "drop"
    with httpx.stream("POST", f"{make_server().url_v1}/chat/completions",
                      json={"messages": [{"role": "user", "content": EASY_Q}], "stream": True}) as r:
        body = r.read()
    events = [e for e in body.split(b"\n\n") if e]
    assert events[:2] == [e.rstrip(b"\n") for e in sse_chunks("weak-model", weak.words)[:2]]
    last = json.loads(events[-1][len(b"data: "):])
    assert last["error"]["type"] == "upstream_unavailable" and b"[DONE]" not in body


def test_client_disconnect_cancels_the_upstream_stream(make_server, weak):
    weak.delay = 0.5  # the whole stream would take 3 s
    server = make_server()
    with httpx.stream("POST", f"{server.url_v1}/chat/completions",
                      json={"messages": [{"role": "user", "content": EASY_Q}], "stream": True}) as r:
        first = next(r.iter_raw())
        assert first.startswith(b"data: ")
    assert weak.stream_cancelled.wait(timeout=2.0), "the upstream stream was not cancelled"
    assert not weak.stream_finished.is_set()


def test_one_bad_request_in_a_batch_fails_alone(make_server):
    server = make_server()
    results = {}

    def send(name, text):
        results[name] = chat(server, {"messages": [{"role": "user", "content": text}]})

    threads = [threading.Thread(target=send, args=(f"ok{i}", f"{EASY_Q} {i}")) for i in range(8)]
    threads.append(threading.Thread(target=send, args=("bad", "explode")))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["bad"].status_code == 500
    assert all(results[f"ok{i}"].status_code == 200 for i in range(8))


def test_concurrent_requests_share_router_calls(make_server):
    router = KeywordRouter()
    server = make_server(engine=RoutingEngine(router, 0.5))
    assert router.calls == [["warm-up"]]  # one decision at start-up, before any client
    router.calls.clear()

    async def many():
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(*[
                client.post(f"{server.url_v1}/chat/completions",
                            json={"messages": [{"role": "user", "content": f"{HARD_Q} {i}" if i % 2 else f"q{i}"}]})
                for i in range(40)])

    responses = asyncio.run(many())
    assert [r.headers["x-routellm-role"] for r in responses] == ["weak", "strong"] * 20
    assert sum(len(c) for c in router.calls) == 40
    assert len(router.calls) < 40  # some requests were scored together
