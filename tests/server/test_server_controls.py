"""The server's cost controls over the stand-in upstreams on 127.0.0.1: the strong
budget, the strong-share controller, escalation, and what /health and /metrics say."""

from __future__ import annotations

import asyncio
import json
import re
import time

import httpx
import numpy as np
import pytest

from server_support import PRICES, STRONG_CALL, STRONG_KEY, WEAK_KEY, KeywordRouter, access_log, metric, sse_chunks
from shared_core.controller import ShareController
from shared_core.engine import RoutingEngine
from shared_core.errors import ConfigError
from shared_core.escalation import AnswerChecks
from shared_core.routers import Router
from shared_core.server import cli
from shared_core.server.app import create_app
from shared_core.server.config import load_config
from shared_core.server.protocol import call_context, completion_view, header_text, stream_view

HARD_Q = "Please prove that there are infinitely many primes."
EASY_Q = "Say hello."
REFUSAL = "I'm sorry, but I can't help with that."


def chat(server, content, **body):
    return httpx.post(f"{server.url_v1}/chat/completions", timeout=30,
                      json={"messages": [{"role": "user", "content": content}], **body})


def stream(server, content, **body):
    with httpx.stream("POST", f"{server.url_v1}/chat/completions", timeout=30,
                      json={"messages": [{"role": "user", "content": content}], "stream": True, **body}) as r:
        return r, r.read()


# The strong budget ------------------------------------------------------------------------
def test_strong_calls_stop_at_the_cap_with_reason_budget_exhausted(make_server, strong, weak):
    # A reserve of one strong call makes the cap hard: 3 calls fit in $0.0005, a 4th would not.
    server = make_server(prices=PRICES, strong_budget=0.0005, budget_period=3600, budget_reserve=STRONG_CALL)
    roles, reasons = [], []
    for _ in range(5):
        r = chat(server, HARD_Q)
        assert r.status_code == 200, r.text
        roles.append(r.headers["x-routellm-role"])
        reasons.append(r.headers["x-routellm-reason"])
        assert r.json()["routellm"]["reason"] == r.headers["x-routellm-reason"]
    assert roles == ["strong"] * 3 + ["weak"] * 2
    assert reasons == ["score"] * 3 + ["budget_exhausted"] * 2
    assert len(strong.requests) == 3 and len(weak.requests) == 2
    assert chat(server, EASY_Q).headers["x-routellm-reason"] == "score"  # weak on its own merits: not refused
    assert metric(server, "routellm_budget_spent_dollars") == pytest.approx(3 * STRONG_CALL, abs=1e-12)
    assert metric(server, "routellm_budget_remaining_dollars") == pytest.approx(0.0005 - 3 * STRONG_CALL, abs=1e-12)
    assert metric(server, "routellm_budget_dollars") == pytest.approx(0.0005, abs=1e-15)
    assert metric(server, "routellm_budget_period_seconds") == 3600.0
    assert metric(server, "routellm_budget_exhausted_total", 'what="decision"') == 2.0
    assert metric(server, "routellm_cost_dollars_total", 'role="strong"') == pytest.approx(3 * STRONG_CALL, abs=1e-12)
    health = httpx.get(f"{server.url}/health").json()
    assert health["budget"] == {"budget": 0.0005, "period": 3600.0, "reserve": pytest.approx(STRONG_CALL, abs=1e-15),
                                "spent": pytest.approx(3 * STRONG_CALL, abs=1e-12),
                                "remaining": pytest.approx(0.0005 - 3 * STRONG_CALL, abs=1e-12)}
    assert health["prices"] == {"strong-model": {"input": 10.0, "output": 30.0},
                                "weak-model": {"input": 0.5, "output": 1.5}}
    assert "controller" not in health  # a budget over the fixed threshold


def test_a_stream_is_charged_from_its_final_usage_chunk(make_server, strong):
    server = make_server(prices=PRICES, strong_budget=1.0)
    r, body = stream(server, HARD_Q)
    assert r.headers["x-routellm-role"] == "strong"
    assert body == b"".join(sse_chunks("strong-model", strong.words))  # passed through unchanged
    # the stand-in's final chunk: 5 prompt tokens, one completion token a word
    assert metric(server, "routellm_budget_spent_dollars") == pytest.approx((5 * 10 + 5 * 30) / 1e6, abs=1e-12)


