"""Test doubles for the server tests (a name no other test directory uses).

* :class:`StandIn`: an OpenAI-compatible upstream on 127.0.0.1 whose behaviour a
  test sets (answer, fail with a status, stall, stream slowly, drop mid-stream);
  it records every request's body and headers and whether a stream was cut off.
* :class:`ServerThread`: any ASGI app under uvicorn in a thread on an ephemeral
  loopback port.
* :class:`KeywordRouter`: win rate 0.9 for prompts containing "prove", else 0.1.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import httpx
import numpy as np
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from shared_core.routers import Router
from shared_core.server.app import ACCESS_LOGGER

HARD = "prove"
#: Prices of the stand-ins' models (dollars per million input / output tokens), and what one
#: strong answer of theirs costs at them: a chat completion (7 prompt, 3 completion tokens,
#: :func:`completion`) and a response (11 input, 4 output tokens, :func:`response_object`).
PRICES = {"strong-model": [10.0, 30.0], "weak-model": [0.5, 1.5]}
STRONG_CALL = (7 * 10.0 + 3 * 30.0) / 1e6
STRONG_RESPONSE = (11 * 10.0 + 4 * 30.0) / 1e6
#: Upstream keys the tests configure (and look for where they must not be).
STRONG_KEY = "sk-strong-secret-1111"
WEAK_KEY = "sk-weak-secret-2222"


class KeywordRouter(Router):
    """Win rate 0.9 for texts containing ``HARD``, else 0.1; records each call's prompts."""

    name = "keyword"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def _score(self, prompts: list[str]) -> np.ndarray:
        self.calls.append(list(prompts))
        if any("explode" in p for p in prompts):
            raise RuntimeError("this prompt breaks the router")
        return np.array([0.9 if HARD in p.lower() else 0.1 for p in prompts])


def completion(model: str, text: str, usage: bool = True, finish: str = "stop",
               tool_calls: list[tuple[str, str]] | None = None, reasoning: str | None = None) -> dict[str, Any]:
    """A chat completion of ``text``, or with ``tool_calls`` ((name, arguments) pairs) of those
    calls; with ``reasoning``, the model's ``reasoning_content`` too (as llama.cpp's server)."""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        message = {"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": arguments}}
            for i, (name, arguments) in enumerate(tool_calls)]}
        finish = "tool_calls"
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    body: dict[str, Any] = {
        "id": "chatcmpl-standin", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }
    if usage:
        body["usage"] = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    return body


