"""The Responses API served by an upstream that speaks only chat completions.

llama-cpp-python's server, older Ollama and LM Studio builds, and many hosted
OpenAI-compatible endpoints serve ``/chat/completions`` and no ``/responses``. An
upstream configured with ``responses = "chat"`` (``--weak-responses chat``) gets a
Responses request as the chat completion request that means the same
(:func:`chat_request`), and its answer comes back as a response object
(:func:`response_from_completion`) or, streamed, as the Responses events a client's SDK
accumulates (:class:`ResponsesFromChatStream`). The rest of the server (routing, pinned
ids, usage, the budget, escalation checks) sees a Responses upstream like any other.

What a chat completion cannot say is never dropped: built-in tools (``web_search``,
``file_search``, ...), ``item_reference`` items, encrypted ``reasoning`` items,
``include``, ``prompt`` templates, ``top_logprobs``, ``max_tool_calls``,
``truncation: "auto"``, reasoning summaries. :func:`chat_request` raises
:class:`Untranslatable` for them, and the server sends such a request to the other
upstream when that one has the Responses API (unscored), or else refuses it with a 400
naming the parameter, before any upstream is called. Such an upstream keeps no responses,
so a follow-up of one of its responses (``previous_response_id``) and ``GET`` of a stored
one are refused too (send the whole conversation as ``input``, as the OpenAI Agents SDK
does by default), and the response object says ``"store": false``. Fields the Responses
API does not define (a vendor's ``top_k``, ``repeat_penalty``) pass through to the chat
request unchanged.

The mapping: ``instructions`` and ``system``/``developer`` messages are system messages;
message content parts ``input_text``/``output_text``/``refusal`` are text (one text part is
a plain string), ``input_image`` an ``image_url`` part, ``input_file`` a ``file`` part;
``function_call`` items are the assistant's ``tool_calls`` (joined to the assistant message
before them), ``function_call_output`` items ``tool`` messages, and a ``reasoning`` item's
text (its ``reasoning_text`` content, else its summary) the ``reasoning_content`` of the
assistant turn it begins (an item without text and not encrypted holds nothing to send:
it adds nothing); function ``tools`` and
``tool_choice`` take chat's nested form; ``text.format`` is ``response_format``,
``text.verbosity`` ``verbosity``, ``reasoning.effort`` ``reasoning_effort``,
``max_output_tokens`` ``max_tokens``; ``metadata`` is echoed in the response, not sent.
A reasoning model's ``reasoning_content`` (or ``reasoning``) comes back as a ``reasoning``
item before the message, with ``reasoning_text`` content (streamed: its
``response.reasoning_text.delta`` events), as llama.cpp's own Responses endpoint writes it,
so a client that sends a turn's items back (the Agents SDK) returns it to the model.
"""

from __future__ import annotations

import json
import time
from typing import Any, Optional

from shared_core.server.protocol import APIError, preview, sse_event

#: Request fields that map one to one onto the chat request under the same name.
_SAME = ("temperature", "top_p", "parallel_tool_calls", "user", "service_tier", "safety_identifier",
         "prompt_cache_key", "stream")
#: Fields a chat completion has no way to honour: refused when set (``None``, ``False`` and 0 are not set).
_REFUSED = {
    "prompt": "prompt templates are stored by OpenAI; send the prompt's text as input",
    "top_logprobs": "log probabilities are not translated",
    "max_tool_calls": "a chat completion cannot cap the number of built-in tool calls",
}
#: Request fields the translation reads itself (everything else passes through unchanged);
#: ``conversation`` and ``background`` are refused when set before this module sees them.
_READ = {"model", "input", "instructions", "max_output_tokens", "tools", "tool_choice", "text", "reasoning",
         "metadata", "store", "stream_options", "truncation", "include", "previous_response_id", "conversation",
         "background", *_SAME, *_REFUSED}
_TEXT_PARTS = ("input_text", "output_text", "text")


class Untranslatable(APIError):
    """A 400 for a well-formed Responses request that a chat completion cannot say (a
    malformed one is a plain :class:`APIError`): an upstream with the Responses API may
    still take it."""


def _refuse(message: str, param: str, code: str = "unsupported_parameter") -> Untranslatable:
    return Untranslatable(400, f"{message} (this upstream is reached through chat completions: --strong-responses / "
                          "--weak-responses chat)", param=param, code=code)