def test_a_strong_answer_without_usage_spends_the_period(make_server, strong):
    """Its cost is unknown and never taken as zero: the period's budget counts as spent."""
    server = make_server(prices=PRICES, strong_budget=1.0)
    strong.usage = False
    r, _ = stream(server, HARD_Q)
    assert r.headers["x-routellm-role"] == "strong"
    assert metric(server, "routellm_unpriced_answers_total", 'role="strong"') == 1.0
    assert metric(server, "routellm_budget_spent_dollars") >= 1.0
    assert metric(server, "routellm_budget_remaining_dollars") <= 0.0
    r = chat(server, HARD_Q)
    assert (r.headers["x-routellm-role"], r.headers["x-routellm-reason"]) == ("weak", "budget_exhausted")


def _bound_cost(body, completion_tokens):
    """What the budget charges a strong answer without usage: the request's byte bound."""
    prompt = len(json.dumps(body, ensure_ascii=False).encode()) + 8 * len(body["messages"]) + 64
    return (prompt * 10.0 + completion_tokens * 30.0) / 1e6


def test_a_strong_answer_without_usage_is_charged_its_bound_when_the_request_has_max_tokens(make_server, strong,
                                                                                              caplog):
    """With ``max_tokens`` the cost has an upper bound: the budget charges that and goes on
    (strong calls continue), instead of counting the whole period spent."""
    server = make_server(prices=PRICES, strong_budget=1.0)
    strong.usage = False
    body = {"messages": [{"role": "user", "content": HARD_Q}], "stream": True, "max_tokens": 200}
    with access_log(caplog) as log:
        r, _ = stream(server, HARD_Q, max_tokens=200)
        [entry] = log.wait()
    assert r.headers["x-routellm-role"] == "strong"
    bound = _bound_cost(body, 200)
    assert metric(server, "routellm_budget_spent_dollars") == pytest.approx(bound, abs=1e-12)
    assert metric(server, "routellm_budget_without_usage_total", 'charged="bound"') == 1.0
    assert metric(server, "routellm_unpriced_answers_total", 'role="strong"') == 1.0  # still not priced
    assert entry["budget_charged"]["bound"] == pytest.approx(bound, abs=1e-12)
    assert entry["budget_charged"]["completion_tokens"] == 200
    r = chat(server, HARD_Q)
    assert (r.headers["x-routellm-role"], r.headers["x-routellm-reason"]) == ("strong", "score")  # not exhausted


def test_a_client_leaving_a_strong_stream_costs_its_bound_not_the_period(make_server, strong):
    """A chat client's stop button: the stream is left before its usage chunk, the upstream
    closed. With ``max_tokens`` the budget charges the request's bound and strong calls go on."""
    server = make_server(prices=PRICES, strong_budget=1.0, budget_reserve=STRONG_CALL)
    strong.delay = 0.5  # the whole stream would take seconds
    body = {"messages": [{"role": "user", "content": HARD_Q}], "stream": True, "max_tokens": 300}
    with httpx.stream("POST", f"{server.url_v1}/chat/completions", json=body, timeout=30) as r:
        assert r.headers["x-routellm-role"] == "strong"
        assert next(r.iter_raw()).startswith(b"data: ")
    assert strong.stream_cancelled.wait(timeout=5.0), "the strong stream was left open"
    deadline = time.monotonic() + 5.0
    while metric(server, "routellm_budget_spent_dollars") == 0.0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert metric(server, "routellm_budget_spent_dollars") == pytest.approx(_bound_cost(body, 300), abs=1e-12)
    assert metric(server, "routellm_budget_remaining_dollars") == pytest.approx(1.0 - _bound_cost(body, 300), abs=1e-12)
    strong.delay = 0.0
    r = chat(server, HARD_Q)
    assert (r.headers["x-routellm-role"], r.headers["x-routellm-reason"]) == ("strong", "score")


