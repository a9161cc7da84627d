"""``LedgerHandler``: the savings ledger for LlamaIndex calls of ``RouteLLM``.

It listens to LlamaIndex instrumentation (``handler.attach()`` adds it to the
root dispatcher; ``detach()`` removes it; or use it as a context manager). For
each answer of a ``RouteLLM`` it reads the decision from
``additional_kwargs["routellm"]`` and the tokens from the response's ``raw``
usage (``raw["usage"]`` or ``raw.usage``, OpenAI's ``prompt_tokens`` /
``completion_tokens`` or Anthropic's ``input_tokens`` / ``output_tokens``; else
``additional_kwargs`` ``prompt_tokens`` / ``completion_tokens``, where the
LlamaIndex OpenAI LLM puts them), and records the call in a
:class:`shared_core.ledger.Ledger`, the same one the LangChain handler fills:

* ``chat``, ``complete``, their async forms and the tool calls: when the
  ``RouteLLM`` span exits with its tagged response;
* streams: at the chosen model's end event, whose last chunk carries the
  decision (streaming usage comes with the last chunk, as OpenAI's
  ``stream_options={"include_usage": True}`` sends it);
* calls that return plain text or an object (``predict``, ``apredict``,
  ``stream``, ``astream``, ``structured_predict`` and its async and stream
  forms: a query engine's answers), which have no response to tag: from the
  ``RoutedCallEvent`` ``RouteLLM`` dispatches at the end of each while a handler
  is attached (a stream's when it ends, as a chat stream's), with the decision
  record and the usage of the answering model's LLM calls, read from their end
  events, which the handler relays to the call they fired in
  (:mod:`llamaindex_routellm.watching`).

An answer the escalation checks rejected is priced once, with the call that
answered, from the usage in its record's ``escalations`` (for plain-text calls,
that of its own attempt). A call that fails after its escalation checks rejected
an answer (the model it escalated to raised) returns nothing, but the rejected
answer was paid for: ``RouteLLM`` dispatches a ``RejectedAnswersEvent`` and the
handler prices it with :meth:`~shared_core.ledger.Ledger.record_unanswered`.

LlamaIndex swallows errors raised in instrumentation handlers, so a missing
price or usage is kept in :attr:`LedgerHandler.errors`, logged, and raised by
:meth:`LedgerHandler.check` and every read (:meth:`summary`, :meth:`to_dict`,
:meth:`totals`): never a silent zero.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections import deque
from typing import Any, Callable, Mapping, Optional

from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatStartEvent,
    LLMCompletionEndEvent,
    LLMCompletionStartEvent,
)
from llama_index.core.instrumentation.span_handlers import BaseSpanHandler

from llamaindex_routellm.llm import DECISION_KEY, RejectedAnswersEvent
from llamaindex_routellm.watching import LISTENERS, RoutedCallEvent, relay_event
from shared_core.errors import ConfigError, RouteLLMError
from shared_core.ledger import CallRecord, Ledger, PriceTable, ledger_from

__all__ = ["LedgerHandler", "response_usage"]

log = logging.getLogger(__name__)
_SEEN = 64


def _count(usage: Any, *names: str) -> Any:
    for name in names:
        value = usage.get(name) if isinstance(usage, Mapping) else getattr(usage, name, None)
        if value is not None:
            return value
    return None


def response_usage(response: Any) -> tuple[Any, Any]:
    """``(input_tokens, output_tokens)`` of a LlamaIndex response, ``None`` where not reported."""
    raw = getattr(response, "raw", None)
    usage = raw.get("usage") if isinstance(raw, Mapping) else getattr(raw, "usage", None)
    if usage is not None:
        return _count(usage, "prompt_tokens", "input_tokens"), _count(usage, "completion_tokens", "output_tokens")
    extra = getattr(response, "additional_kwargs", None) or {}
    return extra.get("prompt_tokens"), extra.get("completion_tokens")


class LedgerHandler:
    """Records every routed LlamaIndex call in a :class:`~shared_core.ledger.Ledger`.

    Give either ``ledger`` or ``prices`` and ``strong_model`` (as in the
    LangChain handler). Thread- and async-safe: the ledger locks.
    """

    def __init__(self, ledger: Optional[Ledger] = None, *, prices: PriceTable | Mapping[str, Any] | None = None,
                 strong_model: Optional[str] = None, budget: Any = None) -> None:
        self.ledger = ledger_from(ledger, prices, strong_model, budget, "LedgerHandler")
        self.errors: list[RouteLLMError] = []
        self._lock = threading.Lock()
        # The last responses recorded, held so that their ids stay unique: a stream's
        # last chunk can reach two end events (an async stream wrapping a sync one).
        self._seen: deque[Any] = deque(maxlen=_SEEN)
        self._span_handler = _SpanExits(owner=self)
        self._event_handler = _StreamEnds(owner=self)
        self._dispatcher: Any = None

    # Attaching ---------------------------------------------------------------------------
    def attach(self, dispatcher: Any = None) -> "LedgerHandler":
        """Listen on ``dispatcher`` (default: LlamaIndex's root dispatcher)."""
        if self._dispatcher is not None:
            raise ConfigError("this LedgerHandler is already attached; detach it first")
        self._dispatcher = dispatcher or get_dispatcher()
        self._dispatcher.add_span_handler(self._span_handler)
        self._dispatcher.add_event_handler(self._event_handler)
        LISTENERS.add(1)  # RouteLLM watches its plain-text calls from now on
        return self

    def detach(self) -> None:
        if self._dispatcher is None:
            return
        for handlers, handler in ((self._dispatcher.span_handlers, self._span_handler),
                                  (self._dispatcher.event_handlers, self._event_handler)):
            if handler in handlers:
                handlers.remove(handler)
        self._dispatcher = None
        LISTENERS.add(-1)

    def __enter__(self) -> "LedgerHandler":
        return self.attach()

    def __exit__(self, *exc: Any) -> None:
        self.detach()

    # Recording -----------------------------------------------------------------------------
    def record(self, response: Any) -> Optional[CallRecord]:
        """Record ``response`` if it carries a decision record (errors are kept, see :meth:`check`)."""
        extra = getattr(response, "additional_kwargs", None)
        record = extra.get(DECISION_KEY) if isinstance(extra, Mapping) else None
        if not isinstance(record, Mapping):
            return None
        with self._lock:
            if any(r is response for r in self._seen):
                return None
            self._seen.append(response)
        return self._kept(lambda: self.ledger.record_decision(record, *response_usage(response)))

    def record_routed(self, event: RoutedCallEvent) -> Optional[CallRecord]:
        """Record a plain-text call from its :class:`~llamaindex_routellm.RoutedCallEvent`
        (errors are kept, see :meth:`check`)."""
        return self._kept(lambda: self.ledger.record_decision(event.record, event.input_tokens, event.output_tokens))

    def record_unanswered(self, escalations: Any) -> Any:
        """Price the rejected answers of a call that failed (errors are kept, see :meth:`check`)."""
        return self._kept(lambda: self.ledger.record_unanswered(escalations))

    def _kept(self, record: Callable[[], Any]) -> Any:
        """``record()``, or ``None`` with its error logged and kept: LlamaIndex would swallow it."""
        try:
            return record()
        except RouteLLMError as exc:
            log.error("routellm ledger: %s", exc)
            with self._lock:
                self.errors.append(exc)
            return None

    def check(self) -> None:
        """Raise the first error met while recording (a model with no price, a call without usage)."""
        with self._lock:
            if self.errors:
                raise self.errors[0]

    # Reading: the ledger's numbers, after check() ------------------------------------------
    def totals(self) -> dict[str, Any]:
        self.check()
        return self.ledger.totals()

    def to_dict(self) -> dict[str, Any]:
        self.check()
        return self.ledger.to_dict()

    def summary(self) -> str:
        self.check()
        return self.ledger.summary()


class _SpanExits(BaseSpanHandler[Any]):
    """Sees each ``RouteLLM`` method's result as its span exits."""

    _owner: Any = PrivateAttr()

    def __init__(self, owner: LedgerHandler) -> None:
        super().__init__(open_spans={}, completed_spans=[], dropped_spans=[], current_span_ids={})
        self._owner = owner

    @classmethod
    def class_name(cls) -> str:
        return "RouteLLMLedgerSpans"

    def new_span(self, id_: str, bound_args: inspect.BoundArguments, instance: Optional[Any] = None,
                 parent_span_id: Optional[str] = None, tags: Optional[dict[str, Any]] = None, **kwargs: Any) -> None:
        return None  # nothing to keep per span

    def prepare_to_exit_span(self, id_: str, bound_args: inspect.BoundArguments, instance: Optional[Any] = None,
                             result: Optional[Any] = None, **kwargs: Any) -> None:
        from llamaindex_routellm.llm import RouteLLM

        if isinstance(instance, RouteLLM):
            self._owner.record(result)
        return None

    def prepare_to_drop_span(self, id_: str, bound_args: inspect.BoundArguments, instance: Optional[Any] = None,
                             err: Optional[BaseException] = None, **kwargs: Any) -> None:
        return None


class _StreamEnds(BaseEventHandler):
    """Sees the end of each stream (its last chunk carries the decision by then), the
    ends of plain-text calls, rejected answers of failed calls, and relays the LLM
    events of plain-text calls to the attempt they belong to."""

    _owner: Any = PrivateAttr()

    def __init__(self, owner: LedgerHandler) -> None:
        super().__init__()
        self._owner = owner

    @classmethod
    def class_name(cls) -> str:
        return "RouteLLMLedgerStreams"

    def handle(self, event: Any, **kwargs: Any) -> None:
        if isinstance(event, RejectedAnswersEvent):
            self._owner.record_unanswered(event.escalations)
        elif isinstance(event, RoutedCallEvent):
            relay_event(event)  # a RouteLLM used as the model of another: recorded here, once
            self._owner.record_routed(event)
        elif isinstance(event, (LLMChatStartEvent, LLMCompletionStartEvent)):
            relay_event(event)
        elif isinstance(event, (LLMChatEndEvent, LLMCompletionEndEvent)):
            relay_event(event)
            # A non-streamed answer is tagged only after this event (it is recorded
            # at its span's exit); a streamed one's last chunk is tagged already.
            self._owner.record(event.response)
