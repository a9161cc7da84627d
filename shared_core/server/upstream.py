"""The two OpenAI-compatible upstreams, called with httpx.

Each :class:`Upstream` owns one ``httpx.AsyncClient`` bound to its base URL, with
its key in the client's headers, requests only to paths relative to that URL and
redirects not followed: a key can reach no other host. Errors are
:class:`UpstreamError` carrying the upstream's HTTP status (504 for a timeout,
502 for a broken connection), which :mod:`shared_core.attempts` reads to decide
on a fallback (429 and 5xx fall back, other 4xx do not).

An upstream with ``responses="chat"`` has chat completions only: a Responses request
(path ``responses``) is sent to it as a chat completion and its answer comes back as
a response, or a Responses event stream (:mod:`shared_core.server.responses_chat`).
"""

from __future__ import annotations

import json
from contextlib import aclosing, asynccontextmanager
from typing import Any, AsyncIterator, Optional

import httpx

from shared_core.errors import RouteLLMError
from shared_core.routers import Role
from shared_core.server import responses_chat
from shared_core.server.responses import RESPONSES_PATH
from shared_core.stream_usage import refuses_stream_options

CHAT_PATH = "chat/completions"  # relative: joined to the base URL's path


class UpstreamError(RouteLLMError):
    """An upstream answered with an error, timed out or could not be reached."""

    def __init__(self, role: Role, model: str, status_code: int, message: str,
                 error_type: str = "upstream_error", param: Any = None, code: Any = None) -> None:
        self.role, self.model, self.status_code = role, model, status_code
        self.upstream_message, self.error_type, self.param, self.code = message, error_type, param, code
        super().__init__(f"the {role.value} model {model!r} returned HTTP {status_code}: {message}")

    def __reduce__(self):
        return (type(self), (self.role, self.model, self.status_code, self.upstream_message,
                             self.error_type, self.param, self.code))

    @property
    def refuses_stream_options(self) -> bool:
        """Whether this error, before a stream, is the upstream's refusal of ``stream_options``
        (a strict OpenAI-compatible server: HTTP 400 or 422 naming the field)."""
        return refuses_stream_options(self.status_code, f"{self.upstream_message} {self.param or ''}")


def _error_from_body(role: Role, model: str, status: int, body: bytes) -> UpstreamError:
    """An :class:`UpstreamError` from an error response, reading OpenAI's ``{"error": {...}}`` if there."""
    if not 400 <= status <= 599:  # a redirect: not followed, so that the key stays with its URL
        return UpstreamError(role, model, 502, f"answered HTTP {status}, which is not an answer (redirects are "
                             "not followed)")
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        return UpstreamError(role, model, status, str(err.get("message", "")), str(err.get("type") or "upstream_error"),
                             err.get("param"), err.get("code"))
    if isinstance(err, str):
        return UpstreamError(role, model, status, err)
    text = body.decode("utf-8", "replace").strip()
    return UpstreamError(role, model, status, text[:500] or f"HTTP {status} with an empty body")


def _transport_error(role: Role, model: str, exc: httpx.TransportError) -> UpstreamError:
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamError(role, model, 504, f"no answer in time ({type(exc).__name__})", "timeout")
    return UpstreamError(role, model, 502, f"unreachable ({type(exc).__name__}: {exc})", "upstream_unavailable")


