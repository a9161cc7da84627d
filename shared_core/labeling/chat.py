"""What the labeller needs of a chat model: a callable from messages to a reply.

A *chat model* here is any callable ``model(messages) -> ChatReply | str`` taking
OpenAI-style messages (``[{"role": "user", "content": "..."}]``). LangChain chat
models adapt with :func:`langchain_routellm.labeling.from_langchain`;
OpenAI-compatible endpoints with :class:`OpenAIChat` (httpx only, no SDK).

A provider failure worth retrying (rate limit, server error, timeout, dropped
connection) is a :class:`ProviderError` with ``retryable=True``;
:func:`is_retryable` also recognises the OpenAI SDK's and httpx's errors by their
status code or kind, so a LangChain model needs no translation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Union

from shared_core.errors import ConfigError, RouteLLMError

Messages = list[dict[str, str]]

#: HTTP statuses a call is retried on: rate limits, timeouts, server errors.
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})


class ProviderError(RouteLLMError, RuntimeError):
    """A chat model's provider failed a call; ``retryable`` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


@dataclass(frozen=True)
class ChatReply:
    """A chat model's answer and the tokens it cost (``None`` when the provider did not say)."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class ChatModel(Protocol):
    def __call__(self, messages: Messages) -> Union[ChatReply, str]: ...


def as_reply(value: Any, who: str) -> ChatReply:
    """A chat model's return value as a :class:`ChatReply` (a plain string is accepted)."""
    if isinstance(value, ChatReply):
        reply = value
    elif isinstance(value, str):
        reply = ChatReply(value)
    else:
        raise ProviderError(
            f"{who} returned {type(value).__name__}; a chat model must return a ChatReply or a str",
            retryable=False,
        )
    if not isinstance(reply.text, str):
        raise ProviderError(f"{who} returned a reply whose text is {type(reply.text).__name__}", retryable=False)
    return reply


def is_retryable(exc: BaseException) -> bool:
    """Whether a failed call is worth repeating: provider errors marked so, HTTP 408/429/5xx,
    timeouts and lost connections (the OpenAI SDK's and httpx's included, by duck typing)."""
    if isinstance(exc, ProviderError):
        return exc.retryable
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    status = getattr(exc, "status_code", None)
    if status is None:
        status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(status, int):
        return status in RETRY_STATUSES
    name = type(exc).__name__
    return name in {"APIConnectionError", "APITimeoutError", "ConnectError", "ReadTimeout", "ConnectTimeout",
                    "RemoteProtocolError", "ReadError", "WriteError", "PoolTimeout"}


#: Request fields :class:`OpenAIChat` sets, or whose default it relies on (``stream``: one JSON reply);
#: ``extra_body`` may not set them.
OWN_FIELDS = ("model", "messages", "max_tokens", "temperature", "stream")


class OpenAIChat:
    """An OpenAI-compatible ``/chat/completions`` endpoint as a chat model.

    ``api_key`` is sent as a bearer token when given (pass it from an environment
    variable, never from a saved file). Greedy decoding (``temperature=0``) by
    default so that a repeated run asks the same question the same way.
    ``extra_body`` adds provider-specific fields to every request (as the ``openai``
    client's ``extra_body`` does), e.g. a ``response_format`` that constrains a judge
    to a verdict; it may not set the fields this class sets itself (:data:`OWN_FIELDS`).

        >>> model = OpenAIChat("http://127.0.0.1:8765/v1", "smollm2-135m-instruct")
        >>> model.name
        'smollm2-135m-instruct'
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        max_tokens: int = 512,
        temperature: float = 0.0,
        timeout: float = 120.0,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must be an http(s) URL such as http://127.0.0.1:8765/v1, got {base_url!r}")
        if not isinstance(model, str) or not model.strip():
            raise ConfigError(f"model must be a non-empty model name, got {model!r}")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ConfigError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        if extra_body is not None and not isinstance(extra_body, dict):
            raise ConfigError(f"extra_body must be a JSON object (a dict), got {type(extra_body).__name__}: {extra_body!r}")
        taken = sorted(set(extra_body or {}) & set(OWN_FIELDS))
        if taken:
            raise ConfigError(f"extra_body may not set {taken}: those come from this model's own settings {OWN_FIELDS}")
        self.extra_body = dict(extra_body or {})
        self.base_url = base_url.rstrip("/")
        self.name = model
        self.api_key = api_key
        self.max_tokens = max_tokens
        self.temperature = float(temperature)
        self.timeout = float(timeout)

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIChat({self.base_url!r}, {self.name!r}, max_tokens={self.max_tokens})"

    def __call__(self, messages: Messages) -> ChatReply:
        import httpx

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        body = {
            "model": self.name,
            "messages": messages,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            **self.extra_body,
        }
        url = f"{self.base_url}/chat/completions"
        try:
            response = httpx.post(url, json=body, headers=headers, timeout=self.timeout)
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            raise ProviderError(f"{self.name} at {url}: {type(exc).__name__}: {exc}", retryable=True) from None
        if response.status_code != 200:
            raise ProviderError(
                f"{self.name} at {url} answered HTTP {response.status_code}: {response.text[:200]}",
                retryable=response.status_code in RETRY_STATUSES,
                status=response.status_code,
            )
        try:
            data = response.json()
            text = data["choices"][0]["message"]["content"]
        except (json.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
            raise ProviderError(
                f"{self.name} at {url} sent no chat completion ({type(exc).__name__}): {response.text[:200]}",
                retryable=False,
            ) from None
        usage = data.get("usage") or {}
        return ChatReply(
            text if isinstance(text, str) else "",
            _int_or_none(usage.get("prompt_tokens")),
            _int_or_none(usage.get("completion_tokens")),
        )


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


ChatFn = Callable[[Messages], Union[ChatReply, str]]