# The request -------------------------------------------------------------------------------
def chat_request(payload: dict[str, Any]) -> dict[str, Any]:
    """The chat completion request that means what the Responses request ``payload`` does,
    or :class:`Untranslatable` (400) naming the first parameter a chat completion cannot say
    (:class:`APIError`, 400, for a malformed one).

    Example:
        >>> chat_request({"model": "m", "instructions": "Be brief.", "input": "Hi", "max_output_tokens": 9})
        {'model': 'm', 'messages': [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'Hi'}], \
'max_tokens': 9}
        >>> try:
        ...     chat_request({"input": "Hi", "tools": [{"type": "web_search"}]})
        ... except APIError as exc:
        ...     print(exc.status, exc.param)
        400 tools[0].type
    """
    for name, why in _REFUSED.items():
        if payload.get(name) not in (None, False):
            raise _refuse(f"'{name}' cannot be sent to this upstream: {why}", name)
    if payload.get("previous_response_id") is not None:
        raise _refuse("this upstream keeps no responses, so none can be continued with previous_response_id; send "
                      "the whole conversation as input", "previous_response_id", "invalid_value")
    if payload.get("include"):
        raise _refuse(f"'include' ({preview(payload['include'])}) asks for output a chat completion does not "
                      "have; send it without 'include'", "include")
    if payload.get("truncation") not in (None, "disabled"):
        raise _refuse(f"truncation {preview(payload['truncation'])} is not translated; only 'disabled' (the "
                      "default) is", "truncation", "invalid_value")
    options = payload.get("stream_options")
    if isinstance(options, dict) and options.get("include_obfuscation"):
        raise _refuse("stream_options.include_obfuscation is not translated; a translated stream carries no "
                      "obfuscation", "stream_options.include_obfuscation")
    body: dict[str, Any] = {"model": payload["model"]} if "model" in payload else {}
    body["messages"] = messages(payload)
    body.update({name: value for name, value in payload.items() if name not in _READ})  # a vendor's own fields
    for name in _SAME:
        if payload.get(name) is not None:
            body[name] = payload[name]
    if payload.get("max_output_tokens") is not None:
        body["max_tokens"] = payload["max_output_tokens"]
    if payload.get("tools"):
        body["tools"] = [_tool(tool, i) for i, tool in enumerate(_list(payload["tools"], "tools"))]
    if payload.get("tool_choice") is not None:
        body["tool_choice"] = _tool_choice(payload["tool_choice"])
    body.update(_text_options(payload.get("text")))
    body.update(_reasoning(payload.get("reasoning")))
    return body


def _list(value: Any, param: str) -> list[Any]:
    if not isinstance(value, list):
        raise APIError(400, f"'{param}' must be an array, got {preview(value)}", param=param, code="invalid_type")
    return value


def messages(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The chat ``messages`` of a Responses request's ``instructions`` and ``input``."""
    out: list[dict[str, Any]] = []
    if isinstance(payload.get("instructions"), str):
        out.append({"role": "system", "content": payload["instructions"]})
    items = payload["input"]
    if isinstance(items, str):
        return out + [{"role": "user", "content": items}]
    for i, item in enumerate(items):
        kind = item.get("type", "message" if "role" in item else None)
        where = f"input[{i}]"
        if kind == "message":
            role = item.get("role")
            role = "system" if role == "developer" else role
            if role not in ("user", "assistant", "system"):
                raise APIError(400, f"{where}.role must be user, assistant, system or developer, got {preview(role)}",
                               param=f"{where}.role", code="invalid_value")
            content = _content(item.get("content"), f"{where}.content")
            if role == "assistant" and _reasoning_only(out):
                out[-1]["content"] = content  # the answer of the turn whose reasoning came first
            else:
                out.append({"role": role, "content": content})
        elif kind == "reasoning":
            # the reasoning of the assistant turn that follows it, as chat servers take it back
            # (llama.cpp's, vLLM's, DeepSeek's field); content "": see below
            text = _reasoning_text(item, where)
            if text is not None:
                out.append({"role": "assistant", "content": "", "reasoning_content": text})
        elif kind == "function_call":
            call = {"id": _string(item, "call_id", where), "type": "function",
                    "function": {"name": _string(item, "name", where), "arguments": _string(item, "arguments", where)}}
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)  # the calls of the turn this message began
            else:
                # content "", not null: llama-cpp-python's server, for one, refuses a null content
                out.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            content = output if isinstance(output, str) else _content(output, f"{where}.output")
            out.append({"role": "tool", "tool_call_id": _string(item, "call_id", where), "content": content})
        else:
            why = {"item_reference": "it names an item stored by OpenAI"}.get(
                kind, "only message, reasoning, function_call and function_call_output items are")
            raise _refuse(f"{where} is a {preview(kind)} item, which is not translated: {why}", f"{where}.type",
                          "invalid_value")
    return out