def test_the_official_client_closing_a_strong_stream_costs_its_bound(make_server, strong):
    """The openai SDK's stream closed after its first chunk (what a chat UI's stop button does)."""
    openai = pytest.importorskip("openai")
    server = make_server(prices=PRICES, strong_budget=1.0)
    strong.delay = 0.5
    client = openai.OpenAI(base_url=server.url_v1, api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": HARD_Q}]
    with client.chat.completions.create(model="routellm", messages=messages, stream=True, max_tokens=64) as chunks:
        assert next(iter(chunks)).model == "strong-model"
    assert strong.stream_cancelled.wait(timeout=5.0), "the strong stream was left open"
    body = {"model": "routellm", "messages": messages, "stream": True, "max_tokens": 64}
    deadline = time.monotonic() + 5.0
    while metric(server, "routellm_budget_spent_dollars") == 0.0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert metric(server, "routellm_budget_spent_dollars") == pytest.approx(_bound_cost(body, 64), abs=1e-12)


def test_a_bound_uses_max_completion_tokens_and_n_and_keeps_reported_counts(make_server, strong):
    server = make_server(prices=PRICES, strong_budget=1.0)
    strong.usage = False
    stream(server, HARD_Q, max_completion_tokens=50, max_tokens=999, n=2)
    body = {"messages": [{"role": "user", "content": HARD_Q}], "stream": True, "max_completion_tokens": 50,
            "max_tokens": 999, "n": 2}
    assert metric(server, "routellm_budget_spent_dollars") == pytest.approx(_bound_cost(body, 100), abs=1e-12)


@pytest.mark.parametrize("extra", [
    {},  # no max tokens: no bound on the answer
    {"max_tokens": 0},
    {"max_tokens": True},
    {"max_tokens": 100, "modalities": ["text", "audio"]},
    {"max_tokens": 100, "prediction": {"type": "content", "content": "x"}},
    {"max_tokens": 100, "n": "2"},
])
def test_without_a_bound_an_answer_without_usage_still_spends_the_period(make_server, strong, extra):
    server = make_server(prices=PRICES, strong_budget=1.0)
    strong.usage = False
    stream(server, HARD_Q, **extra)
    assert metric(server, "routellm_budget_spent_dollars") >= 1.0
    assert metric(server, "routellm_budget_without_usage_total", 'charged="period"') == 1.0


def test_an_image_in_the_request_has_no_byte_bound(make_server, strong):
    server = make_server(prices=PRICES, strong_budget=1.0)
    strong.usage = False
    content = [{"type": "text", "text": HARD_Q}, {"type": "image_url", "image_url": {"url": "http://x/a.png"}}]
    stream(server, content, max_tokens=100)
    assert metric(server, "routellm_budget_spent_dollars") >= 1.0


def test_the_strong_models_max_output_bounds_a_request_without_max_tokens(make_server, strong):
    server = make_server(prices=PRICES, strong_budget=1.0, budget_reserve=0.01, strong_max_output_tokens=4096)
    strong.usage = False
    stream(server, HARD_Q)  # no max_tokens: the strong model's maximum output bounds the answer
    body = {"messages": [{"role": "user", "content": HARD_Q}], "stream": True}
    assert metric(server, "routellm_budget_spent_dollars") == pytest.approx(_bound_cost(body, 4096), abs=1e-12)
    assert metric(server, "routellm_budget_without_usage_total", 'charged="bound"') == 1.0
    stream(server, HARD_Q, max_tokens=10)  # the request's own max_tokens comes first
    assert metric(server, "routellm_budget_spent_dollars") == pytest.approx(
        _bound_cost(body, 4096) + _bound_cost({**body, "max_tokens": 10}, 10), abs=1e-12)
    assert httpx.get(f"{server.url}/health").json()["strong_max_output_tokens"] == 4096


def test_strong_max_output_tokens_is_for_a_budget_and_positive():
    base = {"strong_base_url": "http://127.0.0.1:1/v1", "strong_model": "s", "weak_base_url": "http://127.0.0.1:2/v1",
            "weak_model": "w"}
    with pytest.raises(ConfigError, match="strong_max_output_tokens .* is for strong_budget"):
        load_config({**base, "strong_max_output_tokens": 100}, env={})
    with pytest.raises(ConfigError, match="strong_max_output_tokens"):
        load_config({**base, "prices": PRICES | {"s": [1, 1], "w": [1, 1]}, "strong_budget": 1.0,
                     "strong_max_output_tokens": 0}, env={})
    config = load_config({**base, "prices": {"s": [1, 1], "w": [1, 1]}, "strong_budget": 1.0},
                         env={"ROUTELLM_SERVE_STRONG_MAX_OUTPUT_TOKENS": "16384"})
    assert config.strong_max_output_tokens == 16384


def test_without_a_bound_a_reserve_is_charged_instead_of_the_period(make_server, strong, caplog):
    server = make_server(prices=PRICES, strong_budget=1.0, budget_reserve=0.01)
    strong.usage = False
    with access_log(caplog) as log:
        stream(server, HARD_Q)  # no max_tokens
        [entry] = log.wait()
    assert metric(server, "routellm_budget_spent_dollars") == pytest.approx(0.01, abs=1e-15)
    assert metric(server, "routellm_budget_without_usage_total", 'charged="reserve"') == 1.0
    assert entry["budget_charged"] == {"reserve": 0.01}
    assert chat(server, HARD_Q).headers["x-routellm-role"] == "strong"  # strong calls go on


def test_a_failed_strong_call_frees_its_reservation(make_server, strong):
    server = make_server(prices=PRICES, strong_budget=0.0005, budget_reserve=STRONG_CALL)
    strong.mode = "error"
    for _ in range(4):  # more failures than reservations fit: each one is released, nothing charged
        assert chat(server, HARD_Q).status_code == 500
    strong.mode = "ok"
    r = chat(server, HARD_Q)
    assert r.status_code == 200 and r.headers["x-routellm-role"] == "strong"
    assert metric(server, "routellm_budget_spent_dollars") == pytest.approx(STRONG_CALL, abs=1e-12)


def test_a_client_gone_before_the_response_starts_still_settles_and_logs(strong, weak, caplog):
    """The client is gone by the time the stream's response is sent (its ASGI ``receive``
    says ``http.disconnect`` at once) and is slow to take the headers, so the response
    is cancelled before its body starts: the upstream is closed all the same, the
    reservation settled (no usage came, so the period counts as spent) and the request
    logged, none of it left to garbage collection or the end of the period."""
    config = load_config({"strong_base_url": strong.url, "strong_model": "strong-model", "weak_base_url": weak.url,
                          "weak_model": "weak-model", "prices": PRICES, "strong_budget": 1.0,
                          "budget_reserve": STRONG_CALL},
                         env={"ROUTELLM_STRONG_API_KEY": STRONG_KEY, "ROUTELLM_WEAK_API_KEY": WEAK_KEY})
    app = create_app(config, RoutingEngine(KeywordRouter(), 0.5))
    strong.delay = 0.2  # between chunks: the stream would still be running when the client left
    body = json.dumps({"messages": [{"role": "user", "content": HARD_Q}], "stream": True}).encode()
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
             "query_string": b"", "root_path": "", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80),
             "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")]}
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):  # a slow client: sending the headers takes a while
        sent.append(message)
        await asyncio.sleep(0.05)

    with access_log(caplog) as log:
        asyncio.run(app(scope, receive, send))
    assert strong.stream_cancelled.wait(timeout=5.0), "the strong stream was left open"
    assert not any(m.get("body") for m in sent)  # nothing reached the client
    [entry] = log.entries()
    assert (entry["status"], entry["role"], entry["error"]) == (200, "strong", "client_disconnected")
    budget = app.state.routellm.budget
    # settled, no reservation left held: no usage came and the request sets no max tokens, so it is charged
    # the reserve (at least one strong call's cost)
    assert budget.spent == pytest.approx(STRONG_CALL, abs=1e-15)
    assert budget.remaining == pytest.approx(1.0 - STRONG_CALL, abs=1e-15)


