"""A stream's usage, asked of the model that streams it.

OpenAI's chat API reports a stream's token usage only if the request asks for it
(``stream_options.include_usage``), and most clients do not ask: LangChain's
ChatOpenAI only from OpenAI's own endpoint, LlamaIndex's OpenAI LLM never. A stream
without usage cannot be priced or charged to a budget, so the wrappers and the server
ask for it. A strict OpenAI-compatible server refuses the field; such a model (or
upstream) gets the stream again as the caller asked for it, and is not asked again:
:class:`Refusals` remembers it.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

__all__ = ["Refusals", "aretried_stream", "refuses_stream_options", "retried_stream"]


def refuses_stream_options(status: Any, message: Any) -> bool:
    """Whether an error before a stream is the endpoint's refusal of ``stream_options``:
    HTTP 400 or 422 whose message (or parameter) names the field.

    Example:
        >>> refuses_stream_options(400, "Unrecognized request argument supplied: stream_options")
        True
        >>> refuses_stream_options(400, "max_tokens is too large")
        False
    """
    return status in (400, 422) and "stream_options" in str(message)


class Refusals:
    """The models whose endpoint refused ``stream_options``, held by weak reference
    (framework models are pydantic objects, which are not hashable), each dropped when
    the model is."""

    def __init__(self) -> None:
        self._refs: dict[int, weakref.ref] = {}
        self._lock = threading.Lock()

    def add(self, model: Any) -> None:
        key = id(model)

        def dropped(_: Any) -> None:
            with self._lock:
                self._refs.pop(key, None)

        with self._lock:
            self._refs[key] = weakref.ref(model, dropped)

    def __contains__(self, model: Any) -> bool:
        ref = self._refs.get(id(model))
        return ref is not None and ref() is model


def retried_stream(chunks: Iterator[Any], again: Callable[[], Iterator[Any]],
                   refused: Callable[[BaseException], bool]) -> Iterator[Any]:
    """``chunks``; or, if it fails before its first chunk with an error ``refused`` takes
    for a refusal of ``stream_options`` (and records), the stream ``again()`` makes."""
    try:
        first = next(chunks)
    except StopIteration:
        return
    except Exception as exc:  # noqa: BLE001 - only a refusal of the field is retried; the rest re-raised
        if not refused(exc):
            raise
        yield from again()
        return
    yield first
    yield from chunks


async def aretried_stream(chunks: AsyncIterator[Any], again: Callable[[], Awaitable[AsyncIterator[Any]]],
                          refused: Callable[[BaseException], bool]) -> AsyncIterator[Any]:
    """:func:`retried_stream` for an async stream (``again`` returns an awaitable of one)."""
    try:
        first = await chunks.__anext__()
    except StopAsyncIteration:
        return
    except Exception as exc:  # noqa: BLE001 - only a refusal of the field is retried; the rest re-raised
        if not refused(exc):
            raise
        async for chunk in await again():
            yield chunk
        return
    yield first
    async for chunk in chunks:
        yield chunk
