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
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

USER_ROLES = frozenset({"user", "human"})


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


def routing_text(messages: Sequence[tuple[str, Any]]) -> tuple[str | None, str]:
    """Return ``(text, reason)``: the text to route on, or ``None`` and why not.

    ``reason`` is ``"score"`` when there is text, else ``"no_user_message"`` or
    ``"no_text"``.
    """
    for role, content in reversed(list(messages)):
        if role in USER_ROLES:
            text = content_text(content)
            if text.strip():
                return text, "score"
            return None, "no_text"
    return None, "no_user_message"