def test_with_a_budget_a_router_chosen_per_request_is_refused(make_server):
    server = make_server(prices=PRICES, strong_budget=1.0)
    r = chat(server, HARD_Q, model="router-random-0.0")
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "model_not_allowed"
    assert "outside the strong budget" in r.json()["error"]["message"]


# The strong-share controller --------------------------------------------------------------
class NumberRouter(Router):
    """The score is the number the prompt ends with (``"score 0.25"``), else 0.5."""

    name = "number"

    def _score(self, prompts: list[str]) -> np.ndarray:
        return np.array([float(p.split()[-1]) if p.startswith("score ") else 0.5 for p in prompts])


def test_share_controller_moves_the_threshold_as_the_library_one_does(make_server):
    server = make_server(engine=RoutingEngine(NumberRouter(), 0.9), target_strong_share=0.3, controller_window=50)
    library = ShareController(0.3, window=50)  # the same defaults, fed the same scores from the same start
    scores = [round((i * 0.618) % 1, 6) for i in range(120)]
    served = []
    for score in scores:
        r = chat(server, f"score {score}")
        served.append((r.headers["x-routellm-role"], float(r.headers["x-routellm-threshold"])))
    expected = [library.decide(s, 0.9) for s in scores]
    assert served == [(c.role.value, pytest.approx(c.threshold, abs=1e-12)) for c in expected]
    thresholds = [t for _, t in served]
    assert thresholds[0] == 0.9 and min(thresholds) < 0.8  # it moved, down towards the 70% quantile
    roles = [role for role, _ in served]
    assert roles[:50].count("strong") == 4  # threshold 0.9 held until 50 scores are seen
    assert roles[-50:].count("strong") == pytest.approx(15, abs=5)  # near 30% (a 50-call window swings)
    health = httpx.get(f"{server.url}/health").json()
    assert health["controller"] == {"kind": "share", "target_strong_share": 0.3, "window": 50,
                                    "threshold": pytest.approx(library.threshold, abs=1e-12),
                                    "realised_share": pytest.approx(library.realised_share, abs=1e-12)}
    assert metric(server, "routellm_controller_threshold") == pytest.approx(library.threshold, abs=1e-12)
    assert metric(server, "routellm_controller_strong_share") == pytest.approx(library.realised_share, abs=1e-12)
    assert metric(server, "routellm_controller_target_strong_share") == 0.3


