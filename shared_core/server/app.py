"""The OpenAI-compatible routing server: a FastAPI app.

``POST /v1/chat/completions`` routes each request on its last user message
(:mod:`shared_core.policy`, as the Python wrappers do) and forwards the body,
every field unchanged but ``model``, to the chosen upstream; ``GET /v1/models``
lists the model names it answers to; ``GET /health``; ``GET /metrics``.

The decision travels back in ``x-routellm-*`` headers (``role``, ``model``,
``score``, ``threshold``, ``router``, ``reason``, and ``fallback-from`` after a
fallback) and, on a non-streaming answer, in the body's ``routellm`` field. A
streamed answer carries it in the headers only: its body is the upstream's
server-sent events, byte for byte, as they arrive.

Trying the chosen model and, with ``fallback``, the other one is the core's one
attempt loop (:class:`shared_core.attempts.Attempts`).
"""

from __future__ import annotations

import hmac
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, Optional

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared_core.attempts import AllModelsFailedError, Attempts, Outcome
from shared_core.engine import RoutingEngine, attempt_order, decision_record, outcome_record
from shared_core.ledger import PriceTable
from shared_core.routers import Decision, Role
from shared_core.server.config import ServerConfig, is_loopback
from shared_core.server.metrics import Metrics
from shared_core.server.protocol import (
    DECISION_FIELD,
    APIError,
    conversation,
    decision_headers,
    parse_chat_request,
)
from shared_core.server.routing import ModelResolver
from shared_core.server.upstream import Upstream, UpstreamError

ACCESS_LOGGER = "shared_core.server.access"
log = logging.getLogger("shared_core.server")


def build_engines(config: ServerConfig) -> tuple[RoutingEngine, dict[str, RoutingEngine]]:
    """The configured engine and one per alias (loads the routers: call once per process)."""
    default = RoutingEngine.from_settings(router=config.router, threshold=config.threshold,
                                          strong_fraction=config.strong_fraction, on_no_text=config.on_no_text)
    return default, build_aliases(config)


def build_aliases(config: ServerConfig) -> dict[str, RoutingEngine]:
    return {alias: RoutingEngine.from_settings(router=target, on_no_text=config.on_no_text)
            for alias, target in config.aliases.items()}