class Upstream:
    """One OpenAI-compatible endpoint and the model name to ask it for."""

    def __init__(self, role: Role, base_url: str, model: str, api_key: Optional[str], timeout: float,
                 max_connections: int = 512, responses: str = "native") -> None:
        self.role, self.base_url, self.model, self.responses = role, base_url, model, responses
        #: It refused a stream's ``stream_options`` (a chat stream's, or a translated Responses
        #: stream's): its streams are not asked for their usage again.
        self.stream_options_refused = False
        headers = {"Accept-Encoding": "identity"}  # so that streamed bytes pass through as they are
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.AsyncClient(
            base_url=base_url, headers=headers, follow_redirects=False,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0), pool=timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    def __repr__(self) -> str:  # never the key
        return f"Upstream({self.role.value}, {self.base_url!r}, model={self.model!r})"

    @property
    def name(self) -> str:
        return self.model

    @property
    def translates(self) -> bool:
        """Whether Responses requests reach this upstream as chat completions."""
        return self.responses == "chat"

    def body_for(self, request: dict[str, Any]) -> dict[str, Any]:
        """The client's request for this upstream: every field unchanged but ``model``."""
        return {**request, "model": self.model}

    async def complete(self, request: dict[str, Any], path: str = CHAT_PATH) -> dict[str, Any]:
        """A non-streaming answer (a chat completion; with ``path`` ``"responses"``, a
        response): the upstream's JSON object (a translated response for a chat upstream)."""
        if path == RESPONSES_PATH and self.translates:
            body = responses_chat.chat_request(self.body_for(request))
            return responses_chat.response_from_completion(await self._json("POST", CHAT_PATH, json=body), request)
        return await self._json("POST", path, json=self.body_for(request))

    async def fetch(self, method: str, path: str, params: Optional[list[tuple[str, str]]] = None) -> dict[str, Any]:
        """``GET`` or ``DELETE`` of ``path`` (relative, as every path here: a stored response)
        with the query ``params``: the upstream's JSON object."""
        return await self._json(method, path, params=params)

    async def _json(self, method: str, path: str, **request: Any) -> dict[str, Any]:
        """The JSON object the upstream answers ``method path``, or :class:`UpstreamError`."""
        try:
            response = await self._client.request(method, path, **request)
        except httpx.TransportError as exc:
            raise _transport_error(self.role, self.model, exc) from exc
        if not response.is_success:
            raise _error_from_body(self.role, self.model, response.status_code, response.content)
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise UpstreamError(self.role, self.model, 502, "answered 200 with a body that is not a JSON object")
        return data

    def stream(self, request: dict[str, Any], path: str = CHAT_PATH) -> AsyncIterator[bytes]:
        """The upstream's server-sent events, as raw bytes, as they arrive.

        Raises :class:`UpstreamError` before the first chunk if the upstream
        refuses the request; closing the iterator (or cancelling the task that
        reads it) closes the upstream connection. A chat upstream's stream of a
        Responses request is translated as it arrives, and asked for its usage
        (``stream_options.include_usage``) unless it refused that before.
        """
        if path != RESPONSES_PATH or not self.translates:
            return self._raw(self.body_for(request), path)  # the events themselves, no generator between
        return self._translated(request)

    async def _translated(self, request: dict[str, Any]) -> AsyncIterator[bytes]:
        """A Responses request's stream from a chat upstream: its chat stream, translated."""
        body = responses_chat.chat_request(self.body_for(request))
        events = responses_chat.ResponsesFromChatStream(request)
        asked = not self.stream_options_refused
        begun = False
        try:
            async with aclosing(self._raw({**body, "stream_options": {"include_usage": True}} if asked else body,
                                          CHAT_PATH)) as chunks:
                async for chunk in chunks:
                    begun = True
                    if out := events.feed(chunk):
                        yield out
        except UpstreamError as exc:
            if begun or not asked or not exc.refuses_stream_options:
                raise
            self.stream_options_refused = True
            async with aclosing(self._raw(body, CHAT_PATH)) as chunks:
                async for chunk in chunks:
                    if out := events.feed(chunk):
                        yield out
        if out := events.flush():
            yield out

    async def _raw(self, body: dict[str, Any], path: str) -> AsyncIterator[bytes]:
        """The upstream's events for the request ``body`` (already this upstream's), as they arrive."""
        async with self._open(body, path) as response:
            try:
                async for chunk in response.aiter_raw():
                    if chunk:
                        yield chunk
            except httpx.TransportError as exc:
                raise _transport_error(self.role, self.model, exc) from exc

    @asynccontextmanager
    async def _open(self, body: dict[str, Any], path: str) -> AsyncIterator[httpx.Response]:
        try:
            req = self._client.build_request("POST", path, json=body)
            response = await self._client.send(req, stream=True)
        except httpx.TransportError as exc:
            raise _transport_error(self.role, self.model, exc) from exc
        try:
            if not response.is_success:
                try:
                    body = await response.aread()
                except httpx.TransportError as exc:
                    raise _transport_error(self.role, self.model, exc) from exc
                raise _error_from_body(self.role, self.model, response.status_code, body)
            yield response
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()
