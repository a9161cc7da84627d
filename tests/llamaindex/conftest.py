"""Fixtures for the LlamaIndex wrapper tests (helpers live in li_support.py).

Offline, with sockets disabled (unix sockets allowed, asyncio needs them); tests
marked ``server`` or ``enable_socket`` may use loopback only."""

from __future__ import annotations

import socket

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.instrumentation import get_dispatcher  # noqa: E402
from pytest_socket import disable_socket, enable_socket, socket_allow_hosts  # noqa: E402

from li_support import EventRecorder, NamedMockFunctionCallingLLM, NamedMockLLM, tool_answer_generator  # noqa: E402

LOOPBACK = ["127.0.0.1", "::1", "localhost"]


@pytest.fixture(autouse=True)
def _no_network(request):
    loopback = request.node.get_closest_marker("server") or request.node.get_closest_marker("enable_socket")
    connect = socket.socket.connect  # socket_allow_hosts patches it; enable_socket does not restore it
    if loopback:
        socket_allow_hosts(LOOPBACK, allow_unix_socket=True)
    else:
        disable_socket(allow_unix_socket=True)
    try:
        yield
    finally:
        enable_socket()
        socket.socket.connect = connect


@pytest.fixture
def events():
    recorder = EventRecorder(events=[])
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(recorder)
    try:
        yield recorder
    finally:
        dispatcher.event_handlers.remove(recorder)


@pytest.fixture
def models():
    return {
        "strong": NamedMockLLM(name="strong-mock", window=8000, max_tokens=None),
        "weak": NamedMockLLM(name="weak-mock", window=2000, max_tokens=None),
    }


@pytest.fixture
def fc_models():
    return {
        "strong": NamedMockFunctionCallingLLM(name="strong-fc", window=8000, parsed=[],
                                              response_generator=tool_answer_generator),
        "weak": NamedMockFunctionCallingLLM(name="weak-fc", window=4000, parsed=[],
                                            response_generator=tool_answer_generator),
    }
