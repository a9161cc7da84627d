"""Watching the ``RouteLLM`` calls that return plain text or objects, for the savings ledger.

``predict``, ``apredict``, ``stream``, ``astream``, ``structured_predict`` and its
async and stream forms (what a query engine calls) return a string or a parsed
object: no response whose ``additional_kwargs`` could carry the decision record,
as a ``chat`` response does. While a :class:`~llamaindex_routellm.LedgerHandler` is
attached (and only then: otherwise these calls run exactly as they always did),
``RouteLLM`` watches each such call:

* each model attempt of the call runs with its :class:`_Attempt` in a contextvar:
  around the call itself (in a timeout's worker thread too, which runs in a copy of
  the caller's context) and around every step of a stream, so the LLM events the
  attempt's model fires are its own, whatever runs concurrently;
* the handler relays every LLM start and end event it sees (:func:`relay_event`);
  the attempt running where it fires keeps the responses of its outermost LLM
  calls (LlamaIndex's ``CustomLLM.chat`` calls its own ``complete``, an ``achat``
  may call ``chat``: one call, whose outer response counts, as the tagged one
  would), each event once however many handlers relay it;
* when the call has its answer (a stream: when it ended), :meth:`Watch.finish`
  dispatches a :class:`RoutedCallEvent` with the decision record, the rejected
  answers' usage (each its own attempt's) in its ``escalations``, and the
  answering attempt's usage; the handler records it as it records a tagged
  response. A call that fails after rejections reports their usage the same way
  (``RejectedAnswersEvent``).
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from contextvars import ContextVar
from typing import Any, AsyncGenerator, Awaitable, Callable, Dict, Generator, Iterator, List, Optional

from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatStartEvent,
    LLMCompletionEndEvent,
    LLMCompletionStartEvent,
)

from shared_core.attempts import Outcome

__all__ = ["LISTENERS", "RoutedCallEvent", "Watch", "relay_event", "watch_for"]

dispatcher = get_dispatcher(__name__)


class RoutedCallEvent(BaseEvent):
    """A ``RouteLLM`` call that returns plain text or an object (``predict``,
    ``apredict``, ``stream``, ``astream``, ``structured_predict`` and its async and
    stream forms: what a query engine calls) gave its answer; a stream's, when it
    ended. Such an answer has no ``additional_kwargs`` to carry the decision, so this
    event does: ``record`` is the decision record a response would carry (the rejected
    answers' usage in its ``escalations``), ``input_tokens`` / ``output_tokens`` the
    answering model's usage, read from the LLM end events of its calls in this one
    (``None`` where one reported none). Dispatched only while a
    :class:`~llamaindex_routellm.LedgerHandler` is attached: the handler relays those
    LLM events to the call they belong to, and records this one."""

    record: Dict[str, Any]
    input_tokens: Any = None
    output_tokens: Any = None

    @classmethod
    def class_name(cls) -> str:
        return "RouteLLMRoutedCallEvent"


class _Listeners:
    """How many LedgerHandlers are attached. Calls that return plain text are watched
    (each attempt in the context, a :class:`RoutedCallEvent` at the end) only while
    one is; otherwise they run exactly as they always did."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def add(self, n: int) -> None:
        with self._lock:
            self.count = max(self.count + n, 0)


LISTENERS = _Listeners()

#: The model attempt of a watched call that runs in this context (thread, asyncio task, stream step).
_ATTEMPT: ContextVar[Optional["_Attempt"]] = ContextVar("routellm_attempt", default=None)

_LLM_STARTS = (LLMChatStartEvent, LLMCompletionStartEvent)
_LLM_ENDS = (LLMChatEndEvent, LLMCompletionEndEvent)


def relay_event(event: BaseEvent) -> None:
    """Give ``event`` (an LLM start or end event, or a :class:`RoutedCallEvent`) to the
    watched attempt running in this context, if any. The ledger handler calls it for
    every such event it sees; each event counts once, however many handlers relay it."""
    attempt = _ATTEMPT.get()
    if attempt is not None:
        attempt.note(event)


class _Attempt:
    """One model's attempt in a watched call: the responses of the LLM calls it made,
    outermost only (an LLM whose ``chat`` calls its own ``complete``, as LlamaIndex's
    ``CustomLLM`` does, or whose ``achat`` calls ``chat``, made one call: the outer
    response counts, as it would have been the tagged one of a ``chat`` call)."""

    def __init__(self, model_id: int) -> None:
        self.model_id = model_id
        self.responses: List[Any] = []
        #: A RouteLLM inside this attempt recorded the answer itself (a RouteLLM as a model).
        self.routed = False
        self._open = 0
        self._seen: set = set()
        self._lock = threading.Lock()

    def note(self, event: BaseEvent) -> None:
        with self._lock:
            if event.id_ in self._seen:
                return
            self._seen.add(event.id_)
            if isinstance(event, RoutedCallEvent):
                self.routed = True
            elif isinstance(event, _LLM_STARTS):
                self._open += 1
            elif isinstance(event, _LLM_ENDS):
                self._open = max(self._open - 1, 0)
                if not self._open:
                    self.responses.append(event.response)

    def usage(self) -> Optional[Dict[str, Any]]:
        """Its LLM calls' usage, summed, as a decision record holds it; ``None`` if it made
        none or one reported none."""
        from llamaindex_routellm.ledger import response_usage

        with self._lock:
            counts = [response_usage(r) for r in self.responses]
        if not counts or any(None in c for c in counts):
            return None
        total = {}
        for key, values in zip(("input_tokens", "output_tokens"), zip(*counts)):
            bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int)]
            total[key] = bad[0] if bad else sum(values)  # the ledger names a bad count
        return total


