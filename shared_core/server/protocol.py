"""The OpenAI wire format as the server checks and answers it.

:func:`parse_chat_request` turns a request body into the dict forwarded upstream,
checking only what routing needs (a JSON object, a ``messages`` list within the
limit, each message an object with a string ``role``, ``stream`` a boolean); every
other field is the upstream's business and passes through unchanged.
:class:`APIError` is an error the client sees, as OpenAI writes it:
``{"error": {"message", "type", "param", "code"}}``.

For escalation (:mod:`shared_core.escalation`), :func:`completion_view` and
:func:`stream_view` read an answer, a JSON completion or the buffered bytes of a
stream, as the checks see it, and :func:`call_context` reads what the request asked
for (its ``tools``, a required tool call, a JSON-schema ``response_format``).
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Optional

from shared_core.escalation import AnswerView, CallContext, ToolCall
from shared_core.ledger import completion_token_bound, prompt_token_bound

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


def json_object(raw: bytes) -> dict[str, Any]:
    """A request body as the JSON object it must be, or :class:`APIError` (400)."""
    try:
        payload = json.loads(raw)
    except UnicodeDecodeError:
        raise APIError(400, "request body is not UTF-8 text", code="invalid_json") from None
    except json.JSONDecodeError as exc:
        raise APIError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise APIError(400, f"request body must be a JSON object, got {type(payload).__name__}", code="invalid_json")
    return payload


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
    payload = json_object(raw)
    if "messages" not in payload:
        raise APIError(400, "missing required parameter: 'messages'", param="messages", code="missing_required_parameter")
    messages = payload["messages"]
    if not isinstance(messages, list) or not messages:
        raise APIError(400, f"'messages' must be a non-empty array of message objects, got {preview(messages)}",
                       param="messages", code="invalid_type")
    if len(messages) > max_messages:
        raise APIError(400, f"'messages' holds {len(messages)} messages; this server accepts at most {max_messages}",
                       param="messages", code="too_many_messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise APIError(400, f"messages[{i}] must be an object with a string 'role', got {preview(message)}",
                           param=f"messages[{i}]", code="invalid_type")
    check_stream_and_model(payload)
    return payload


def check_stream_and_model(payload: dict[str, Any]) -> None:
    """:class:`APIError` (400) unless ``stream`` is a boolean (or null) and ``model`` a string (or null)."""
    stream = payload.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise APIError(400, f"'stream' must be a boolean, got {preview(stream)}", param="stream", code="invalid_type")
    model = payload.get("model")
    if model is not None and not isinstance(model, str):
        raise APIError(400, f"'model' must be a string, got {preview(model)}", param="model", code="invalid_type")


def asking_stream_usage(payload: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The streamed request as sent upstream so that its answer reports usage, and whether
    the client did not ask for it (its stream then has the usage taken out again:
    :class:`shared_core.server.app._UsageScanner`).

    ``stream_options.include_usage`` is set, other ``stream_options`` keys kept. A request
    that already asks for usage, is not streamed, or whose ``stream_options`` is not an
    object (or whose ``include_usage`` is neither a boolean nor null: the upstream's to
    judge) is returned as it is.

    Example:
        >>> asking_stream_usage({"stream": True, "stream_options": {"continuous_usage_stats": True}})
        ({'stream': True, 'stream_options': {'continuous_usage_stats': True, 'include_usage': True}}, True)
        >>> asking_stream_usage({"stream": True, "stream_options": {"include_usage": True}})[1]
        False
    """
    options = payload.get("stream_options")
    if payload.get("stream") is not True or not isinstance(options, (dict, type(None))):
        return payload, False
    asked = (options or {}).get("include_usage", False)
    if asked is not False and asked is not None:
        return payload, False
    return {**payload, "stream_options": {**(options or {}), "include_usage": True}}, True


def token_bounds(payload: dict[str, Any], max_output_tokens: Optional[int] = None) -> Optional[tuple[int, int]]:
    """Upper bounds on the prompt and completion tokens a chat request can be billed, or
    ``None`` where the request sets none; for an answer that reported no usage (a stream
    whose client left before its usage chunk, an upstream that sends none), which a budget
    then charges at this bound instead of counting its period spent.

    Prompt: :func:`~shared_core.ledger.prompt_token_bound` of the request body as JSON
    (whose keys and quotes, on top, outnumber a chat template's own tokens). Only for
    text: a message part of another type (an image, audio, a file) has no such bound, nor
    has a request for output other than text (``modalities``) or a predicted output.
    Completion: ``max_completion_tokens`` (else ``max_tokens``, else ``max_output_tokens``,
    the most the model can answer) times ``n``; none of them, no bound.

    Example:
        >>> token_bounds({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 100})
        (140, 100)
        >>> token_bounds({"messages": [{"role": "user", "content": "Hi"}]}) is None
        True
        >>> token_bounds({"messages": [{"role": "user", "content": "Hi"}]}, max_output_tokens=16384)
        (121, 16384)
    """
    limit = payload.get("max_completion_tokens")
    if limit is None:
        limit = payload.get("max_tokens")
    if limit is None:
        limit = max_output_tokens
    completion = completion_token_bound(limit, payload.get("n"))
    if completion is None:
        return None
    if payload.get("prediction") is not None or any(m != "text" for m in payload.get("modalities") or ()):
        return None
    for message in payload["messages"]:
        content = message.get("content")
        if isinstance(content, list) and not all(
                isinstance(part, dict) and part.get("type") in ("text", "refusal") for part in content):
            return None
    return prompt_token_bound([json.dumps(payload, ensure_ascii=False)], len(payload["messages"])), completion


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
    if record.get("escalated"):
        headers[HEADER_PREFIX + "escalated-from"] = record["escalated"]["from"]
        headers[HEADER_PREFIX + "escalation-reason"] = header_text(record["escalated"]["reason"])
    if record.get("escalation_refused"):
        headers[HEADER_PREFIX + "escalation-refused"] = record["escalation_refused"]["because"]
        headers[HEADER_PREFIX + "escalation-reason"] = header_text(record["escalation_refused"]["reason"])
    return headers