def _reasoning_only(messages: list[dict[str, Any]]) -> bool:
    """Whether the last message is an assistant turn that so far holds only its reasoning."""
    last = messages[-1] if messages else None
    return last is not None and last["role"] == "assistant" and "reasoning_content" in last and \
        last["content"] == "" and "tool_calls" not in last


def _reasoning_text(item: dict[str, Any], where: str) -> Optional[str]:
    """The text of a reasoning input item: its ``reasoning_text`` content (what a chat
    upstream's ``reasoning_content`` became, :func:`response_from_completion`), else its
    summary's text; ``None`` for an item with neither, which holds nothing a chat model could
    read (LangChain's streamed messages keep such an empty item). Encrypted reasoning
    (OpenAI's) cannot be said to a chat model."""
    if item.get("encrypted_content"):
        raise _refuse(f"{where} is a reasoning item with encrypted_content, which only the model that wrote it can "
                      "read", f"{where}.encrypted_content", "invalid_value")
    texts = []
    for name, kind in (("content", "reasoning_text"), ("summary", "summary_text")):
        parts = item.get(name) or []
        for j, part in enumerate(_list(parts, f"{where}.{name}")):
            if not isinstance(part, dict) or part.get("type") != kind or not isinstance(part.get("text"), str):
                raise APIError(400, f"{where}.{name}[{j}] must be a {kind} part with its text as a string, got "
                               f"{preview(part)}", param=f"{where}.{name}[{j}]", code="invalid_value")
            texts.append(part["text"])
        if texts:
            return "\n".join(texts)
    return None


def _string(item: dict[str, Any], name: str, where: str) -> str:
    value = item.get(name)
    if not isinstance(value, str):
        raise APIError(400, f"{where}.{name} must be a string, got {preview(value)}", param=f"{where}.{name}",
                       code="invalid_type")
    return value


def _content(content: Any, where: str) -> Any:
    """A message's content as chat's: a string stays one, and so does a single text part;
    other parts become chat's content parts."""
    if isinstance(content, str) or content is None:
        return content
    parts = [_part(part, f"{where}[{j}]") for j, part in enumerate(_list(content, where))]
    if len(parts) == 1 and parts[0]["type"] == "text":
        return parts[0]["text"]
    return parts


