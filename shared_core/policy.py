"""Which text of a conversation a router scores.

Both integrations turn their messages into ``(role, content)`` pairs, where role
is ``"user"``, ``"assistant"``, ``"system"`` or ``"tool"`` and content is a string
or a list of content blocks, and ask :func:`routing_text` what to score.

The policy:

* Route on the **last user message**. An agent's tool loop (assistant tool call,
  tool result, assistant, ...) keeps the same last user message, so every step of
  one loop goes to the same model.
* The text of a message is its string content, or the ``text`` of its text blocks
  (dicts with ``type == "text"``, or plain strings inside the list) joined by
  newlines. Other blocks (images, audio, files) contribute no text.
* No user message, or a last user message with no text (only an image, or empty
  text): there is nothing to score, and the call goes to the model named by
  ``on_no_text`` (default ``"strong"``: an input we cannot judge, such as an image,
  is the one a weak model is least likely to handle), with ``score=None`` and the
  reason ``"no_user_message"`` or ``"no_text"`` on the decision.
* ``route_on="last_turn"`` (opt-in) scores the previous turn too: the user
  message before the last one, the assistant's reply to it, and the last user
  message, joined by blank lines (a follow-up such as "and the second one?" is
  judged with what it follows). With no previous user message it is the last
  user message alone.

Conversations can be *pinned* (:class:`ThreadPins`): the first call of a thread
(a caller's thread id) decides, later calls of that thread go to the same model
without scoring, unless an answer escalated, which moves the pin to the model
that answered. The store keeps the ``capacity`` most recently used threads.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from typing import Any, Hashable, Iterable, Optional, Sequence

from shared_core.errors import ConfigError

USER_ROLES = frozenset({"user", "human"})
#: What a router scores: the last user message, or the previous turn with it.
ROUTE_ON = ("last_user", "last_turn")


def check_route_on(value: Any) -> str:
    if value not in ROUTE_ON:
        raise ConfigError(f"route_on must be one of {', '.join(map(repr, ROUTE_ON))}, got {value!r}")
    return value


def content_text(content: Any) -> str:
    """The text of a message content: a string, or the text blocks of a list."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        content = [content]
    parts: list[str] = []
    if isinstance(content, Iterable):
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, dict):
                if block.get("type", "text") == "text" and isinstance(block.get("text"), str):
                    parts.append(block["text"])
            else:
                text = getattr(block, "text", None)
                block_type = getattr(block, "block_type", getattr(block, "type", "text"))
                if block_type == "text" and isinstance(text, str):
                    parts.append(text)
    return "\n".join(p for p in parts if p)


def routing_text(messages: Sequence[tuple[str, Any]], route_on: str = "last_user") -> tuple[str | None, str]:
    """Return ``(text, reason)``: the text to route on, or ``None`` and why not.

    ``reason`` is ``"score"`` when there is text, else ``"no_user_message"`` or
    ``"no_text"`` (judged on the last user message, whatever ``route_on``).
    """
    messages = list(messages)
    users = [i for i, (role, _) in enumerate(messages) if role in USER_ROLES]
    if not users:
        return None, "no_user_message"
    text = content_text(messages[users[-1]][1])
    if not text.strip():
        return None, "no_text"
    if check_route_on(route_on) == "last_turn" and len(users) > 1:
        turn = [content_text(c) for role, c in messages[users[-2]:users[-1]] if role in USER_ROLES or role == "assistant"]
        text = "\n\n".join(t for t in [*turn, text] if t.strip())
    return text, "score"


class ThreadPins:
    """Which model each conversation is pinned to, for at most ``capacity``
    threads (least recently used dropped first); safe to share between threads.

    >>> pins = ThreadPins(2)
    >>> pins.pin("a", "weak"); pins.pin("b", "strong"); pins.pin("c", "weak")
    >>> pins.get("a") is None, pins.get("c"), len(pins)
    (True, 'weak', 2)
    """

    def __init__(self, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ConfigError(f"a pin store needs a capacity of at least 1 thread, got {capacity!r}")
        self.capacity = capacity
        self._pins: "OrderedDict[Hashable, Any]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, thread_id: Hashable) -> Optional[Any]:
        with self._lock:
            if thread_id not in self._pins:
                return None
            self._pins.move_to_end(thread_id)
            return self._pins[thread_id]

    def pin(self, thread_id: Hashable, key: Any) -> None:
        with self._lock:
            self._pins[thread_id] = key
            self._pins.move_to_end(thread_id)
            while len(self._pins) > self.capacity:
                self._pins.popitem(last=False)

    def pin_first(self, thread_id: Hashable, key: Any) -> Any:
        """Pin ``thread_id`` to ``key`` unless it is pinned already; the pin in force."""
        with self._lock:
            current = self._pins.setdefault(thread_id, key)
            self._pins.move_to_end(thread_id)
            while len(self._pins) > self.capacity:
                self._pins.popitem(last=False)
            return current

    def __len__(self) -> int:
        with self._lock:
            return len(self._pins)


def check_thread_id(thread_id: Any) -> Optional[Hashable]:
    """A thread id is a non-empty string, an int or a :class:`uuid.UUID` (LangGraph's
    thread ids often are; ``None``: no thread). A UUID and its string are the same thread."""
    if thread_id is None:
        return None
    if isinstance(thread_id, uuid.UUID):
        return str(thread_id)
    if isinstance(thread_id, bool) or not isinstance(thread_id, (str, int)) or thread_id == "":
        raise ConfigError(f"thread_id must be a non-empty string, an int or a UUID, got {type(thread_id).__name__}: "
                          f"{thread_id!r}")
    return thread_id
