"""LangChain wrapper tests: offline, with sockets disabled (unix sockets allowed,
asyncio needs them); tests marked ``server`` or ``enable_socket`` may use loopback only."""

from __future__ import annotations

import socket

import pytest

pytest.importorskip("langchain_core")

from pytest_socket import disable_socket, enable_socket, socket_allow_hosts  # noqa: E402

from langchain_routellm.testing import FakeToolChatModel  # noqa: E402
from lc_support import KeywordRouter  # noqa: E402

LOOPBACK = ["127.0.0.1", "::1", "localhost"]


@pytest.fixture(autouse=True)
def _no_network(request):
    # Unit tests: no sockets (unix sockets allowed, asyncio needs them). Tests of a
    # real local server (``server``) or a notebook kernel (``enable_socket``): loopback only.
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
def strong():
    return FakeToolChatModel(model_name="strong-fake")


@pytest.fixture
def weak():
    return FakeToolChatModel(model_name="weak-fake")


@pytest.fixture
def keyword_router():
    return KeywordRouter()
