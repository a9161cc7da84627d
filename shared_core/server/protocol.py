"""The OpenAI wire format as the server checks and answers it.

:func:`parse_chat_request` turns a request body into the dict forwarded upstream,
checking only what routing needs (a JSON object, a ``messages`` list within the
limit, each message an object with a string ``role``, ``stream`` a boolean); every
other field is the upstream's business and passes through unchanged.
:class:`APIError` is an error the client sees, as OpenAI writes it:
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import json
from typing import Any, Optional

DECISION_FIELD = "routellm"
HEADER_PREFIX = "x-routellm-"


class APIError(Exception):
    """An error answered to the client with ``status`` and an OpenAI-style body."""

    def __init__(self, status: int, message: str, error_type: str = "invalid_request_error",
                 param: Optional[str] = None, code: Optional[str] = None,
                 extra: Optional[dict[str, Any]] = None, headers: Optional[dict[str, str]] = None) -> None:
        super().__init__(message)
        self.status, self.message, self.error_type, self.param, self.code = status, message, error_type, param, code
        self.extra = extra or {}
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param, "code": self.code},
                **self.extra}


def parse_chat_request(raw: bytes, max_messages: int) -> dict[str, Any]:
    """The request body as a dict, or :class:`APIError` (400) naming what is wrong.

    Example:
        >>> parse_chat_request(b'{"messages": [{"role": "user", "content": "Hi"}], "seed": 1}', 10)["seed"]
        1
        >>> try:
        ...     parse_chat_request(b'{"model": "routellm"}', 10)
        ... except APIError as exc:
        ...     print(exc.status, exc.message)
        400 missing required parameter: 'messages'
    """
    try:
        payload = json.loads(raw)
    except UnicodeDecodeError:
        raise APIError(400, "request body is not UTF-8 text", code="invalid_json") from None
    except json.JSONDecodeError as exc:
        raise APIError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise APIError(400, f"request body must be a JSON object, got {type(payload).__name__}", code="invalid_json")
    if "messages" not in payload:
        raise APIError(400, "missing required parameter: 'messages'", param="messages", code="missing_required_parameter")
    messages = payload["messages"]
    if not isinstance(messages, list) or not messages:
        raise APIError(400, f"'messages' must be a non-empty array of message objects, got {_preview(messages)}",
                       param="messages", code="invalid_type")
    if len(messages) > max_messages:
        raise APIError(400, f"'messages' holds {len(messages)} messages; this server accepts at most {max_messages}",
                       param="messages", code="too_many_messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise APIError(400, f"messages[{i}] must be an object with a string 'role', got {_preview(message)}",
                           param=f"messages[{i}]", code="invalid_type")
    stream = payload.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise APIError(400, f"'stream' must be a boolean, got {_preview(stream)}", param="stream", code="invalid_type")
    model = payload.get("model")
    if model is not None and not isinstance(model, str):
        raise APIError(400, f"'model' must be a string, got {_preview(model)}", param="model", code="invalid_type")
    return payload


def conversation(payload: dict[str, Any]) -> list[tuple[str, Any]]:
    """The messages as the ``(role, content)`` pairs of :mod:`shared_core.policy`."""
    return [(m["role"], m.get("content")) for m in payload["messages"]]


def decision_headers(record: dict[str, Any]) -> dict[str, str]:
    """``x-routellm-*`` headers for a decision record (:func:`shared_core.engine.decision_record`).

    ``score`` is left out when there was no text to score; ``reason`` then says why.

    Example:
        >>> from shared_core.engine import decision_record
        >>> from shared_core.routers import Decision, Role
        >>> record = decision_record(Decision(Role.WEAK, 0.25, 0.5, "mf"), Role.WEAK, "small-model")
        >>> decision_headers(record)["x-routellm-score"], decision_headers(record)["x-routellm-model"]
        ('0.25', 'small-model')
        >>> "x-routellm-score" in decision_headers({**record, "score": None, "reason": "no_text"})
        False
    """
    headers = {
        HEADER_PREFIX + "role": record["role"],
        HEADER_PREFIX + "model": record["model"],
        HEADER_PREFIX + "router": record["router"],
        HEADER_PREFIX + "threshold": repr(float(record["threshold"])),
        HEADER_PREFIX + "reason": record["reason"],
    }
    if record["score"] is not None:
        headers[HEADER_PREFIX + "score"] = repr(float(record["score"]))
    if record.get("fallback"):
        headers[HEADER_PREFIX + "fallback-from"] = record["fallback"]["from"]
    return headers


def _preview(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."
