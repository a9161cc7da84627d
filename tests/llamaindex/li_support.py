"""Shared test support for the LlamaIndex wrapper: LlamaIndex's own mock LLMs, named so that
instrumentation events tell which one ran, a keyword router and an event recorder."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections import Counter
from typing import Any, List, Sequence

import numpy as np

from llama_index.core.base.llms.types import ChatMessage, ChatResponse, LLMMetadata, MessageRole, ToolCallBlock
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.base.llms.types import CompletionResponse
from llama_index.core.llms import MockLLM
from llama_index.core.base.llms.generic_utils import (
    astream_completion_response_to_chat_response,
    completion_response_to_chat_response,
)
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.mock import MockFunctionCallingLLM

from shared_core.routers import Router

HARD = "prove"  # the keyword router sends texts containing this word to the strong model


class NamedMockLLM(MockLLM):
    """LlamaIndex's MockLLM (echoes the prompt) with a model name and context window."""

    name: str = "mock"
    window: int = 3900

    def __init__(self, name: str = "mock", window: int = 3900, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.name, self.window = name, window

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.window, num_output=self.max_tokens or -1,
            is_chat_model=bool(self.is_chat_model), model_name=self.name,
        )


class FailingMockLLM(NamedMockLLM):
    """A NamedMockLLM whose provider is down: every call raises ``ConnectionError``
    (or ``error`` when set; a stream raises before its first chunk, or after it
    with ``fail_after_first_chunk``)."""

    fail_after_first_chunk: bool = False
    error: Any = None

    def __init__(self, name: str = "mock", error: Any = None, **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.error = error

    def _error(self) -> BaseException:
        return self.error if self.error is not None else ConnectionError(f"{self.name} is down")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        raise self._error()

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):
        def gen():
            if self.fail_after_first_chunk:
                yield CompletionResponse(text="partial", delta="partial")
            raise self._error()

        return gen()


#: Synchronous slow calls still running: a timed-out call goes on in its worker thread
#: (Python cannot stop a thread) and would emit its events into a later test's recorder.
_SLOW_CALLS = threading.Condition()
_slow_running = 0


@contextlib.contextmanager
def _slow_call():
    global _slow_running
    with _SLOW_CALLS:
        _slow_running += 1
    try:
        yield
    finally:
        with _SLOW_CALLS:
            _slow_running -= 1
            _SLOW_CALLS.notify_all()


def wait_for_slow_calls(timeout: float = 10.0) -> None:
    """Block until no synchronous :class:`SlowMockLLM` call is running (they end by themselves)."""
    with _SLOW_CALLS:
        _SLOW_CALLS.wait_for(lambda: _slow_running == 0, timeout=timeout)


class SlowMockLLM(NamedMockLLM):
    """A NamedMockLLM that waits ``delay`` seconds before answering or streaming
    (``asyncio.sleep`` on the async paths, which MockLLM would run blocking)."""

    delay: float = 1.0

    def __init__(self, name: str = "mock", delay: float = 1.0, **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.delay = delay

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        with _slow_call():
            time.sleep(self.delay)
            return MockLLM.complete(self, prompt, formatted=formatted, **kwargs)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):
        def gen():
            with _slow_call():
                time.sleep(self.delay)
            yield CompletionResponse(text=prompt, delta=prompt)

        return gen()

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        await asyncio.sleep(self.delay)
        return MockLLM.complete(self, prompt, formatted=formatted, **kwargs)

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):
        async def gen():
            await asyncio.sleep(self.delay)
            yield CompletionResponse(text=prompt, delta=prompt)

        return gen()

    @llm_chat_callback()
    async def achat(self, messages, **kwargs: Any):
        return completion_response_to_chat_response(await self.acomplete(self.messages_to_prompt(messages),
                                                                         formatted=True))

    @llm_chat_callback()
    async def astream_chat(self, messages, **kwargs: Any):
        return astream_completion_response_to_chat_response(
            await self.astream_complete(self.messages_to_prompt(messages), formatted=True))


def mock_answer(name: str, messages: Sequence[ChatMessage]) -> tuple[str, dict[str, int]]:
    """The FakeToolChatModel rule: "[name] <last user text>", one token a word (+1 a message in)."""
    question = next((m.content for m in reversed(messages) if m.role == MessageRole.USER), "") or "Hello."
    text = f"[{name}] {question}"
    n_in = sum(len((m.content or "").split()) + 1 for m in messages)
    return text, {"prompt_tokens": n_in, "completion_tokens": len(text.split())}


def _words(text: str, usage: dict[str, int], chunk: Any) -> Any:
    """``text`` streamed a word a chunk (cumulative, with its delta), the usage on the last chunk."""
    words = text.split(" ")
    for i, _ in enumerate(words):
        last = i == len(words) - 1
        yield chunk(" ".join(words[: i + 1]), (" " if i else "") + words[i], {"usage": usage} if last else None)