def _part(part: Any, where: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in _TEXT_PARTS or kind == "refusal":
        text = part.get("refusal" if kind == "refusal" else "text")
        if not isinstance(text, str):
            raise APIError(400, f"{where} must hold its text as a string, got {preview(text)}", param=where,
                           code="invalid_type")
        return {"type": "text", "text": text}
    if kind == "input_image":
        if not isinstance(part.get("image_url"), str):
            raise _refuse(f"{where} is an image without image_url (a file_id names a file stored by OpenAI)",
                          f"{where}.image_url", "invalid_value")
        image = {"url": part["image_url"]}
        if part.get("detail") is not None:
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        file = {key: part[key] for key in ("file_data", "file_id", "filename") if part.get(key) is not None}
        if not file.keys() & {"file_data", "file_id"}:
            raise _refuse(f"{where} is a file without file_data or file_id (file_url is not translated)",
                          f"{where}.file_data", "invalid_value")
        return {"type": "file", "file": file}
    raise _refuse(f"{where} is a {preview(kind)} content part, which is not translated (text, input_image and "
                  "input_file are)", f"{where}.type", "invalid_value")


def _tool(tool: Any, i: int) -> dict[str, Any]:
    kind = tool.get("type") if isinstance(tool, dict) else None
    if kind != "function":
        raise _refuse(f"tools[{i}] is a {preview(kind)} tool; only function tools can be sent to a chat model",
                      f"tools[{i}].type", "invalid_value")
    if not isinstance(tool.get("name"), str):
        raise APIError(400, f"tools[{i}].name must be a string, got {preview(tool.get('name'))}",
                       param=f"tools[{i}].name", code="invalid_type")
    function = {key: tool[key] for key in ("name", "description", "parameters", "strict") if tool.get(key) is not None}
    return {"type": "function", "function": function}


def _tool_choice(choice: Any) -> Any:
    if choice in ("none", "auto", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise _refuse(f"tool_choice {preview(choice)} is not translated (none, auto, required or a function is)",
                  "tool_choice", "invalid_value")


def _settings(value: Any, name: str, known: tuple[str, ...]) -> dict[str, Any]:
    """The object ``value`` of the request's ``name`` (``{}`` for null), or :class:`APIError`
    naming it when it is no object or naming its first key not among ``known``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise APIError(400, f"'{name}' must be an object, got {preview(value)}", param=name, code="invalid_type")
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise _refuse(f"{name}.{unknown[0]} is not translated", f"{name}.{unknown[0]}")
    return value


def _text_options(value: Any) -> dict[str, Any]:
    text = _settings(value, "text", ("format", "verbosity"))
    out: dict[str, Any] = {}
    if text.get("verbosity") is not None:
        out["verbosity"] = text["verbosity"]
    fmt = text.get("format")
    kind = fmt.get("type") if isinstance(fmt, dict) else fmt
    if fmt is None or kind == "text":
        return out
    if kind == "json_object":
        return {**out, "response_format": {"type": "json_object"}}
    if kind == "json_schema":
        schema = {key: fmt[key] for key in ("name", "schema", "strict", "description") if fmt.get(key) is not None}
        return {**out, "response_format": {"type": "json_schema", "json_schema": schema}}
    raise _refuse(f"text.format {preview(fmt)} is not translated (text, json_object and json_schema are)",
                  "text.format", "invalid_value")


def _reasoning(value: Any) -> dict[str, Any]:
    reasoning = _settings(value, "reasoning", ("effort", "summary", "generate_summary"))
    for name in ("summary", "generate_summary"):
        if reasoning.get(name) is not None:
            raise _refuse(f"reasoning.{name} is not translated: a chat completion returns no reasoning summary",
                          f"reasoning.{name}")
    return {} if reasoning.get("effort") is None else {"reasoning_effort": reasoning["effort"]}


# The answer --------------------------------------------------------------------------------
def _echo(payload: dict[str, Any]) -> dict[str, Any]:
    """The request's settings as a response object repeats them."""
    text = payload.get("text") if isinstance(payload.get("text"), dict) else {}
    reasoning = payload.get("reasoning") if isinstance(payload.get("reasoning"), dict) else {}
    return {
        "instructions": payload.get("instructions"), "max_output_tokens": payload.get("max_output_tokens"),
        "metadata": payload.get("metadata") or {}, "parallel_tool_calls": payload.get("parallel_tool_calls", True),
        "previous_response_id": None, "reasoning": {"effort": reasoning.get("effort"), "summary": None},
        "store": False, "temperature": payload.get("temperature"), "top_p": payload.get("top_p"),
        "text": {"format": {"type": "text"}, **text}, "tool_choice": payload.get("tool_choice", "auto"),
        "tools": payload.get("tools") or [], "truncation": "disabled", "user": payload.get("user"),
        "background": False, "error": None,
    }


def response_id(completion_id: Any) -> str:
    """The id of the response made from the chat completion ``completion_id``."""
    return f"resp_{completion_id}" if isinstance(completion_id, str) and completion_id else f"resp_{time.time_ns()}"


def _usage(usage: Any) -> Optional[dict[str, Any]]:
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    total = usage.get("total_tokens")
    if total is None and isinstance(prompt, int) and isinstance(completion, int):
        total = prompt + completion
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached}, "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": reasoning}, "total_tokens": total}


