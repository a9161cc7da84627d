"""LangChain wrapper tests: offline, with sockets disabled (unix sockets allowed,
asyncio needs them) except in tests marked ``server`` or ``enable_socket``."""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_core")

from pytest_socket import disable_socket, enable_socket  # noqa: E402

from langchain_routellm.testing import FakeToolChatModel  # noqa: E402
from lc_support import KeywordRouter  # noqa: E402


@pytest.fixture(autouse=True)
def _no_network(request):
    if request.node.get_closest_marker("server") or request.node.get_closest_marker("enable_socket"):
        yield
        return
    disable_socket(allow_unix_socket=True)
    try:
        yield
    finally:
        enable_socket()


@pytest.fixture
def strong():
    return FakeToolChatModel(model_name="strong-fake")


@pytest.fixture
def weak():
    return FakeToolChatModel(model_name="weak-fake")


@pytest.fixture
def keyword_router():
    return KeywordRouter()
