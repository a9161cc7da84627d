"""The OpenAI Responses API (``POST /v1/responses``) as the routing server speaks it.

A Responses request is routed as a chat request is: on its last user message (its
``input``, a string or a list of items, with ``instructions`` as the system message),
and forwarded, every field unchanged but ``model``, to the chosen upstream's
``/responses``. What differs is state: an upstream stores the responses it made, and a
follow-up names the one it continues (``previous_response_id``), which only that
upstream holds. So every response id the server hands out says which upstream made it
(:func:`pinned_id`: ``resp_rl`` + ``s`` or ``w`` + ``_`` + the upstream's own id), and a
follow-up goes to that upstream, unscored, with the upstream's id put back
(:func:`response_pin`). Nothing is stored in the server: any worker or replica
routes a follow-up the same way, and an id the server did not make is refused (400)
instead of sent to an upstream that does not hold it.

For escalation (``--escalate-on``), :func:`response_view` and :func:`response_stream_view`
read a response (or the buffered events of a streamed one) as the checks see it, and
:func:`responses_call_context` what the request asked for (its function tools, a
required tool call, a JSON-schema ``text.format``).

The ``conversation`` parameter (the Conversations API) and ``background`` responses
are refused (400): a conversation's id does not say which upstream holds it, and a
background response is polled through endpoints the server does not route.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Optional

from shared_core.escalation import AnswerView, CallContext
from shared_core.ledger import completion_token_bound, prompt_token_bound
from shared_core.routers import Role
from shared_core.server.protocol import (
    APIError,
    check_stream_and_model,
    format_schema,
    json_object,
    preview,
    tool_call,
    tool_required,
)

RESPONSES_PATH = "responses"  # relative: joined to the upstream's base URL
PIN_PREFIX = "resp_rl"
_MARKS = {Role.STRONG: "s", Role.WEAK: "w"}
_ROLES = {mark: role for role, mark in _MARKS.items()}
#: Input item roles, as the chat messages routing reads.
_ITEM_ROLES = ("user", "assistant", "system", "developer")
#: Content parts that are text (their ``text`` is what a router reads and what the bound counts).
TEXT_PARTS = ("input_text", "output_text", "text", "refusal")


def pinned_id(role: Role, upstream_id: str) -> str:
    """The id a client gets for the response ``upstream_id`` of the ``role`` upstream.

    Example:
        >>> pinned_id(Role.WEAK, "resp_123")
        'resp_rlw_resp_123'
        >>> response_pin("resp_rlw_resp_123")
        (<Role.WEAK: 'weak'>, 'resp_123')
    """
    return f"{PIN_PREFIX}{_MARKS[role]}_{upstream_id}"


def response_pin(value: str) -> Optional[tuple[Role, str]]:
    """The upstream and its own id for an id of :func:`pinned_id`; ``None`` for any other string."""
    if not value.startswith(PIN_PREFIX) or len(value) < len(PIN_PREFIX) + 3:
        return None
    mark, sep, upstream_id = value[len(PIN_PREFIX)], value[len(PIN_PREFIX) + 1], value[len(PIN_PREFIX) + 2:]
    if sep != "_" or mark not in _ROLES:
        return None
    return _ROLES[mark], upstream_id


def parse_responses_request(raw: bytes, max_items: int) -> dict[str, Any]:
    """The request body as a dict, or :class:`APIError` (400) naming what is wrong.

    Checked: what routing needs (``input`` a string or a non-empty list of at most
    ``max_items`` objects, ``instructions`` a string or null, ``stream`` a boolean,
    ``model`` a string), ``previous_response_id`` an id this server made, and no
    ``conversation`` nor ``background`` (see the module). Every other field passes
    through unchanged.

    Example:
        >>> parse_responses_request(b'{"input": "Hi", "temperature": 0}', 10)["temperature"]
        0
        >>> try:
        ...     parse_responses_request(b'{"input": "Hi", "previous_response_id": "resp_abc"}', 10)
        ... except APIError as exc:
        ...     print(exc.status, exc.param)
        400 previous_response_id
    """
    payload = json_object(raw)
    if "input" not in payload:
        raise APIError(400, "missing required parameter: 'input'", param="input", code="missing_required_parameter")
    items = payload["input"]
    if isinstance(items, list):
        if not items:
            raise APIError(400, "'input' must be a string or a non-empty array of input items, got []",
                           param="input", code="invalid_type")
        if len(items) > max_items:
            raise APIError(400, f"'input' holds {len(items)} items; this server accepts at most {max_items}",
                           param="input", code="too_many_messages")
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise APIError(400, f"input[{i}] must be an object, got {preview(item)}", param=f"input[{i}]",
                               code="invalid_type")
            if "role" in item and item["role"] not in _ITEM_ROLES:
                raise APIError(400, f"input[{i}].role must be one of {', '.join(_ITEM_ROLES)}, got "
                               f"{preview(item['role'])}", param=f"input[{i}].role", code="invalid_value")
    elif not isinstance(items, str):
        raise APIError(400, f"'input' must be a string or an array of input items, got {preview(items)}",
                       param="input", code="invalid_type")
    for name in ("instructions", "previous_response_id"):
        if payload.get(name) is not None and not isinstance(payload[name], str):
            raise APIError(400, f"'{name}' must be a string, got {preview(payload[name])}", param=name,
                           code="invalid_type")
    check_stream_and_model(payload)
    previous = payload.get("previous_response_id")
    if previous is not None and response_pin(previous) is None:
        raise APIError(400, f"previous_response_id {previous!r} is not the id of a response this server made (its "
                       f"ids start with {PIN_PREFIX!r}); a response made elsewhere is held by an upstream this "
                       "server cannot tell", param="previous_response_id", code="invalid_value")
    if payload.get("conversation") is not None:
        raise APIError(400, "'conversation' is not supported by this routing server: a conversation's id does not "
                       "say which upstream holds it; chain responses with previous_response_id instead",
                       param="conversation", code="unsupported_parameter")
    if payload.get("background"):
        raise APIError(400, "background responses are not supported by this routing server (they are polled "
                       "through endpoints it does not route); send the request without 'background'",
                       param="background", code="unsupported_parameter")
    return payload


def _content(content: Any) -> Any:
    """An item's content as a chat message's: a string, or its parts with text parts as ``text`` blocks."""
    if not isinstance(content, list):
        return content
    return [{"type": "text", "text": part["text"]}
            if isinstance(part, dict) and part.get("type") in TEXT_PARTS and isinstance(part.get("text"), str)
            else part for part in content]


def responses_conversation(payload: dict[str, Any]) -> list[tuple[str, Any]]:
    """The request as the ``(role, content)`` pairs of :mod:`shared_core.policy`:
    ``instructions`` as a system message, then the input's messages (a string input is
    one user message); a tool's output is a ``tool`` message, other items (function
    calls, reasoning) an assistant turn without text.

    Example:
        >>> responses_conversation({"instructions": "Be brief.", "input": "Hi"})
        [('system', 'Be brief.'), ('user', 'Hi')]
    """
    turns: list[tuple[str, Any]] = []
    if isinstance(payload.get("instructions"), str):
        turns.append(("system", payload["instructions"]))
    items = payload["input"]
    if isinstance(items, str):
        return turns + [("user", items)]
    for item in items:
        if "role" in item:
            turns.append((item["role"], _content(item.get("content"))))
        elif item.get("type") == "function_call_output":
            turns.append(("tool", item.get("output")))
        else:
            turns.append(("assistant", None))
    return turns


def response_token_bounds(payload: dict[str, Any], max_output_tokens: Optional[int] = None
                          ) -> Optional[tuple[int, int]]:
    """Upper bounds on the input and output tokens a Responses request can be billed, or
    ``None`` where there are none (as :func:`shared_core.server.protocol.token_bounds`):
    the input is the body's UTF-8 bytes as JSON (text only); a follow-up
    (``previous_response_id``) has none, since the upstream adds the stored conversation,
    which the server never sees. The output is ``max_output_tokens``, else the server's
    ``max_output_tokens``.

    Example:
        >>> response_token_bounds({"input": "Hi", "max_output_tokens": 50})
        (112, 50)
        >>> response_token_bounds({"input": "Hi", "previous_response_id": "resp_rls_1"}, 1000) is None
        True
    """
    limit = payload.get("max_output_tokens")
    completion = completion_token_bound(max_output_tokens if limit is None else limit, None)
    if completion is None or payload.get("previous_response_id") is not None:
        return None
    items = payload["input"] if isinstance(payload["input"], list) else []
    for item in items:
        content = item.get("content")
        if isinstance(content, list) and not all(
                isinstance(part, dict) and part.get("type") in TEXT_PARTS for part in content):
            return None
    return prompt_token_bound([json.dumps(payload, ensure_ascii=False)], max(1, len(items))), completion


def responses_usage(usage: Any) -> Optional[dict[str, Any]]:
    """A Responses ``usage`` (``input_tokens``, ``output_tokens``) in the chat names the
    metrics count (``prompt_tokens``, ``completion_tokens``); ``None`` without one."""
    if not isinstance(usage, dict):
        return None
    return {"prompt_tokens": usage.get("input_tokens"), "completion_tokens": usage.get("output_tokens")}


def answer_usage(value: Any) -> Optional[dict[str, Any]]:
    """The usage of an answer: a response object's, or a buffered stream's (its last ``response``)."""
    if isinstance(value, dict):
        return responses_usage(value.get("usage"))
    return ResponsesScanner.read(value).usage


def with_pinned_id(response: dict[str, Any], role: Role) -> dict[str, Any]:
    """A response object as the client gets it: its ``id`` (and the ``previous_response_id``
    it continues, which the same upstream made) as :func:`pinned_id` makes them."""
    ids = {key: pinned_id(role, response[key]) for key in ("id", "previous_response_id")
           if isinstance(response.get(key), str)}
    return {**response, **ids}


def error_event(error: dict[str, Any]) -> bytes:
    """An upstream error after a stream began, as a Responses stream's ``error`` event."""
    body = error.get("error", {})
    data = {"type": "error", "code": body.get("code"), "message": body.get("message"), "param": body.get("param")}
    return f"event: error\ndata: {json.dumps(data)}\n\n".encode()