def _status(finish: Any) -> tuple[str, Optional[dict[str, str]]]:
    """A chat finish reason as a response's ``status`` and ``incomplete_details``."""
    if finish == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def _output_part(text: str, refusal: bool = False) -> dict[str, Any]:
    """A message's content part: its text, or (``refusal``) the model's refusal."""
    if refusal:
        return {"type": "refusal", "refusal": text}
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(item_id: str, text: Optional[str], refusal: Optional[str], status: str) -> dict[str, Any]:
    content = [_output_part(text)] if text is not None else []
    if refusal is not None:
        content.append(_output_part(refusal, refusal=True))
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def _reasoning_item(item_id: str, text: Optional[str], status: str) -> dict[str, Any]:
    """A reasoning item holding a chat model's reasoning as its ``reasoning_text`` content
    (as llama.cpp's server writes it; no summary, nothing encrypted)."""
    content = [] if text is None else [{"type": "reasoning_text", "text": text}]
    return {"type": "reasoning", "id": item_id, "summary": [], "content": content, "status": status}


def _chat_reasoning(message: dict[str, Any]) -> Optional[str]:
    """A chat message's (or stream delta's) reasoning: ``reasoning_content`` (llama.cpp,
    vLLM, DeepSeek, LM Studio) or a ``reasoning`` string (Ollama, OpenRouter)."""
    for name in ("reasoning_content", "reasoning"):
        if isinstance(message.get(name), str) and message[name]:
            return message[name]
    return None


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name, "arguments": arguments,
            "status": status}