def header_text(text: str, limit: int = 300) -> str:
    """``text`` as a header value: ASCII (others as ``\\u`` escapes), one line, at most ``limit`` characters."""
    flat = " ".join(str(text).split())
    escaped = flat.encode("ascii", "backslashreplace").decode("ascii")
    return escaped if len(escaped) <= limit else escaped[: limit - 3] + "..."


# What the escalation checks see -----------------------------------------------------------
def tool_call(name: Any, arguments: Any) -> ToolCall:
    """A tool call as the checks see it: its arguments parsed if they are a JSON string."""
    try:
        args = json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError:
        args = arguments  # not JSON: the tool_calls check says so
    return ToolCall(str(name or ""), args)


def _tool_calls(calls: Any) -> tuple[ToolCall, ...]:
    functions = (call.get("function") if isinstance(call, dict) else None
                 for call in (calls if isinstance(calls, list) else []))
    return tuple(tool_call(f.get("name"), f.get("arguments")) for f in functions if isinstance(f, dict))


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(p.get("text") or "" for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def completion_view(completion: dict[str, Any]) -> AnswerView:
    """A non-streamed chat completion (its first choice) as the checks see it.

    Example:
        >>> view = completion_view({"choices": [{"message": {"content": "Hi"}, "finish_reason": "length"}]})
        >>> view.text, view.finish_reason
        ('Hi', 'length')
    """
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    return AnswerView(text=_text(message.get("content")), tool_calls=_tool_calls(message.get("tool_calls")),
                      finish_reason=choice.get("finish_reason"), raw=completion)


def sse_event(line: bytes) -> Optional[dict[str, Any]]:
    """The JSON object of one server-sent event line if it is a ``data:`` line holding one, else ``None``."""
    if not line.startswith(b"data:"):
        return None
    try:
        data = json.loads(line[5:])
    except ValueError:  # [DONE], or not JSON
        return None
    return data if isinstance(data, dict) else None


def sse_data(chunks: Iterable[bytes]) -> list[dict[str, Any]]:
    """The JSON objects of a server-sent event stream's ``data:`` lines (``[DONE]`` and other lines skipped)."""
    events = (sse_event(line) for line in b"".join(chunks).split(b"\n"))
    return [event for event in events if event is not None]


def stream_view(chunks: Iterable[bytes]) -> AnswerView:
    """A whole streamed answer (its first choice's deltas added up) as the checks see it.

    Example:
        >>> events = [b'data: {"choices": [{"delta": {"content": "I can"}}]}\\n\\n',
        ...           b'data: {"choices": [{"delta": {"content": "not help"}, "finish_reason": "stop"}]}\\n\\n']
        >>> view = stream_view(events)
        >>> view.text, view.finish_reason
        ('I cannot help', 'stop')
    """
    chunks = list(chunks)
    text, finish, calls = [], None, {}
    for event in sse_data(chunks):
        choices = event.get("choices")
        for choice in choices if isinstance(choices, list) else []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
            text.append(_text(delta.get("content")))
            for call in delta.get("tool_calls") or []:
                if not isinstance(call, dict):
                    continue
                entry = calls.setdefault(call.get("index", len(calls)), {"name": "", "arguments": ""})
                function = call.get("function") if isinstance(call.get("function"), dict) else {}
                entry["name"] += function.get("name") or ""
                entry["arguments"] += function.get("arguments") or ""
            finish = choice.get("finish_reason") or finish
    merged = [{"function": calls[i]} for i in sorted(calls)]
    return AnswerView(text="".join(text), tool_calls=_tool_calls(merged), finish_reason=finish, raw=chunks)


def call_context(payload: dict[str, Any]) -> CallContext:
    """What a request asked for: its function tools (name -> parameter schema), whether a
    tool call was required (``tool_choice`` ``"required"`` or a named function), and the
    schema of a ``json_schema`` (or ``{"type": "object"}`` for a ``json_object``) response format."""
    tools = {}
    for tool in payload.get("tools") or []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            tools[function["name"]] = function.get("parameters") or {"type": "object"}
    fmt = payload.get("response_format")
    spec = fmt.get("json_schema") if isinstance(fmt, dict) else None
    return CallContext(tools=tools, tool_required=tool_required(payload.get("tool_choice")),
                       output_schema=format_schema(fmt, spec.get("schema") if isinstance(spec, dict) else None))


def tool_required(choice: Any) -> bool:
    """Whether a ``tool_choice`` requires a tool call: ``"required"`` or a named function."""
    return choice == "required" or (isinstance(choice, dict) and choice.get("type") == "function")


def format_schema(fmt: Any, schema: Any) -> Optional[dict[str, Any]]:
    """The output schema an answer format asks for: for ``json_schema`` its ``schema`` (or
    ``{"type": "object"}`` without one), for ``json_object`` ``{"type": "object"}``, else ``None``."""
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_schema":
        return schema if isinstance(schema, dict) and schema else {"type": "object"}
    return {"type": "object"} if kind == "json_object" else None


def preview(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."