def _stream_events(model: str, words: list[str], finish: str, tool_calls: list[tuple[str, str]] | None = None,
                   reasoning: str | None = None) -> list[dict[str, Any]]:
    """A streamed answer's chunks: with ``reasoning``, its words as ``reasoning_content``
    deltas first; one word a chunk (then, with ``tool_calls``, each call: its name, then its
    arguments in two pieces), then a final chunk with the finish reason."""
    deltas: list[dict[str, Any]] = [{"reasoning_content": word} for word in re.findall(r"\S+\s*", reasoning or "")]
    deltas += [{"content": word} for word in words]
    for i, (name, arguments) in enumerate(tool_calls or []):
        half = len(arguments) // 2
        deltas += [{"tool_calls": [{"index": i, "id": f"call_{i}", "type": "function",
                                    "function": {"name": name, "arguments": ""}}]},
                   {"tool_calls": [{"index": i, "function": {"arguments": arguments[:half]}}]},
                   {"tool_calls": [{"index": i, "function": {"arguments": arguments[half:]}}]}]
        finish = "tool_calls"
    events = []
    for i, delta in enumerate(deltas):
        delta = {"role": "assistant", **delta} if i == 0 else delta
        events.append({"id": "chatcmpl-standin", "object": "chat.completion.chunk", "created": 1, "model": model,
                       "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
    events.append({"id": "chatcmpl-standin", "object": "chat.completion.chunk", "created": 1, "model": model,
                   "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    return events


def _stream_usage(words: list[str]) -> dict[str, int]:
    return {"prompt_tokens": 5, "completion_tokens": len(words), "total_tokens": 5 + len(words)}


def sse_chunks(model: str, words: list[str], usage: bool = True, finish: str = "stop",
               tool_calls: list[tuple[str, str]] | None = None, reasoning: str | None = None) -> list[bytes]:
    """The events of a streamed answer, one word a chunk (and ``tool_calls``, ``reasoning``), a
    final chunk (with usage unless ``usage`` is false), then ``[DONE]``."""
    events = _stream_events(model, words, finish, tool_calls, reasoning)
    if usage:
        events[-1]["usage"] = _stream_usage(words)
    return [f"data: {json.dumps(e)}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"]


def openai_sse_chunks(model: str, words: list[str], include_usage: bool, finish: str = "stop",
                      tool_calls: list[tuple[str, str]] | None = None, reasoning: str | None = None) -> list[bytes]:
    """The events of a streamed answer as OpenAI writes them (compact JSON): with
    ``include_usage``, every chunk has ``"usage": null`` and a last chunk with no
    choices holds the usage; without it, no chunk has a ``usage`` key."""
    events = _stream_events(model, words, finish, tool_calls, reasoning)
    if include_usage:
        events = [{**e, "usage": None} for e in events]
        events.append({"id": "chatcmpl-standin", "object": "chat.completion.chunk", "created": 1, "model": model,
                       "choices": [], "usage": _stream_usage(words)})
    return [f"data: {json.dumps(e, separators=(',', ':'))}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"]


def response_object(rid: str, model: str, text: str, usage: bool = True,
                    previous: str | None = None, cut_off: bool = False) -> dict[str, Any]:
    """A Responses API response object holding one assistant message ``text`` (``cut_off``:
    incomplete, at ``max_output_tokens``)."""
    body: dict[str, Any] = {
        "id": rid, "object": "response", "created_at": 1, "model": model,
        "status": "incomplete" if cut_off else "completed",
        "incomplete_details": {"reason": "max_output_tokens"} if cut_off else None,
        "output": [{"type": "message", "id": f"msg_{rid}", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}]}],
        "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "previous_response_id": previous,
    }
    if usage:
        body["usage"] = {"input_tokens": 11, "output_tokens": 4, "total_tokens": 15,
                         "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}
    return body


def response_sse(answer: dict[str, Any], words: list[str]) -> list[bytes]:
    """A Responses event stream of ``answer`` (one message, one word a delta) as OpenAI writes it
    (``event:`` and ``data:`` lines): ``response.created`` and ``response.in_progress`` (no output,
    no usage), the message's item and part added, the deltas, their ends, ``response.completed``
    (``response.incomplete`` for a cut-off answer)."""
    started = {**answer, "status": "in_progress", "output": [], "usage": None}
    message = answer["output"][0]
    item, part = message["id"], message["content"][0]
    at = {"item_id": item, "output_index": 0, "content_index": 0}
    events = [{"type": "response.created", "response": started},
              {"type": "response.in_progress", "response": started},
              {"type": "response.output_item.added", "output_index": 0,
               "item": {**message, "status": "in_progress", "content": []}},
              {"type": "response.content_part.added", **at, "part": {**part, "text": ""}}]
    events += [{"type": "response.output_text.delta", **at, "delta": word} for word in words]
    events += [{"type": "response.output_text.done", **at, "text": part["text"]},
               {"type": "response.content_part.done", **at, "part": part},
               {"type": "response.output_item.done", "output_index": 0, "item": message},
               {"type": f"response.{answer['status']}", "response": answer}]
    return [f"event: {e['type']}\ndata: {json.dumps({**e, 'sequence_number': i}, separators=(',', ':'))}\n\n"
            .encode() for i, e in enumerate(events)]


class StandIn:
    """An OpenAI-compatible upstream whose behaviour the test sets.

    ``mode``: ``"ok"`` (answer), ``"error"`` (``status`` with ``error_body``),
    ``"stall"`` (sleep ``delay`` seconds, then answer), ``"drop"`` (stream two
    chunks, then break the connection). Streams wait ``delay`` seconds between
    chunks. ``text`` (``None``: "<name> answers"), ``words`` (streams), ``usage``
    (whether answers report it) and ``finish`` (the finish reason) shape the answer.
    ``stream_usage``: ``"always"`` (a stream's final chunk has the usage, whatever the
    request asked) or ``"openai"`` (as OpenAI: only for ``stream_options.include_usage``,
    :func:`openai_sse_chunks`); ``chunk_size`` (bytes) re-cuts a stream into pieces
    that split its lines anywhere; ``refuse_stream_options`` answers a request with
    ``stream_options`` HTTP 400, as a strict OpenAI-compatible server does;
    ``tool_calls`` ((name, arguments) pairs) makes a chat answer those tool calls, until
    the request ends with a tool's result (then it answers as a model that read it).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.url = ""
        self.reset()
        self.app = Starlette(routes=[
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/responses", self._respond, methods=["POST"]),
            Route("/v1/responses/{rid}", self._stored, methods=["GET", "DELETE"]),
            Route("/v1/responses/{rid}/input_items", self._stored, methods=["GET"]),
        ])

    def reset(self) -> None:
        self.mode = "ok"
        self.status = 500
        self.error_body: Any = {"error": {"message": "stand-in failure", "type": "server_error", "code": None}}
        self.delay = 0.0
        self.words = ["Hello", " from", " the", " stand-in", "."]
        self.text: Any = None
        self.usage = True
        self.finish = "stop"
        self.stream_usage = "always"
        self.chunk_size = 0
        self.refuse_stream_options = False
        self.tool_calls: list[tuple[str, str]] | None = None
        self.reasoning: str | None = None  # a chat answer's reasoning_content (a reasoning model's)
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.stream_cancelled = threading.Event()
        self.stream_finished = threading.Event()
        #: The responses it made (the Responses API), by id; ``stored_requests``: (method, path, query).
        self.responses: dict[str, dict[str, Any]] = {}
        self.stored_requests: list[tuple[str, str, str]] = []

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if self.mode == "error":
            if isinstance(self.error_body, (dict, list)):
                return JSONResponse(self.error_body, status_code=self.status)
            return Response(str(self.error_body), status_code=self.status, media_type="text/plain")
        if self.refuse_stream_options and "stream_options" in body:  # as a strict OpenAI-compatible server
            return JSONResponse({"error": {"message": "Unrecognized request argument supplied: stream_options",
                                           "type": "invalid_request_error", "param": None, "code": None}},
                                status_code=400)
        if self.mode == "redirect":  # to wherever ``error_body`` says
            return Response(status_code=307, headers={"location": str(self.error_body)})
        if self.mode == "stall":
            await asyncio.sleep(self.delay)
        text = f"{self.name} answers" if self.text is None else self.text
        messages = body.get("messages") or [{}]
        calls = None if messages[-1].get("role") == "tool" else self.tool_calls
        if body.get("stream"):
            options = body.get("stream_options") or {}
            return StreamingResponse(self._events(body["model"], options.get("include_usage") is True, calls),
                                     media_type="text/event-stream")
        return JSONResponse(completion(body["model"], text, self.usage, self.finish, calls, self.reasoning))

    async def _respond(self, request: Request) -> Response:
        """``POST /v1/responses``: a response object (kept, by id), or its event stream."""
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if self.mode == "error":
            return JSONResponse(self.error_body, status_code=self.status)
        previous = body.get("previous_response_id")
        if previous is not None and previous not in self.responses:
            return JSONResponse({"error": {"message": f"Previous response with id '{previous}' not found.",
                                           "type": "invalid_request_error", "param": "previous_response_id",
                                           "code": "previous_response_not_found"}}, status_code=404)
        text = f"{self.name} answers" if self.text is None else self.text
        if body.get("stream"):
            text = "".join(self.words)
        answer = response_object(f"resp_{self.name}_{len(self.responses)}", body["model"], text, self.usage,
                                 previous, cut_off=self.finish == "length")
        self.responses[answer["id"]] = {**answer, "input": body.get("input")}
        if body.get("stream"):
            return StreamingResponse(self._paced(response_sse(answer, self.words)), media_type="text/event-stream")
        return JSONResponse(answer)

    async def _stored(self, request: Request) -> Response:
        rid = request.path_params["rid"]
        self.stored_requests.append((request.method, request.url.path, request.url.query))
        if rid not in self.responses:
            return JSONResponse({"error": {"message": f"Response with id '{rid}' not found.",
                                           "type": "invalid_request_error", "param": None, "code": None}},
                                status_code=404)
        stored = self.responses[rid]
        if request.url.path.endswith("/input_items"):
            items = stored["input"] if isinstance(stored["input"], list) else [
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": stored["input"]}]}]
            return JSONResponse({"object": "list", "data": items, "has_more": False})
        if request.method == "DELETE":
            del self.responses[rid]
            return JSONResponse({"id": rid, "object": "response.deleted", "deleted": True})
        return JSONResponse({k: v for k, v in stored.items() if k != "input"})

    async def _events(self, model: str, include_usage: bool, calls: list[tuple[str, str]] | None):
        if self.stream_usage == "openai":
            events = openai_sse_chunks(model, self.words, include_usage and self.usage, self.finish, calls,
                                       self.reasoning)
        else:
            events = sse_chunks(model, self.words, self.usage, self.finish, calls, self.reasoning)
        if self.chunk_size:
            whole = b"".join(events)
            events = [whole[i:i + self.chunk_size] for i in range(0, len(whole), self.chunk_size)]
        async for event in self._paced(events):
            yield event

    async def _paced(self, events: list[bytes]):
        """``events`` as the stand-in streams them: ``delay`` apart, dropped at the third in
        ``"drop"`` mode; ``stream_finished`` / ``stream_cancelled`` say how it ended."""
        try:
            for i, event in enumerate(events):
                if self.mode == "drop" and i == 2:
                    raise ConnectionResetError("stand-in drops the stream")
                yield event
                if self.delay and i + 1 < len(events):
                    await asyncio.sleep(self.delay)
            self.stream_finished.set()
        except asyncio.CancelledError:
            self.stream_cancelled.set()
            raise


class ServerThread:
    """Run an ASGI app with uvicorn on 127.0.0.1 in a background thread."""

    def __init__(self, app: Any, **config: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", **config))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def metric(server: "ServerThread", name: str, labels: str = "", missing: float | None = None) -> float:
    """The value of one sample of the server's ``/metrics`` (``labels``: its label text,
    ``role="weak"``); a sample not there yet (a counter never counted) is ``missing``, or
    with ``missing`` ``None`` an assertion error, as are two samples of that name."""
    text = httpx.get(f"{server.url}/metrics").text
    pattern = "^" + re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else "") + r" (\S+)$"
    found = [float(m.group(1)) for m in re.finditer(pattern, text, re.MULTILINE)]
    if not found and missing is not None:
        return missing
    assert len(found) == 1, f"{name}{{{labels}}} in /metrics: {found}"
    return found[0]


class AccessLog:
    """The access log's entries (JSON objects) that a test has collected (:func:`access_log`)."""

    def __init__(self, caplog: Any) -> None:
        self.caplog = caplog

    def entries(self) -> list[dict[str, Any]]:
        return [json.loads(r.getMessage()) for r in self.caplog.records if r.name == ACCESS_LOGGER]

    def wait(self, which: Callable[[dict[str, Any]], bool] = lambda entry: True,
             timeout: float = 5.0) -> list[dict[str, Any]]:
        """The entries ``which`` selects, once there is one: a stream is logged after its last
        byte is sent, so a client that has read it may be a moment ahead of its entry."""
        deadline = time.monotonic() + timeout
        while not (found := [entry for entry in self.entries() if which(entry)]):
            assert time.monotonic() < deadline, "no such access log entry"
            time.sleep(0.02)
        return found


@contextmanager
def access_log(caplog: Any) -> Iterator[AccessLog]:
    """Collect the access log at INFO, each entry once, on its own logger rather than by
    propagation, which the CLI's logging turns off (tests/conftest.py undoes that after each
    test that sets it up)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    propagate, logger.propagate = logger.propagate, False
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
            yield AccessLog(caplog)
    finally:
        logger.removeHandler(caplog.handler)
        logger.propagate = propagate


def real_server_url(variable: str, how: str) -> str:
    """The /v1 URL of a real local model server from the environment ``variable``; the
    calling test module is skipped (``how`` says how to start one) without it."""
    url = os.environ.get(variable)
    if not url:
        pytest.skip(f"{variable} is not set; {how} and export its /v1 URL", allow_module_level=True)
    return url


def closed_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