class UsageMockLLM(NamedMockLLM):
    """A NamedMockLLM that answers like langchain_routellm.testing.FakeToolChatModel and reports its
    usage in ``raw["usage"]`` (streams: on the last chunk), as OpenAI-compatible LLMs do. Its async
    forms are LlamaIndex's (``CustomLLM``: they call the sync ones), except ``achat``, which yields
    to the event loop first."""

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        text, usage = mock_answer(self.name, messages)
        return ChatResponse(message=ChatMessage(role="assistant", content=text), raw={"usage": usage})

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any):
        text, usage = mock_answer(self.name, messages)
        return _words(text, usage, lambda content, delta, raw: ChatResponse(
            message=ChatMessage(role="assistant", content=content), delta=delta, raw=raw))

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        text, usage = mock_answer(self.name, [ChatMessage(role="user", content=prompt)])
        return CompletionResponse(text=text, raw={"usage": usage})

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):
        text, usage = mock_answer(self.name, [ChatMessage(role="user", content=prompt)])
        return _words(text, usage, lambda content, delta, raw: CompletionResponse(text=content, delta=delta, raw=raw))

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        await asyncio.sleep(0)
        return self.chat(messages, **kwargs)


class FixedMockLLM(NamedMockLLM):
    """A NamedMockLLM that answers ``answer`` whatever the prompt (streams it as one chunk)."""

    answer: str = ""

    def __init__(self, name: str = "mock", answer: str = "", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.answer = answer

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=self.answer)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):
        def gen():  # one chunk, empty or not (LlamaIndex's callback needs a last response)
            yield CompletionResponse(text=self.answer, delta=self.answer)

        return gen()


class WithUsage(FixedMockLLM):
    """A fixed answer with the token usage OpenAI-compatible LLMs report (5 in, 2 out)."""

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=self.answer, raw={"usage": {"prompt_tokens": 5, "completion_tokens": 2}})


class StreamsWithUsage(WithUsage):
    """WithUsage whose stream also reports usage (on its one chunk, as OpenAI's last one)."""

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):
        def gen():
            yield CompletionResponse(text=self.answer, delta=self.answer,
                                     raw={"usage": {"prompt_tokens": 5, "completion_tokens": 2}})

        return gen()


class NamedMockFunctionCallingLLM(MockFunctionCallingLLM):
    """LlamaIndex's MockFunctionCallingLLM with a model name; records which responses it parsed."""

    name: str = "mock-fc"
    window: int = 3900
    parsed: List[Any] = []

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.window, is_function_calling_model=True,
            is_chat_model=bool(self.is_chat_model), model_name=self.name,
        )

    def get_tool_calls_from_response(self, response, error_on_no_tool_call=False, **kwargs):
        self.parsed.append(response)
        return super().get_tool_calls_from_response(response, error_on_no_tool_call=error_on_no_tool_call, **kwargs)


class KeywordRouter(Router):
    """Win rate 0.9 for texts containing ``HARD``, else 0.1; records what it scored."""

    name = "keyword"

    def __init__(self) -> None:
        self.seen: list[str] = []

    def _score(self, prompts: list[str]) -> np.ndarray:
        self.seen.extend(prompts)
        return np.array([0.9 if HARD in p.lower() else 0.1 for p in prompts])


class EventRecorder(BaseEventHandler):
    events: List[Any] = []

    @classmethod
    def class_name(cls) -> str:
        return "EventRecorder"

    def handle(self, event: Any, **kwargs: Any) -> None:
        self.events.append(event)

    def counts(self) -> Counter:
        return Counter(e.class_name() for e in self.events)

    def models(self) -> list[str]:
        """Model names of the LLM start events, in order (embedding events left out)."""
        return [
            e.model_dict.get("model_name")
            for e in self.events
            if e.class_name().startswith("LLM") and hasattr(e, "model_dict")
        ]

    def clear(self) -> None:
        self.events.clear()


def tool_answer_generator(messages, **kwargs):
    """A response generator for MockFunctionCallingLLM: 'multiply A and B' calls
    the ``multiply`` tool, a tool result is turned into an answer."""
    if messages and messages[-1].role == MessageRole.TOOL:
        return ChatMessage(role=MessageRole.ASSISTANT, content=f"The answer is {messages[-1].content}.")
    last_user = next((m for m in reversed(messages) if m.role == MessageRole.USER), None)
    numbers = re.findall(r"-?\d+", (last_user.content or "") if last_user else "")
    if kwargs.get("tools") and len(numbers) >= 2:
        return ChatMessage(
            role=MessageRole.ASSISTANT,
            blocks=[ToolCallBlock(tool_call_id="call-1", tool_name="multiply",
                                  tool_kwargs={"a": int(numbers[0]), "b": int(numbers[1])})],
        )
    return ChatMessage(role=MessageRole.ASSISTANT, content="No tool needed.")




class ReActMockLLM(NamedMockLLM):
    """A chat model that plays a ReAct agent: asks for ``multiply(3, 4)``, then, once it sees
    the observation, answers "[name] done" (streams as one chunk)."""

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        if (messages[-1].content or "").startswith("Observation:"):
            text = f"Thought: I can answer without using any more tools.\nAnswer: [{self.name}] done"
        else:
            text = 'Thought: I need a tool.\nAction: multiply\nAction Input: {"a": 3, "b": 4}'
        return ChatResponse(message=ChatMessage(role="assistant", content=text))

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any):
        response = self.chat(messages)

        async def gen():
            yield ChatResponse(message=response.message, delta=response.message.content)

        return gen()