def response_from_completion(completion: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """The response object of a chat ``completion`` answering the Responses request ``payload``:
    its reasoning as a ``reasoning`` item, its message (text, refusal) and its tool calls as
    ``function_call`` items, its finish
    reason as the status (``length``: incomplete at ``max_output_tokens``), its usage in the
    Responses names, and the request's settings echoed.

    Example:
        >>> done = response_from_completion({"id": "c1", "created": 5, "model": "m", "choices": [{"message": {
        ...     "role": "assistant", "content": "Hi"}, "finish_reason": "length"}]}, {"input": "Hi"})
        >>> done["id"], done["status"], done["incomplete_details"], done["output"][0]["content"][0]["text"]
        ('resp_c1', 'incomplete', {'reason': 'max_output_tokens'}, 'Hi')
    """
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    status, details = _status(choice.get("finish_reason"))
    rid = response_id(completion.get("id"))
    output: list[dict[str, Any]] = []
    text, refusal = message.get("content"), message.get("refusal")
    calls = [c for c in message.get("tool_calls") or [] if isinstance(c, dict)]
    if isinstance(text, list):  # content parts, as a few servers answer
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    text, refusal = (text if isinstance(text, str) else None), (refusal if isinstance(refusal, str) else None)
    if text is None and refusal is None and not calls:
        text = ""  # an empty answer is an empty message, as the escalation checks read it
    reasoning = _chat_reasoning(message)
    if reasoning is not None:
        output.append(_reasoning_item(f"rs_{rid[5:]}", reasoning, "completed"))
    if text is not None or refusal is not None:
        output.append(_message_item(f"msg_{rid[5:]}", text, refusal, "completed"))
    for j, call in enumerate(calls):
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        call_id = call.get("id") if isinstance(call.get("id"), str) else f"call_{rid[5:]}_{j}"
        output.append(_call_item(f"fc_{call_id}", call_id, str(function.get("name") or ""),
                                 str(function.get("arguments") or ""), "completed"))
    return {"id": rid, "object": "response", "created_at": completion.get("created") or int(time.time()),
            "model": completion.get("model") or payload.get("model"), "status": status,
            "incomplete_details": details, "output": output, "usage": _usage(completion.get("usage")),
            **_echo(payload)}


class ResponsesFromChatStream:
    """A chat completion stream (server-sent events, as bytes, cut anywhere) made into the
    Responses events that mean the same, as OpenAI writes them (``event:`` and ``data:``
    lines, ``sequence_number`` counting from 0): ``response.created`` and
    ``response.in_progress``; for the model's reasoning (``reasoning_content``), a reasoning
    item and its ``reasoning_text`` part added, ``response.reasoning_text.delta`` events and
    their ends; for the text, its message item and output_text part added,
    a ``response.output_text.delta`` per chunk, and their ends; for each tool call, its
    ``function_call`` item added, ``response.function_call_arguments.delta`` events and
    their ends; then ``response.completed`` (``response.incomplete`` at a length or content
    filter finish) with the whole response and its usage (the stream's usage chunk).

    A chat error chunk becomes an ``error`` event; a stream that ends before ``[DONE]``
    and without a finish reason ends with ``response.failed``.
    """

    def __init__(self, payload: dict[str, Any]) -> None:
        self.payload = payload
        self._tail = b""
        self._seq = 0
        self._response: Optional[dict[str, Any]] = None
        self._output: list[dict[str, Any]] = []
        self._reasoning: Optional[dict[str, Any]] = None  # the open reasoning item
        self._text: Optional[dict[str, Any]] = None  # the open message item
        self._calls: dict[int, dict[str, Any]] = {}  # open function_call items by the chat tool call index
        self._finish: Any = None
        self._usage: Any = None
        self._ended = False

    def feed(self, chunk: bytes) -> bytes:
        lines = (self._tail + chunk).split(b"\n")
        self._tail = lines.pop()
        return b"".join(self._line(line.rstrip(b"\r")) for line in lines)

    def flush(self) -> bytes:
        """The end of the upstream stream: its last line, then the response's end if not sent yet."""
        tail, self._tail = self._tail, b""
        out = self._line(tail.rstrip(b"\r")) if tail else b""
        if self._ended:
            return out
        if self._finish is None:
            return out + self._end(failure="the upstream's chat stream ended before it finished")
        return out + self._end()

    # events --------------------------------------------------------------------------
    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}\n\n".encode()

    def _line(self, line: bytes) -> bytes:
        if self._ended or not line.startswith(b"data:"):
            return b""
        if line[5:].strip() == b"[DONE]":
            return self._end() if self._response is not None else b""  # [DONE] before any chunk: flush says
        data = sse_event(line)
        if data is None:
            return b""
        if "error" in data:
            error = data["error"] if isinstance(data["error"], dict) else {"message": str(data["error"])}
            self._ended = True
            return self._begin(data) + self._event("error", code=error.get("code"), message=error.get("message"),
                                                   param=error.get("param"))
        out = self._begin(data)
        if isinstance(data.get("usage"), dict):
            self._usage = data["usage"]
        for choice in data.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
            reasoning = _chat_reasoning(delta)
            if reasoning is not None:
                out += self._reasoning_delta(reasoning)
            if isinstance(delta.get("content"), str) and delta["content"]:
                out += self._text_delta(delta["content"])
            if isinstance(delta.get("refusal"), str) and delta["refusal"]:
                out += self._text_delta(delta["refusal"], refusal=True)
            for call in delta.get("tool_calls") or []:
                if isinstance(call, dict):
                    out += self._call_delta(call)
            if choice.get("finish_reason") is not None:
                self._finish = choice["finish_reason"]
        return out

    def _begin(self, chunk: dict[str, Any]) -> bytes:
        if self._response is not None:
            return b""
        rid = response_id(chunk.get("id"))
        self._response = {"id": rid, "object": "response", "created_at": chunk.get("created") or int(time.time()),
                          "model": chunk.get("model") or self.payload.get("model"), "status": "in_progress",
                          "incomplete_details": None, "output": [], "usage": None, **_echo(self.payload)}
        return self._event("response.created", response=self._response) + \
            self._event("response.in_progress", response=self._response)

    def _reasoning_delta(self, delta: str) -> bytes:
        out = b""
        if self._reasoning is None:
            out += self._close_text() + self._close_calls()
            index = len(self._output)
            item = _reasoning_item(f"rs_{self._response['id'][5:]}_{index}", None, "in_progress")
            self._reasoning = {"index": index, "item": item, "text": ""}
            self._output.append(item)
            out += self._event("response.output_item.added", output_index=index, item=item)
            out += self._event("response.content_part.added", item_id=item["id"], output_index=index,
                               content_index=0, part={"type": "reasoning_text", "text": ""})
        self._reasoning["text"] += delta
        return out + self._event("response.reasoning_text.delta", item_id=self._reasoning["item"]["id"],
                                 output_index=self._reasoning["index"], content_index=0, delta=delta)

    def _close_reasoning(self) -> bytes:
        if self._reasoning is None:
            return b""
        state, self._reasoning = self._reasoning, None
        item, at = state["item"], {"item_id": state["item"]["id"], "output_index": state["index"], "content_index": 0}
        part = {"type": "reasoning_text", "text": state["text"]}
        done = {**item, "content": [part], "status": "completed"}
        self._output[state["index"]] = done
        return self._event("response.reasoning_text.done", **at, text=state["text"]) + \
            self._event("response.content_part.done", **at, part=part) + \
            self._event("response.output_item.done", output_index=state["index"], item=done)

    def _text_delta(self, delta: str, refusal: bool = False) -> bytes:
        out = self._close_reasoning() + self._close_calls()
        if self._text is None:
            index = len(self._output)
            item = _message_item(f"msg_{self._response['id'][5:]}_{index}", None, None, "in_progress")
            self._text = {"index": index, "item": item, "text": "", "refusal": ""}
            self._output.append(item)
            out += self._event("response.output_item.added", output_index=index, item=item)
        key = "refusal" if refusal else "text"
        if not self._text[key]:  # the part opens with its first delta
            part = _output_part("", refusal)
            self._text["item"]["content"].append(part)
            self._text[f"{key}_part"] = len(self._text["item"]["content"]) - 1
            out += self._event("response.content_part.added", item_id=self._text["item"]["id"],
                               output_index=self._text["index"], content_index=self._text[f"{key}_part"], part=part)
        self._text[key] += delta
        at = {"item_id": self._text["item"]["id"], "output_index": self._text["index"],
              "content_index": self._text[f"{key}_part"]}
        if refusal:
            return out + self._event("response.refusal.delta", **at, delta=delta)
        return out + self._event("response.output_text.delta", **at, delta=delta, logprobs=[])

    def _close_text(self) -> bytes:
        if self._text is None:
            return b""
        state, self._text = self._text, None
        item, out = state["item"], b""
        for key in ("text", "refusal"):
            if f"{key}_part" not in state:
                continue
            at = {"item_id": item["id"], "output_index": state["index"], "content_index": state[f"{key}_part"]}
            part = _output_part(state[key], refusal=key == "refusal")
            if key == "text":
                out += self._event("response.output_text.done", **at, text=state["text"], logprobs=[])
            else:
                out += self._event("response.refusal.done", **at, refusal=state["refusal"])
            item["content"][state[f"{key}_part"]] = part
            out += self._event("response.content_part.done", **at, part=part)
        done = {**item, "status": "completed"}
        self._output[state["index"]] = done
        return out + self._event("response.output_item.done", output_index=state["index"], item=done)

    def _call_delta(self, call: dict[str, Any]) -> bytes:
        index = call.get("index", 0) if isinstance(call.get("index"), int) else 0
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        out = b""
        state = self._calls.get(index)
        if state is None:
            out += self._close_reasoning() + self._close_text() + self._close_calls()
            call_id = call.get("id") if isinstance(call.get("id"), str) else \
                f"call_{self._response['id'][5:]}_{index}"
            item = _call_item(f"fc_{call_id}", call_id, str(function.get("name") or ""), "", "in_progress")
            state = {"index": len(self._output), "item": item}
            self._calls[index] = state
            self._output.append(item)
            out += self._event("response.output_item.added", output_index=state["index"], item=item)
        elif isinstance(function.get("name"), str) and function["name"] and not state["item"]["name"]:
            state["item"]["name"] = function["name"]
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            state["item"]["arguments"] += arguments
            out += self._event("response.function_call_arguments.delta", item_id=state["item"]["id"],
                               output_index=state["index"], delta=arguments)
        return out

    def _close_calls(self) -> bytes:
        out = b""
        for state in self._calls.values():
            item = state["item"]
            if item["status"] == "completed":
                continue
            out += self._event("response.function_call_arguments.done", item_id=item["id"],
                               output_index=state["index"], name=item["name"], arguments=item["arguments"])
            done = {**item, "status": "completed"}
            state["item"] = done
            self._output[state["index"]] = done
            out += self._event("response.output_item.done", output_index=state["index"], item=done)
        return out

    def _end(self, failure: Optional[str] = None) -> bytes:
        """The open items closed, then the response's last event: ``response.completed`` or
        ``response.incomplete`` by the finish reason, or with a ``failure``, ``response.failed``."""
        out = self._begin({}) + self._close_reasoning() + self._close_text() + self._close_calls()
        if failure is None:
            status, details = _status(self._finish)
            ending: dict[str, Any] = {"incomplete_details": details}
        else:
            status, ending = "failed", {"error": {"code": "server_error", "message": failure}}
        response = {**self._response, "status": status, **ending, "output": self._output, "usage": _usage(self._usage)}
        self._ended = True
        return out + self._event(f"response.{status}", response=response)