@contextlib.contextmanager
def _within(attempt: _Attempt) -> Iterator[None]:
    token = _ATTEMPT.set(attempt)
    try:
        yield
    finally:
        _ATTEMPT.reset(token)


_END = object()


def _steps(chunks: Iterator[Any], attempt: _Attempt) -> Generator[Any, None, None]:
    """``chunks``, each step taken within ``attempt`` (a stream's last LLM event fires at its end)."""
    while True:
        with _within(attempt):
            chunk = next(chunks, _END)
        if chunk is _END:
            return
        yield chunk


async def _asteps(chunks: Any, attempt: _Attempt) -> AsyncGenerator[Any, None]:
    while True:
        with _within(attempt):
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                return
        yield chunk


class Watch:
    """A call that returns plain text or an object, watched while a LedgerHandler is
    attached. Each attempt runs with its :class:`_Attempt` in the context (in a
    timeout's worker thread too, and at every step of a stream), so the LLM events its
    model causes are its own, whatever runs concurrently; :meth:`finish` dispatches the
    :class:`RoutedCallEvent` that the ledger records."""

    def __init__(self) -> None:
        self._attempts: List[_Attempt] = []

    def _begin(self, model: Any) -> _Attempt:
        attempt = _Attempt(id(model))
        self._attempts.append(attempt)
        return attempt

    def _attempt(self, model_id: Optional[int]) -> Optional[_Attempt]:
        return next((a for a in reversed(list(self._attempts)) if a.model_id == model_id), None)

    def usage(self, model_id: Optional[int]) -> Optional[Dict[str, Any]]:
        """The usage of the attempt of the model with this ``id()`` (its last one)."""
        attempt = self._attempt(model_id)
        return None if attempt is None else attempt.usage()

    # The attempt loop's calls, each within its attempt
    def call(self, call: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def attempt(model: Any) -> Any:
            with _within(self._begin(model)):
                return call(model)

        return attempt

    def acall(self, call: Callable[[Any], Awaitable[Any]]) -> Callable[[Any], Awaitable[Any]]:
        async def attempt(model: Any) -> Any:
            with _within(self._begin(model)):
                return await call(model)

        return attempt

    def stream(self, open_stream: Callable[[Any], Any]) -> Callable[[Any], Iterator[Any]]:
        def attempt(model: Any) -> Iterator[Any]:
            current = self._begin(model)
            with _within(current):
                chunks = iter(open_stream(model))
            return _steps(chunks, current)

        return attempt

    def astream(self, open_stream: Callable[[Any], Any]) -> Callable[[Any], Awaitable[Any]]:
        async def attempt(model: Any) -> Any:
            current = self._begin(model)
            with _within(current):
                chunks = open_stream(model)
                if inspect.isawaitable(chunks):
                    chunks = await chunks
            return _asteps(chunks.__aiter__(), current)

        return attempt

    def finish(self, record: Dict[str, Any], outcome: Outcome[Any]) -> None:
        """Dispatch the call's :class:`RoutedCallEvent`: ``record`` with the rejected
        answers' usage, and the answering attempt's usage (unless a RouteLLM inside
        that attempt recorded the answer itself)."""
        answered = self._attempt(id(outcome.model))
        if answered is not None and answered.routed:
            return
        for entry, rejected in zip(record.get("escalations") or (), outcome.escalations):
            used = self.usage(rejected.model_id)
            if used is not None:
                entry["usage"] = used
        used = (answered.usage() if answered is not None else None) or {}
        dispatcher.event(RoutedCallEvent(record=record, input_tokens=used.get("input_tokens"),
                                         output_tokens=used.get("output_tokens")))


def watch_for(tag: bool) -> Optional[Watch]:
    """A watch for a call that returns plain text (``tag`` off) while a LedgerHandler is attached."""
    return Watch() if not tag and LISTENERS.count else None
