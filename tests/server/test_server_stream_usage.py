"""The server asks the upstream for every stream's usage (``stream_options.include_usage``)
and sends the client only what it asked for, over stand-ins that stream as OpenAI does
(usage only when asked: ``"usage": null`` on every chunk, then a usage-only chunk)."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from server_support import openai_sse_chunks
from shared_core.errors import ConfigError
from shared_core.server import cli
from shared_core.server.app import _UsageScanner
from shared_core.server.config import load_config

PRICES = {"strong-model": [10.0, 30.0], "weak-model": [0.5, 1.5]}
HARD_Q = "Please prove that there are infinitely many primes."
EASY_Q = "Say hello."
WORDS = ["Hello", " from", " the", " stand-in", "."]
#: What a stand-in stream (5 prompt tokens, one completion token a word) costs on the strong model.
STRONG_STREAM = (5 * 10.0 + len(WORDS) * 30.0) / 1e6


@pytest.fixture(autouse=True)
def _as_openai(strong, weak):
    strong.stream_usage = weak.stream_usage = "openai"


def stream(server, content, **body):
    with httpx.stream("POST", f"{server.url_v1}/chat/completions", timeout=30,
                      json={"messages": [{"role": "user", "content": content}], "stream": True, **body}) as r:
        return r, r.read()


def metrics(server) -> str:
    return httpx.get(f"{server.url}/metrics").text


def metric(server, sample: str) -> float:
    """One sample of ``/metrics`` by its name and labels (``name{label="x"}``)."""
    found = [float(line.rsplit(" ", 1)[1]) for line in metrics(server).splitlines()
             if line.rsplit(" ", 1)[0] == sample]
    assert len(found) == 1, f"{sample} in /metrics: {found}"
    return found[0]


def test_an_ordinary_client_stream_is_charged_its_real_usage(make_server, strong):
    server = make_server(prices=PRICES, strong_budget=1.0)
    r, body = stream(server, HARD_Q)  # no stream_options: the openai SDK's and curl's default
    assert r.headers["x-routellm-role"] == "strong"
    assert strong.requests[0]["stream_options"] == {"include_usage": True}
    assert body == b"".join(openai_sse_chunks("strong-model", WORDS, include_usage=False))  # as if never asked
    assert b'"usage"' not in body
    assert metric(server, "routellm_budget_spent_dollars") == pytest.approx(STRONG_STREAM, abs=1e-12)
    assert metric(server, "routellm_budget_remaining_dollars") == pytest.approx(1.0 - STRONG_STREAM, abs=1e-12)
    assert metric(server, 'routellm_strong_cost_dollars_total{role="strong"}') == pytest.approx(STRONG_STREAM,
                                                                                                  abs=1e-12)
    assert not re.search(r"^routellm_unpriced_answers_total", metrics(server), re.M)
    r, _ = stream(server, HARD_Q)
    assert (r.headers["x-routellm-role"], r.headers["x-routellm-reason"]) == ("strong", "score")  # budget left
    assert metric(server, "routellm_budget_spent_dollars") == pytest.approx(2 * STRONG_STREAM, abs=1e-12)


@pytest.mark.parametrize("options", [{"include_usage": False}, {"include_obfuscation": False}, None])
def test_the_upstream_is_asked_and_the_client_gets_no_usage(make_server, weak, options):
    server = make_server(prices=PRICES)
    r, body = stream(server, EASY_Q, **({} if options is None else {"stream_options": options}))
    assert r.status_code == 200 and r.headers["x-routellm-role"] == "weak"
    assert weak.requests[0]["stream_options"] == {**(options or {}), "include_usage": True}  # other keys kept
    assert body == b"".join(openai_sse_chunks("weak-model", WORDS, include_usage=False))
    assert metric(server, 'routellm_tokens_total{kind="completion",role="weak"}') == len(WORDS)
    assert metric(server, 'routellm_cost_dollars_total{role="weak"}') == pytest.approx(
        (5 * 0.5 + len(WORDS) * 1.5) / 1e6, abs=1e-12)


def test_a_client_that_asked_for_usage_gets_it_unchanged(make_server, weak):
    server = make_server()
    options = {"include_usage": True, "include_obfuscation": False}
    _, asked = stream(server, EASY_Q, stream_options=options)
    _, not_asked = stream(server, EASY_Q)
    assert weak.requests[0]["stream_options"] == options  # sent on as it was
    assert asked == b"".join(openai_sse_chunks("weak-model", WORDS, include_usage=True))  # nothing removed
    assert b'"usage"' not in not_asked
    assert metric(server, 'routellm_tokens_total{kind="prompt",role="weak"}') == 2 * 5  # both read


@pytest.mark.parametrize("size", [1, 7, 50])
def test_usage_lines_split_across_upstream_chunks(make_server, strong, size):
    strong.chunk_size = size  # every line split, the usage chunk's too
    whole = b"".join(openai_sse_chunks("strong-model", WORDS, include_usage=True))
    at = whole.index(b'"choices":[]')
    start, end = whole.rindex(b"data:", 0, at), whole.index(b"\n", at)
    assert start // size != end // size  # the stand-in does cut the usage line
    server = make_server(prices=PRICES, strong_budget=1.0)
    _, body = stream(server, HARD_Q)
    assert body == b"".join(openai_sse_chunks("strong-model", WORDS, include_usage=False))
    assert metric(server, "routellm_budget_spent_dollars") == pytest.approx(STRONG_STREAM, abs=1e-12)
    _, body = stream(server, HARD_Q, stream_options={"include_usage": True})
    assert body == whole
    assert metric(server, "routellm_budget_spent_dollars") == pytest.approx(2 * STRONG_STREAM, abs=1e-12)


def test_with_stream_usage_off_the_request_goes_as_sent(make_server, strong, weak):
    server = make_server(prices=PRICES, strong_budget=1.0, stream_usage=False)
    assert httpx.get(f"{server.url}/health").json()["stream_usage"] is False
    r, body = stream(server, HARD_Q, stream_options={"include_obfuscation": False})
    assert r.headers["x-routellm-role"] == "strong"
    assert strong.requests[0]["stream_options"] == {"include_obfuscation": False}
    assert body == b"".join(openai_sse_chunks("strong-model", WORDS, include_usage=False))
    # the old behaviour: the strong stream's cost is unknown, so the period counts as spent
    assert metric(server, 'routellm_unpriced_answers_total{role="strong"}') == 1.0
    assert metric(server, "routellm_budget_remaining_dollars") <= 0.0
    r, _ = stream(server, HARD_Q)
    assert (r.headers["x-routellm-role"], r.headers["x-routellm-reason"]) == ("weak", "budget_exhausted")
    assert "stream_options" not in weak.requests[0]


@pytest.mark.parametrize("rejected", [True, False])
def test_a_buffered_weak_stream_is_priced(make_server, strong, weak, rejected):
    """With escalation the weak stream is buffered while checked: a rejected one is now
    priced from its usage, an accepted one is sent without it."""
    server = make_server(escalate_on="empty", prices=PRICES, strong_budget=1.0, budget_reserve=0.001)
    weak.words = [] if rejected else WORDS
    r, body = stream(server, EASY_Q)
    assert r.headers["x-routellm-role"] == ("strong" if rejected else "weak")
    answer = ("strong-model", WORDS) if rejected else ("weak-model", WORDS)
    assert body == b"".join(openai_sse_chunks(*answer, include_usage=False))
    assert metric(server, 'routellm_tokens_total{kind="prompt",role="weak"}') == 5
    assert metric(server, 'routellm_cost_dollars_total{role="weak"}') == pytest.approx(
        (5 * 0.5 + len(weak.words) * 1.5) / 1e6, abs=1e-12)
    assert not re.search(r"^routellm_unpriced_answers_total", metrics(server), re.M)  # every answer priced
    spent = STRONG_STREAM if rejected else 0.0
    assert metric(server, "routellm_budget_spent_dollars") == pytest.approx(spent, abs=1e-12)
    if rejected:
        assert r.headers["x-routellm-escalated-from"] == "weak"
        assert metric(server, 'routellm_escalations_total{check="empty",from_role="weak"}') == 1.0


# The scanner, byte by byte (pure) ---------------------------------------------------------
def _events(*chunks: dict, end: bytes = b"\n") -> bytes:
    return b"".join(b"data: " + json.dumps(c, separators=(",", ":"), ensure_ascii=False).encode() + end + end
                    for c in chunks) + b"data: [DONE]" + end + end


@pytest.mark.parametrize("end", [b"\n", b"\r\n"])
def test_the_scanner_strips_at_any_split(end):
    usage = {"prompt_tokens": 5, "completion_tokens": 2}
    sent = _events({"id": "c", "choices": [{"index": 0, "delta": {"content": "Grüße"}}], "usage": None},
                   {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None},
                   {"id": "c", "choices": [], "usage": usage}, end=end)
    expected = _events({"id": "c", "choices": [{"index": 0, "delta": {"content": "Grüße"}}]},
                       {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}, end=end)
    for cut in range(len(sent) + 1):
        for strip, want in ((True, expected), (False, sent)):
            scanner = _UsageScanner(strip)
            out = scanner.feed(sent[:cut]) + scanner.feed(sent[cut:]) + scanner.flush()
            assert (out, scanner.usage) == (want, usage), (cut, strip)


def test_the_scanner_keeps_what_it_does_not_remove():
    keep = [b": a comment\n", b'data: {"choices":[{"delta":{}}],"usage":{"prompt_tokens":1,"completion_tokens":1}}\n',
            b'data: {"choices": [{"delta": {"content": "usage"}}]}\n', b'data: {"usage": null, "x":\n', b"\n"]
    scanner = _UsageScanner(strip=True)
    assert b"".join(scanner.feed(line) for line in keep) == b"".join(keep)  # byte for byte
    assert scanner.usage == {"prompt_tokens": 1, "completion_tokens": 1}  # sent unasked with a choice: left in
    scanner = _UsageScanner(strip=True)
    assert scanner.feed(b'data: {"a": 1, "usage": null}') == b""  # waits for the line's end
    assert scanner.flush() == b'data: {"a":1}'  # the stream's last line, without a newline it did not have
    long = b"data: " + b"x" * (_UsageScanner.LONG + 10)
    scanner = _UsageScanner(strip=True)
    assert scanner.feed(long) + scanner.feed(b'"usage": null}\n') == long + b'"usage": null}\n'  # not read
    scanner = _UsageScanner(strip=True)
    usage_chunk = b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}\n'
    assert scanner.feed(usage_chunk) + scanner.feed(long) + scanner.feed(b"\n\n") == long + b"\n\n"


# The setting ------------------------------------------------------------------------------
BASE = {"strong_base_url": "http://127.0.0.1:9/v1", "strong_model": "s", "weak_base_url": "http://127.0.0.1:9/v1",
        "weak_model": "w"}


@pytest.mark.parametrize("value, expected", [("false", False), ("0", False), ("off", False), ("true", True)])
def test_the_setting_from_the_environment(value, expected):
    assert load_config(BASE, env={"ROUTELLM_SERVE_STREAM_USAGE": value}).stream_usage is expected
    assert load_config(BASE, env={}).stream_usage is True  # on by default


def test_a_bad_value_names_it():
    with pytest.raises(ConfigError, match=r"stream_usage: Input should be a valid boolean.*\(got 'sometimes'\)"):
        load_config(BASE, env={"ROUTELLM_SERVE_STREAM_USAGE": "sometimes"})


def test_the_flag():
    import argparse

    parser = argparse.ArgumentParser(prog="routellm")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in BASE.items()]

    def config(*extra, env):
        return load_config(cli._flags(parser.parse_args(["serve", *flags, *extra])), env=env)  # noqa: SLF001

    off = {"ROUTELLM_SERVE_STREAM_USAGE": "false"}
    assert config(env=off).stream_usage is False  # no flag: the environment's
    assert config("--stream-usage", env=off).stream_usage is True  # the flag wins
    assert config("--no-stream-usage", env={}).stream_usage is False


def test_the_official_client_reads_both_streams(make_server, strong):
    # The openai SDK parses every chunk the server sends: the rewritten lines too.
    openai = pytest.importorskip("openai")
    server = make_server(prices=PRICES, strong_budget=1.0)
    client = openai.OpenAI(base_url=server.url_v1, api_key="unused", max_retries=0)
    for options, usage in ((None, []), ({"include_usage": True}, [(5, len(WORDS))])):
        chunks = list(client.chat.completions.create(
            model="routellm", messages=[{"role": "user", "content": HARD_Q}], stream=True,
            **({} if options is None else {"stream_options": options})))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(WORDS)
        assert [(c.usage.prompt_tokens, c.usage.completion_tokens) for c in chunks if c.usage] == usage
    spent = re.search(r"^routellm_budget_spent_dollars (\S+)$", metrics(server), re.M)
    assert float(spent.group(1)) == pytest.approx(2 * STRONG_STREAM, rel=1e-9)  # both streams charged


def test_an_upstream_that_refuses_stream_options_gets_the_request_as_sent(make_server, strong, weak):
    # A strict OpenAI-compatible server answers HTTP 400 to the field: the stream is sent again as the
    # client sent it, and that upstream is asked no more (before: every stream to it failed with 400).
    import logging

    strong.refuse_stream_options = True
    server = make_server(prices=PRICES)
    logger, seen = logging.getLogger("shared_core.server"), logging.Handler(logging.WARNING)
    warnings: list = []
    seen.emit = warnings.append  # the logger itself: other tests configure its handlers and propagation
    logger.addHandler(seen)
    try:
        response, body = stream(server, HARD_Q)
    finally:
        logger.removeHandler(seen)
    assert response.status_code == 200 and response.headers["x-routellm-role"] == "strong"
    assert [("stream_options" in r) for r in strong.requests] == [True, False]
    assert "".join(WORDS) in "".join(json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                                     for line in body.decode().splitlines() if line.startswith("data: {"))
    assert any("refused stream_options" in record.getMessage() for record in warnings)
    stream(server, HARD_Q)
    assert [("stream_options" in r) for r in strong.requests] == [True, False, False]
    assert httpx.get(f"{server.url}/health").json()["stream_options_refused_by"] == ["strong"]
    stream(server, EASY_Q)  # the weak upstream accepts it and is still asked
    assert weak.requests[-1]["stream_options"] == {"include_usage": True}
    # A client that sent stream_options itself gets the upstream's refusal, as without the server.
    response, _ = stream(server, HARD_Q, stream_options={"include_usage": True})
    assert response.status_code == 400


def test_another_bad_request_is_not_sent_again(make_server, strong):
    strong.mode, strong.status = "error", 400
    strong.error_body = {"error": {"message": "max_tokens is too large", "type": "invalid_request_error"}}
    server = make_server()
    response, _ = stream(server, HARD_Q)
    assert response.status_code == 400 and len(strong.requests) == 1
    assert httpx.get(f"{server.url}/health").json()["stream_options_refused_by"] == []