def create_app(config: ServerConfig, engine: Optional[RoutingEngine] = None,
               aliases: Optional[dict[str, RoutingEngine]] = None,
               prices: PriceTable | Mapping[str, Any] | None = None) -> FastAPI:
    """The app for ``config``; ``engine`` and ``aliases`` default to those the config names.
    With ``prices`` (dollars per million tokens by upstream model name, both models
    priced) the metrics add cost and counterfactual strong cost by role."""
    if engine is None:
        engine, built = build_engines(config)
        aliases = built if aliases is None else aliases
    elif aliases is None:
        aliases = build_aliases(config)
    table = None if prices is None else PriceTable(prices)
    if table is not None:
        table.price(config.weak_model, "weak")
    server = _Server(config, engine, aliases or {}, table)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await server.warm_up()
        yield
        await server.aclose()

    app = FastAPI(title="routellm", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.routellm = server
    app.add_api_route("/v1/chat/completions", server.chat_completions, methods=["POST"])
    app.add_api_route("/v1/models", server.models, methods=["GET"])
    app.add_api_route("/health", server.health, methods=["GET"])
    app.add_api_route("/metrics", server.metrics_endpoint, methods=["GET"])
    app.add_exception_handler(APIError, _api_error_response)
    app.add_exception_handler(StarletteHTTPException, _http_error_response)
    app.add_exception_handler(Exception, _internal_error_response)
    return app


# Error responses --------------------------------------------------------------------------
async def _api_error_response(request: Request, exc: APIError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def _http_error_response(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    message = f"{request.method} {request.url.path}: {exc.detail}"
    return JSONResponse(APIError(exc.status_code, message, code="not_found" if exc.status_code == 404 else None).body(),
                        status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def _internal_error_response(request: Request, exc: Exception) -> JSONResponse:
    log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(APIError(500, f"internal server error ({type(exc).__name__})", "server_error").body(),
                        status_code=500)


def upstream_api_error(exc: BaseException, headers: dict[str, str], extra: dict[str, Any]) -> APIError:
    """What the client sees when the upstream(s) failed: the upstream's status and message."""
    if isinstance(exc, AllModelsFailedError):
        last = exc.errors[-1].error
        status = last.status_code if isinstance(last, UpstreamError) else 502
        return APIError(status, str(exc), "upstream_error", code="all_models_failed", extra=extra, headers=headers)
    if isinstance(exc, UpstreamError):
        return APIError(exc.status_code, str(exc), exc.error_type, exc.param, exc.code, extra=extra, headers=headers)
    return APIError(502, f"upstream call failed: {type(exc).__name__}: {exc}", "upstream_error", extra=extra,
                    headers=headers)


class _DisconnectAwareStream(StreamingResponse):
    """A streaming response that stops (cancelling the upstream read) as soon as
    the client disconnects, whatever ASGI spec version the server speaks."""

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[override]
        async with anyio.create_task_group() as group:
            async def run_then_cancel(func: Callable[[], Awaitable[None]]) -> None:
                await func()
                group.cancel_scope.cancel()

            group.start_soon(run_then_cancel, partial(self.stream_response, send))
            await run_then_cancel(partial(self.listen_for_disconnect, receive))


class _UsageScanner:
    """Reads the ``usage`` of a server-sent event stream without changing it."""

    def __init__(self) -> None:
        self._tail = b""
        self.usage: Optional[dict[str, Any]] = None

    def feed(self, chunk: bytes) -> None:
        lines = (self._tail + chunk).split(b"\n")
        self._tail = lines.pop()
        if len(self._tail) > 1 << 20:  # a line this long is not a usage chunk
            self._tail = b""
        for line in lines:
            if line.startswith(b"data:") and b'"usage"' in line:
                try:
                    data = json.loads(line[5:])
                except ValueError:
                    continue
                if isinstance(data, dict) and isinstance(data.get("usage"), dict):
                    self.usage = data["usage"]


# The server -------------------------------------------------------------------------------
class _Server:
    def __init__(self, config: ServerConfig, engine: RoutingEngine, aliases: dict[str, RoutingEngine],
                 prices: Optional[PriceTable] = None) -> None:
        self.config = config
        self.resolver = ModelResolver(engine, config.model_name, aliases, config.on_no_text)
        self.upstreams = {
            Role.STRONG: Upstream(Role.STRONG, config.strong_base_url, config.strong_model, config.api_key("strong"),
                                  config.upstream_timeout, config.max_upstream_connections),
            Role.WEAK: Upstream(Role.WEAK, config.weak_base_url, config.weak_model, config.api_key("weak"),
                                config.upstream_timeout, config.max_upstream_connections),
        }
        self.tokens = [t.get_secret_value().encode() for t in config.auth_tokens]
        self.metrics = Metrics(prices, config.strong_model)
        self.access = logging.getLogger(ACCESS_LOGGER)

    async def warm_up(self) -> None:
        """One decision per engine before serving, so that no client waits for lazy loading."""
        for name in self.resolver.names:
            batcher = await self.resolver.resolve(name)
            await batcher.decide([("user", "warm-up")])

    async def aclose(self) -> None:
        for upstream in self.upstreams.values():
            await upstream.aclose()

    # Checks --------------------------------------------------------------------------------
    def _authorize(self, request: Request) -> None:
        if not self.tokens:
            host = request.client.host if request.client else ""
            if host and not is_loopback(host):
                raise APIError(403, f"this server has no client tokens configured and serves loopback clients only; "
                               f"{host} is not one", code="loopback_only")
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise APIError(401, "missing bearer token: send 'Authorization: Bearer <token>'",
                           code="invalid_api_key")
        given = token.strip().encode()
        if not any(hmac.compare_digest(given, t) for t in self.tokens):
            raise APIError(401, "incorrect bearer token provided", code="invalid_api_key")

    async def _read_body(self, request: Request) -> bytes:
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise APIError(413, f"request body is {int(declared)} bytes; this server accepts at most {limit}",
                           code="request_too_large")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise APIError(413, f"request body exceeds {limit} bytes, the most this server accepts",
                               code="request_too_large")
        return bytes(body)

    # Endpoints -----------------------------------------------------------------------------
    async def health(self) -> dict[str, Any]:
        default = self.resolver.default().engine
        return {"status": "ok", "model": self.config.model_name, **default.describe(),
                "strong_model": self.config.strong_model, "weak_model": self.config.weak_model}

    async def models(self, request: Request) -> dict[str, Any]:
        self._authorize(request)
        self.metrics.requests.labels("/v1/models", "200").inc()
        return {"object": "list",
                "data": [{"id": name, "object": "model", "created": 0, "owned_by": "routellm"}
                         for name in self.resolver.names]}

    async def metrics_endpoint(self, request: Request) -> Response:
        self._authorize(request)
        return Response(self.metrics.render(), media_type=self.metrics.content_type)

    async def chat_completions(self, request: Request) -> Response:
        entry: dict[str, Any] = {
            "event": "chat.completions", "request_id": request.headers.get("x-request-id") or uuid.uuid4().hex,
            "client": request.client.host if request.client else None, "stream": False,
        }
        started = time.perf_counter()
        streaming = False
        try:
            self._authorize(request)
            payload = parse_chat_request(await self._read_body(request), self.config.max_messages)
            entry["stream"] = bool(payload.get("stream"))
            entry["requested_model"] = payload.get("model")
            batcher = await self.resolver.resolve(payload.get("model"))
            decided = time.perf_counter()
            decision = await batcher.decide(conversation(payload))
            self.metrics.routing_seconds.observe(time.perf_counter() - decided)
            self.metrics.decisions.labels(decision.role.value, decision.router).inc()
            entry.update(decision.to_dict(), routing_ms=round((time.perf_counter() - decided) * 1000, 3))
            if self.config.log_prompts:
                entry["messages"] = payload["messages"]
            plan = [(role, self.upstreams[role]) for role in attempt_order(decision, self.config.fallback)]
            attempts = Attempts(plan, name=lambda upstream: upstream.model)
            if payload.get("stream"):
                response = await self._stream(attempts, decision, payload, entry, started)
                streaming = True
                return response
            outcome = await attempts.arun(partial(self._complete, payload=payload))
            record = self._answered(decision, outcome, entry, stream=False)
            body = {**outcome.value, DECISION_FIELD: record}
            entry["prompt_tokens"], entry["completion_tokens"] = self.metrics.add_usage(
                outcome.role.value, outcome.value.get("usage"), outcome.model_name)
            entry["status"] = 200
            return JSONResponse(body, headers=decision_headers(record))
        except APIError as exc:
            entry.update(status=exc.status, error=exc.code or exc.error_type)
            raise
        except (UpstreamError, AllModelsFailedError) as exc:
            chosen = self.upstreams[decision.role]
            record = decision_record(decision, decision.role, chosen.model)
            error = upstream_api_error(exc, decision_headers(record), {DECISION_FIELD: record})
            entry.update(status=error.status, error=error.code or error.error_type, model=None)  # nobody answered
            raise error from None
        finally:
            if not streaming:
                self._finish(entry, started)

    # Upstream calls ------------------------------------------------------------------------
    async def _complete(self, upstream: Upstream, payload: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            return await upstream.complete(payload)
        except UpstreamError as exc:
            self.metrics.upstream_errors.labels(upstream.role.value, str(exc.status_code)).inc()
            raise
        finally:
            self.metrics.upstream_seconds.labels(upstream.role.value).observe(time.perf_counter() - started)

    async def _stream_from(self, upstream: Upstream, payload: dict[str, Any],
                           scanner: _UsageScanner) -> AsyncIterator[bytes]:
        started = time.perf_counter()
        try:
            async for chunk in upstream.stream(payload):
                scanner.feed(chunk)
                yield chunk
        except UpstreamError as exc:
            self.metrics.upstream_errors.labels(upstream.role.value, str(exc.status_code)).inc()
            raise
        finally:
            self.metrics.upstream_seconds.labels(upstream.role.value).observe(time.perf_counter() - started)

    async def _stream(self, attempts: Attempts, decision: Decision, payload: dict[str, Any],
                      entry: dict[str, Any], started: float) -> Response:
        scanner = _UsageScanner()
        chunks = attempts.astream(partial(self._stream_from, payload=payload, scanner=scanner))
        try:
            head = await chunks.__anext__()
        except StopAsyncIteration:
            head = b""
        except BaseException:
            with anyio.CancelScope(shield=True):
                await chunks.aclose()
            raise
        record = self._answered(decision, chunks.outcome, entry, stream=True)
        entry["status"] = 200

        async def body() -> AsyncIterator[bytes]:
            try:
                if head:
                    yield head
                async for chunk in chunks:
                    yield chunk
            except UpstreamError as exc:  # after the first chunk: tell the client in the stream
                entry["error"] = exc.error_type
                error = upstream_api_error(exc, {}, {}).body()
                yield f"data: {json.dumps(error)}\n\n".encode()
            except BaseException:
                entry["error"] = "client_disconnected"
                raise
            finally:
                with anyio.CancelScope(shield=True):
                    await chunks.aclose()
                entry["prompt_tokens"], entry["completion_tokens"] = self.metrics.add_usage(
                    record["role"], scanner.usage, record["model"])
                self._finish(entry, started)

        return _DisconnectAwareStream(body(), media_type="text/event-stream",
                                      headers={**decision_headers(record), "cache-control": "no-cache"})

    # Bookkeeping ---------------------------------------------------------------------------
    def _answered(self, decision: Decision, outcome: Outcome, entry: dict[str, Any], stream: bool) -> dict[str, Any]:
        if outcome.failures:
            self.metrics.fallbacks.labels(outcome.failures[0].role.value).inc()
        record = outcome_record(decision, outcome)
        self.metrics.answers.labels(outcome.role.value, str(stream).lower()).inc()
        entry.update(role=record["role"], model=record["model"],
                     fallback_from=record["fallback"]["from"] if record["fallback"] else None)
        return record

    def _finish(self, entry: dict[str, Any], started: float) -> None:
        status = entry.setdefault("status", 500)
        entry["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
        self.metrics.requests.labels("/v1/chat/completions", str(status)).inc()
        self.access.info(json.dumps(entry, ensure_ascii=False, default=str))