def test_share_controller_under_a_budget(make_server):
    server = make_server(engine=RoutingEngine(NumberRouter(), 0.5), target_strong_share=0.5, prices=PRICES,
                         strong_budget=1.0)
    assert chat(server, "score 0.7").headers["x-routellm-role"] == "strong"
    health = httpx.get(f"{server.url}/health").json()
    assert health["controller"]["realised_share"] == 1.0 and health["budget"]["spent"] == pytest.approx(STRONG_CALL)


# Escalation -------------------------------------------------------------------------------
@pytest.mark.parametrize("text, check", [("", "empty"), ("   ", "empty"), (REFUSAL, "refusal")])
def test_a_rejected_weak_answer_goes_to_the_strong_model(make_server, strong, weak, text, check, caplog):
    server = make_server(escalate_on="empty,refusal", prices=PRICES)
    weak.text = text
    with access_log(caplog) as log:
        r = chat(server, EASY_Q, temperature=0.1)
    access = log.entries()
    assert [(a["escalated_from"], a["escalation_check"], a["role"]) for a in access] == [("weak", check, "strong")]
    assert "sorry" not in caplog.text  # the check's name is logged, not the answer it quotes
    assert r.status_code == 200, r.text
    assert r.headers["x-routellm-role"] == "strong" and r.headers["x-routellm-model"] == "strong-model"
    assert r.headers["x-routellm-escalated-from"] == "weak"
    assert r.headers["x-routellm-escalation-reason"].startswith(f"{check}: ")
    assert r.headers["x-routellm-reason"] == "score"  # the router's decision was weak, for its score
    data = r.json()
    assert data["choices"][0]["message"]["content"] == "strong answers"
    assert data["routellm"]["escalated"] == {"from": "weak", "model": "weak-model",
                                             "reason": r.headers["x-routellm-escalation-reason"]}
    assert data["routellm"]["escalations"][0]["usage"] == {"prompt_tokens": 7, "completion_tokens": 3,
                                                           "total_tokens": 10}
    assert weak.requests == [{**strong.requests[0], "model": "weak-model"}]  # the same call, re-sent once
    assert metric(server, "routellm_escalations_total", f'check="{check}",from_role="weak"') == 1.0
    for role, (p_in, p_out) in (("strong", PRICES["strong-model"]), ("weak", PRICES["weak-model"])):
        assert metric(server, "routellm_tokens_total", f'kind="prompt",role="{role}"') == 7.0  # each once
        assert metric(server, "routellm_cost_dollars_total", f'role="{role}"') == pytest.approx(
            (7 * p_in + 3 * p_out) / 1e6, abs=1e-12)