def response_view(response: dict[str, Any]) -> AnswerView:
    """A response object as the checks see it: the text of its messages (refusals
    included), its function calls, and as the finish reason its ``status``, or for an
    incomplete one the reason (``max_output_tokens`` is a length reason).

    Example:
        >>> view = response_view({"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"},
        ...     "output": [{"type": "message", "content": [{"type": "output_text", "text": "Hi"}]}]})
        >>> view.text, view.finish_reason
        ('Hi', 'max_output_tokens')
    """
    text, calls = [], []
    for item in response.get("output") or []:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "message":
            for part in item.get("content") or []:
                value = part.get("refusal" if part.get("type") == "refusal" else "text") \
                    if isinstance(part, dict) else None
                if isinstance(value, str):
                    text.append(value)
        elif item.get("type") == "function_call":
            calls.append(tool_call(item.get("name"), item.get("arguments")))
    finish = response.get("status")
    details = response.get("incomplete_details")
    if finish == "incomplete" and isinstance(details, dict) and isinstance(details.get("reason"), str):
        finish = details["reason"]
    return AnswerView(text="".join(text), tool_calls=tuple(calls), finish_reason=finish, raw=response)


def response_stream_view(chunks: Any) -> AnswerView:
    """A whole streamed response as the checks see it: its last ``response`` object
    (``response.completed`` or ``response.incomplete``), or, if the stream ended before
    one with output, the text of its deltas."""
    chunks = list(chunks)
    scanner = ResponsesScanner.read(chunks, deltas=True)
    last = scanner.response or {}
    if last.get("output"):
        return replace(response_view(last), raw=chunks)
    return AnswerView(text="".join(scanner.deltas), finish_reason=last.get("status"), raw=chunks)


