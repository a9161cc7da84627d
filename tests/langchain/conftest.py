"""LangChain wrapper tests (the socket policy, offline with loopback for ``server``
tests, is in tests/conftest.py)."""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_core")


from langchain_routellm.testing import FakeToolChatModel  # noqa: E402
from lc_support import KeywordRouter  # noqa: E402

@pytest.fixture
def strong():
    return FakeToolChatModel(model_name="strong-fake")


@pytest.fixture
def weak():
    return FakeToolChatModel(model_name="weak-fake")


@pytest.fixture
def keyword_router():
    return KeywordRouter()