def test_an_accepted_weak_answer_is_not_escalated(make_server, strong):
    server = make_server(escalate_on="all")
    r = chat(server, EASY_Q)
    assert r.headers["x-routellm-role"] == "weak" and "x-routellm-escalated-from" not in r.headers
    assert "escalated" not in r.json()["routellm"] and strong.requests == []
    strong.text = ""  # a strong answer is never checked
    r = chat(server, HARD_Q)
    assert r.headers["x-routellm-role"] == "strong" and "x-routellm-escalated-from" not in r.headers


@pytest.mark.parametrize("words, finish, check", [
    (["I cannot", " help", " with that."], "stop", "refusal"),
    ([], "stop", "empty"),
    (["The answer", " is"], "length", "length"),
])
def test_a_rejected_weak_stream_is_buffered_and_escalated(make_server, strong, weak, words, finish, check):
    server = make_server(escalate_on="empty,refusal,length", prices=PRICES)
    weak.words, weak.finish = words, finish
    r, body = stream(server, EASY_Q)
    assert r.status_code == 200
    assert r.headers["x-routellm-role"] == "strong" and r.headers["x-routellm-escalated-from"] == "weak"
    assert r.headers["x-routellm-escalation-reason"].startswith(f"{check}: ")
    assert body == b"".join(sse_chunks("strong-model", strong.words))  # none of the weak answer reached the client
    assert len(weak.requests) == 1 and len(strong.requests) == 1
    assert metric(server, "routellm_tokens_total", 'kind="completion",role="weak"') == len(words)
    assert metric(server, "routellm_tokens_total", 'kind="completion",role="strong"') == len(strong.words)
    assert metric(server, "routellm_cost_dollars_total", 'role="weak"') == pytest.approx(
        (5 * 0.5 + len(words) * 1.5) / 1e6, abs=1e-12)
    assert metric(server, "routellm_escalations_total", f'check="{check}",from_role="weak"') == 1.0


@pytest.mark.parametrize("streamed", [False, True])
def test_a_rejected_answer_is_counted_when_the_escalation_fails(make_server, strong, weak, streamed):
    server = make_server(escalate_on="empty", prices=PRICES)
    weak.text, weak.words, strong.mode = "", [], "error"
    r = stream(server, EASY_Q)[0] if streamed else chat(server, EASY_Q)
    assert r.status_code == 500  # the strong model's error: the rejected answer is not sent
    assert len(weak.requests) == 1 and len(strong.requests) == 1
    # ... but it was made and is paid for: counted and priced once, as an escalation
    assert metric(server, "routellm_escalations_total", 'check="empty",from_role="weak"') == 1.0
    prompt = metric(server, "routellm_tokens_total", 'kind="prompt",role="weak"')
    completion = metric(server, "routellm_tokens_total", 'kind="completion",role="weak"')
    assert prompt > 0
    assert metric(server, "routellm_cost_dollars_total", 'role="weak"') == pytest.approx(
        (prompt * 0.5 + completion * 1.5) / 1e6, abs=1e-12)