def responses_call_context(payload: dict[str, Any]) -> CallContext:
    """What a Responses request asked for: its function tools (name -> parameter schema),
    whether a tool call was required (``tool_choice`` ``"required"`` or a named function),
    and the schema of a ``json_schema`` ``text.format`` (``{"type": "object"}`` for ``json_object``)."""
    tools = {tool["name"]: tool.get("parameters") or {"type": "object"} for tool in payload.get("tools") or []
             if isinstance(tool, dict) and tool.get("type") == "function" and isinstance(tool.get("name"), str)}
    text = payload.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    return CallContext(tools=tools, tool_required=tool_required(payload.get("tool_choice")),
                       output_schema=format_schema(fmt, fmt.get("schema") if isinstance(fmt, dict) else None))


class ResponsesScanner:
    """Passes a Responses event stream on, line by line, with the ``id`` of each event's
    ``response`` object (``response.created``, ``response.completed``, ...) made a
    :func:`pinned_id` of ``role`` (``None``: read only) and that line written again as
    compact JSON; every other line byte for byte. :attr:`usage` is the last usage seen
    (a ``response.completed`` event's), in the chat names (:func:`responses_usage`),
    :attr:`response` the last response object (as the upstream sent it), and with
    ``deltas`` :attr:`deltas` the text deltas. A line longer than ``LONG`` is passed on unread."""

    LONG = 1 << 24

    def __init__(self, role: Optional[Role], deltas: bool = False) -> None:
        self.role = role
        self._read_deltas = deltas
        self.usage: Optional[dict[str, Any]] = None
        self.response: Optional[dict[str, Any]] = None
        self.deltas: list[str] = []
        self._tail = b""
        self._long = False  # the partial line is longer than LONG (its start already passed on)

    @classmethod
    def read(cls, chunks: Any, deltas: bool = False) -> "ResponsesScanner":
        """A scanner that has read a whole buffered stream (its list of chunks)."""
        scanner = cls(None, deltas)
        for chunk in chunks or ():
            scanner.feed(chunk)
        scanner.flush()
        return scanner

    def feed(self, chunk: bytes) -> bytes:
        lines = (self._tail + chunk).split(b"\n")
        self._tail = lines.pop()
        sent = [self._line(line) + b"\n" for line in lines]
        if len(self._tail) > self.LONG:
            sent.append(self._tail)
            self._tail, self._long = b"", True
        return b"".join(sent)

    def flush(self) -> bytes:
        """The end of the stream: a last line without a newline."""
        tail, self._tail = self._tail, b""
        return self._line(tail) if tail else b""

    def _line(self, line: bytes) -> bytes:
        long, self._long = self._long, False
        if long or not line.startswith(b"data:"):
            return line
        delta = self._read_deltas and b'"response.output_text.delta"' in line
        if not delta and b'"response"' not in line:
            return line
        try:
            data = json.loads(line[5:])
        except ValueError:
            return line
        if delta and isinstance(data, dict) and isinstance(data.get("delta"), str):
            self.deltas.append(data["delta"])
        response = data.get("response") if isinstance(data, dict) else None
        if not isinstance(response, dict):
            return line
        self.response = response
        if isinstance(response.get("usage"), dict):
            self.usage = responses_usage(response["usage"])
        if self.role is None or not isinstance(response.get("id"), str):
            return line
        data["response"] = with_pinned_id(response, self.role)
        end = b"\r" if line.endswith(b"\r") else b""
        return b"data: " + json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode() + end
