"""Fixtures for the LlamaIndex wrapper tests (helpers live in li_support.py).

The socket policy (offline; ``server`` tests reach loopback only) is in tests/conftest.py."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.instrumentation import get_dispatcher  # noqa: E402

from li_support import wait_for_slow_calls  # noqa: E402
from li_support import EventRecorder, NamedMockFunctionCallingLLM, NamedMockLLM, tool_answer_generator  # noqa: E402

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


@pytest.fixture(autouse=True)
def _slow_calls_finish():
    """A test ends only when the slow mock calls it timed out have ended (no events leak on)."""
    yield
    wait_for_slow_calls()