def test_an_accepted_weak_stream_passes_through_after_the_check(make_server, weak):
    server = make_server(escalate_on="empty,refusal")
    r, body = stream(server, EASY_Q)
    assert r.headers["x-routellm-role"] == "weak" and "x-routellm-escalated-from" not in r.headers
    assert body == b"".join(sse_chunks("weak-model", weak.words))


def test_with_the_budget_spent_an_escalation_is_not_made(make_server, strong, weak):
    server = make_server(escalate_on="empty", prices=PRICES, strong_budget=0.0001, budget_reserve=0.001)
    weak.text = ""
    r = chat(server, EASY_Q)
    assert r.status_code == 200
    assert r.headers["x-routellm-role"] == "weak" and "x-routellm-escalated-from" not in r.headers
    assert r.headers["x-routellm-escalation-refused"] == "budget_exhausted"
    assert r.headers["x-routellm-escalation-reason"].startswith("empty: ")
    assert r.json()["routellm"]["escalation_refused"]["because"] == "budget_exhausted"
    assert strong.requests == []
    assert metric(server, "routellm_budget_exhausted_total", 'what="escalation"') == 1.0


def test_escalation_within_the_budget_is_charged(make_server, weak):
    server = make_server(escalate_on="refusal", prices=PRICES, strong_budget=1.0, budget_reserve=0.01)
    weak.text = REFUSAL
    r = chat(server, EASY_Q)
    assert r.headers["x-routellm-escalated-from"] == "weak"
    health = httpx.get(f"{server.url}/health").json()
    assert health["budget"]["spent"] == pytest.approx(STRONG_CALL, abs=1e-12)
    assert health["budget"]["remaining"] == pytest.approx(1.0 - STRONG_CALL, abs=1e-12)  # reservation settled
    assert health["escalate_on"] == ["refusal"]


# The answer as the checks see it (pure) ---------------------------------------------------
def test_views_of_completions_streams_and_what_the_request_asked_for():
    tools = [{"type": "function", "function": {"name": "add", "parameters": {
        "type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}}}]
    context = call_context({"tools": tools, "tool_choice": "required"})
    assert context.tool_required and set(context.tools) == {"add"}
    checks = AnswerChecks.from_spec(["tool_calls", "structured"])
    call = {"function": {"name": "add", "arguments": '{"a": "one"}'}}
    view = completion_view({"choices": [{"message": {"content": None, "tool_calls": [call]}}]})
    assert checks.reason(view, context) == "tool_calls: tool call 'add': args.a must be integer, got str 'one'"
    events = [b'data: {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": '
              b'{"name": "add", "arguments": "{\\"a\\""}}]}}]}\n\n',
              b'data: {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": '
              b'{"arguments": ": 2}"}}]}, "finish_reason": "tool_calls"}]}\n\ndata: [DONE]\n\n']
    view = stream_view(events)
    assert [(c.name, c.args) for c in view.tool_calls] == [("add", {"a": 2})] and view.finish_reason == "tool_calls"
    assert checks.reason(view, context) is None
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    structured = call_context({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}})
    assert checks.reason(completion_view({"choices": [{"message": {"content": '{"n": 1}'}}]}), structured) is None
    assert checks.reason(completion_view({"choices": [{"message": {"content": "n is 1"}}]}), structured).startswith(
        "structured: structured output is not JSON")
    assert header_text("the answer is a refusal ('I can’t')\nnext") == "the answer is a refusal ('I can\\u2019t') next"


# Start-up ---------------------------------------------------------------------------------
def test_serve_refuses_bad_controls_before_binding(capsys):
    base = ["serve", "--strong-base-url", "http://127.0.0.1:9/v1", "--strong-model", "strong-model",
            "--weak-base-url", "http://127.0.0.1:9/v1", "--weak-model", "weak-model", "--router", "random"]

    def run(*extra):
        import argparse

        parser = argparse.ArgumentParser(prog="routellm")
        cli.add_parser(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args([*base, *extra])
        with pytest.raises(ConfigError) as info:
            args.func(args)
        return str(info.value)

    assert "strong_budget (2.0) needs prices" in run("--strong-budget", "2")
    assert "escalate_on[0] is 'polite'; known checks: empty, refusal, length" in run("--escalate-on", "polite")
    assert "workers=2 each worker would hold its own" in run("--target-strong-share", "0.3", "--workers", "2")
    assert "router 'random' ships none; serve a router that ships them" in run("--target-strong-share", "0.3")
    with pytest.raises(SystemExit):  # argparse: not allowed with argument --threshold
        cli.main([*base, "--threshold", "0.3", "--target-strong-share", "0.2"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_ray_refuses_the_per_process_controls():
    from shared_core.server.config import load_config
    from shared_core.server.ray_serve import check_controls

    base = {"strong_base_url": "http://127.0.0.1:9/v1", "strong_model": "s", "weak_base_url": "http://127.0.0.1:9/v1",
            "weak_model": "w"}
    with pytest.raises(ConfigError, match="target_strong_share keeps its state in one process, and on Ray Serve"):
        check_controls(load_config({**base, "target_strong_share": 0.3}, env={}))
    check_controls(load_config({**base, "escalate_on": "empty", "prices": {"s": [1, 1], "w": [1, 1]}}, env={}))


def test_create_app_takes_prices_once(strong, weak):
    from shared_core.server.app import create_app
    from shared_core.server.config import load_config

    flags = {"strong_base_url": strong.url, "strong_model": "strong-model", "weak_base_url": weak.url,
             "weak_model": "weak-model", "prices": PRICES}
    with pytest.raises(ConfigError, match="give them once"):
        create_app(load_config(flags, env={}), RoutingEngine(KeywordRouter(), 0.5), prices=PRICES)


def test_the_readme_example_starts_with_these_settings(tmp_path, monkeypatch):
    """The README's server cost-control example: its price table and flags make the settings it describes."""
    import argparse
    import shlex
    from pathlib import Path

    from shared_core.controller import BudgetController, ShareController
    from shared_core.server.config import load_config

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    part = text[text.index("### Cost controls on the server"):text.index("### Scale-out on Ray")]
    toml = re.search(r"```toml\n(.*?)```", part, re.S).group(1)
    command = re.search(r"```bash\n(.*?)```", part, re.S).group(1).replace("\\\n", " ")
    (tmp_path / "prices.toml").write_text(toml)
    monkeypatch.chdir(tmp_path)
    words = shlex.split(command)
    parser = argparse.ArgumentParser(prog="routellm")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(words[words.index("serve"):])
    config = load_config(cli._flags(args), env={})  # noqa: SLF001 - the flags as `routellm serve` reads them
    assert config.prices == {"gpt-4o": {"input": 2.5, "output": 10.0}, "llama3.2": {"input": 0.0, "output": 0.0}}
    budget = config.controller()
    assert isinstance(budget, BudgetController) and (budget.budget, budget.period, budget.reserve) == (5.0, 86400.0, 0.05)
    assert isinstance(budget.inner, ShareController) and budget.inner.target == 0.3
    assert config.escalate_on == ("empty", "refusal")


def test_an_engine_with_its_own_budget_needs_prices(strong, weak):
    from shared_core.controller import BudgetController
    from shared_core.server.app import create_app
    from shared_core.server.config import load_config

    flags = {"strong_base_url": strong.url, "strong_model": "strong-model", "weak_base_url": weak.url,
             "weak_model": "weak-model"}
    engine = RoutingEngine(KeywordRouter(), 0.5, controller=BudgetController(1.0))
    with pytest.raises(ConfigError, match="a strong budget needs prices"):
        create_app(load_config(flags, env={}), engine)
    with pytest.raises(ConfigError, match="is not the one the settings ask for"):
        create_app(load_config({**flags, "target_strong_share": 0.3}, env={}), engine)
    app = create_app(load_config(flags, env={}), engine, prices=PRICES)
    assert app.state.routellm.budget is engine.controller
