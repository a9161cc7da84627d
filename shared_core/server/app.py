"""The OpenAI-compatible routing server: a FastAPI app.

``POST /v1/chat/completions`` routes each request on its last user message
(:mod:`shared_core.policy`, as the Python wrappers do) and forwards the body,
every field unchanged but ``model``, to the chosen upstream; ``POST /v1/responses``
likewise, with each response id naming the upstream that made it, so that a follow-up
(``previous_response_id``) and ``GET``/``DELETE /v1/responses/{id}`` reach that
upstream (:mod:`shared_core.server.responses`; an upstream with chat completions only
gets each Responses request translated, :mod:`shared_core.server.responses_chat`, and a
request it could not say goes to the other upstream, unscored, or, when both are such, is
refused before routing); ``GET /v1/models`` lists the model
names it answers to; ``GET /health``; ``GET /metrics``.

The decision travels back in ``x-routellm-*`` headers (``role``, ``model``,
``score``, ``threshold``, ``router``, ``reason``, and ``fallback-from`` after a
fallback) and, on a non-streaming answer, in the body's ``routellm`` field. A
streamed answer carries it in the headers only: its body is the upstream's
server-sent events, byte for byte, as they arrive, but for the usage the server
asked for on the client's behalf (``stream_usage``, on by default: the upstream is
sent ``stream_options.include_usage``, and for a client that did not ask, the
usage-only chunk and the ``"usage": null`` keys are taken out again, see
:class:`_UsageScanner`).

Trying the chosen model and, with ``fallback``, the other one is the core's one
attempt loop (:class:`shared_core.attempts.Attempts`).

The cost controls of the config (``docs/costs.md``, ``docs/escalation.md``):

* a price table prices every answer's usage into ``/metrics``; an answer without
  usage is counted as unpriced, never priced at zero;
* a controller (``target_strong_share``: :class:`~shared_core.controller.ShareController`;
  ``strong_budget``: :class:`~shared_core.controller.BudgetController`, over the share
  controller if both are set) is the configured engine's, so that every decision of
  the configured model name goes through it. The budget is charged each strong
  answer's cost at the configured prices (a stream: from its usage chunk, which the
  server asks for). A strong answer without usage (from an upstream that sends none
  in streams, with ``stream_usage`` off and a client that did not ask, or cut off by
  the client) has no exact cost and, as the ledger never prices a call at zero, is
  charged its request's upper bound (:func:`~shared_core.server.protocol.token_bounds`:
  its bytes and max tokens); a request without one leaves the cost unknown: charged the
  reserve, or with none the period's budget counts as spent;
* ``escalate_on``: a weak answer the checks reject is sent to the strong model, by
  the attempt loop's ``check`` / ``escalate_to`` (a stream is buffered while
  checked). With a budget, an escalation is a strong call like any other: made only
  if the budget admits it.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import time
import uuid
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, Optional
from urllib.parse import quote

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared_core.attempts import AllModelsFailedError, Attempts, Escalation, Outcome, rejected_answers
from shared_core.controller import BUDGET_EXHAUSTED, BudgetController, Controller, Reservations
from shared_core.engine import RoutingEngine, attempt_order, decision_record, outcome_record
from shared_core.errors import ConfigError
from shared_core.escalation import AnswerChecks, AnswerView, check_name
from shared_core.ledger import PriceTable
from shared_core.routers import Decision, Role
from shared_core.server.config import ServerConfig, is_loopback
from shared_core.server.metrics import Metrics, controls_state
from shared_core.server.protocol import (
    DECISION_FIELD,
    APIError,
    asking_stream_usage,
    call_context,
    completion_view,
    conversation,
    decision_headers,
    parse_chat_request,
    sse_event,
    stream_view,
    token_bounds,
)
from shared_core.server import responses as R
from shared_core.server import responses_chat
from shared_core.server.routing import ModelResolver
from shared_core.server.upstream import CHAT_PATH, Upstream, UpstreamError

ACCESS_LOGGER = "shared_core.server.access"
log = logging.getLogger("shared_core.server")


def build_engines(config: ServerConfig) -> tuple[RoutingEngine, dict[str, RoutingEngine]]:
    """The configured engine (with the config's controller: a share controller starts
    from the threshold its target gives) and one per alias (loads the routers: call once
    per process)."""
    target = config.target_strong_share
    fraction = config.strong_fraction if target is None else target
    try:
        default = RoutingEngine.from_settings(router=config.router, threshold=config.threshold,
                                              strong_fraction=fraction, on_no_text=config.on_no_text,
                                              controller=config.controller())
    except ConfigError as exc:
        if target is None or "reference score quantiles" not in str(exc):
            raise
        raise ConfigError(f"target_strong_share={target!r}: the share controller starts from the threshold the "
                          f"router's reference score quantiles give for that share, and router {config.router!r} "
                          "ships none; serve a router that ships them") from None
    return default, build_aliases(config)


def with_controls(engine: RoutingEngine, config: ServerConfig) -> RoutingEngine:
    """``engine`` deciding through the config's controller: as it is if it has one of the
    same kind (or the config none), else a new engine over the same router and threshold."""
    wanted = config.controller()
    if engine.ladder is not None:
        raise ConfigError("the server routes between a strong and a weak upstream; an engine with a ladder cannot "
                          "serve it")
    if wanted is None or engine.controller is not None:
        if wanted is not None and type(engine.controller) is not type(wanted):
            raise ConfigError(f"the engine's controller ({type(engine.controller).__name__}) is not the one the "
                              f"settings ask for ({type(wanted).__name__})")
        return engine
    return RoutingEngine(engine.router, engine.threshold, engine.on_no_text.value, router_spec=engine.router_spec,
                         controller=wanted, route_on=engine.route_on)


def build_aliases(config: ServerConfig) -> dict[str, RoutingEngine]:
    return {alias: RoutingEngine.from_settings(router=target, on_no_text=config.on_no_text)
            for alias, target in config.aliases.items()}


def create_app(config: ServerConfig, engine: Optional[RoutingEngine] = None,
               aliases: Optional[dict[str, RoutingEngine]] = None,
               prices: PriceTable | Mapping[str, Any] | None = None) -> FastAPI:
    """The app for ``config``; ``engine`` and ``aliases`` default to those the config names
    (a given engine gets the config's controller, see :func:`with_controls`). With prices
    (``prices`` here or the config's, dollars per million tokens by upstream model name,
    both models priced) the metrics add cost and counterfactual strong cost by role."""
    if engine is None:
        engine, built = build_engines(config)
        aliases = built if aliases is None else aliases
    elif aliases is None:
        aliases = build_aliases(config)
    engine = with_controls(engine, config)
    if prices is not None and config.prices is not None:
        raise ConfigError("prices are configured in the settings and also given to create_app; give them once")
    prices = config.prices if prices is None else prices
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
    app.add_api_route("/v1/responses", server.responses, methods=["POST"])
    app.add_api_route("/v1/responses/{response_id}", server.stored_response, methods=["GET", "DELETE"])
    app.add_api_route("/v1/responses/{response_id}/input_items", server.stored_response, methods=["GET"])
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
    the client disconnects, whatever ASGI spec version the server speaks.

    ``on_close`` runs once the response is done, however it ended (the body closed
    first): a client that disconnects before the body's first byte cancels the body
    before it starts, so the bookkeeping (the upstream closed, the usage counted, a
    budget reservation settled) is done there, not in the body."""

    def __init__(self, content: AsyncIterator[bytes], *, on_close: Callable[[], Awaitable[None]],
                 **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.on_close = on_close

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[override]
        try:
            async with anyio.create_task_group() as group:
                async def run_then_cancel(func: Callable[[], Awaitable[None]]) -> None:
                    await func()
                    group.cancel_scope.cancel()

                group.start_soon(run_then_cancel, partial(self.stream_response, send))
                await run_then_cancel(partial(self.listen_for_disconnect, receive))
        finally:
            with anyio.CancelScope(shield=True):
                # A body left at a yield (cancelled while sending) ends here, not at garbage collection.
                await self.body_iterator.aclose()  # type: ignore[attr-defined]
                await self.on_close()


class _UsageScanner:
    """Reads the ``usage`` of a server-sent event stream as it passes; with ``strip``, also
    takes out what the server's own ``stream_options.include_usage`` added to it.

    :meth:`feed` returns the bytes to send on: without ``strip`` the chunk itself; with it,
    the complete lines so far (a partial line waits for its end), less the final
    usage-only chunk (``"choices": []`` with a ``usage`` object, and the blank line ending
    its event) and less the ``"usage": null`` key of every other chunk (that line written
    again as compact JSON). Every other line is passed on byte for byte, and a ``usage``
    object on a chunk with choices (an upstream that sends it unasked) is left in.
    """

    LONG = 1 << 20  # a line this long is not a usage chunk: passed on unread

    def __init__(self, strip: bool = False) -> None:
        self.strip = strip
        self.usage: Optional[dict[str, Any]] = None
        self._tail = b""
        self._long = False  # the partial line is longer than LONG (its start already passed on)
        self._dropped = False  # the last line was a dropped usage chunk: the blank line after it goes too

    def feed(self, chunk: bytes) -> bytes:
        lines = (self._tail + chunk).split(b"\n")
        self._tail = lines.pop()
        sent = [self._line(line) for line in lines]
        if len(self._tail) > self.LONG:
            sent.append(self._tail)
            self._tail, self._long, self._dropped = b"", True, False
        return b"".join(sent) if self.strip else chunk

    def flush(self) -> bytes:
        """The end of the stream: reads (and returns) a last line without a newline."""
        tail, self._tail = self._tail, b""
        line = self._line(tail)
        return line[:-1] if self.strip else b""  # not the newline the stream did not have

    def _line(self, line: bytes) -> bytes:
        """One complete line (without its newline): as it is to be sent, newline included."""
        long, dropped = self._long, self._dropped
        self._long = self._dropped = False
        if long or b'"usage"' not in line:
            return b"" if dropped and line in (b"", b"\r") else line + b"\n"
        data = sse_event(line)
        if data is None or "usage" not in data:
            return line + b"\n"
        usage = data["usage"]
        if isinstance(usage, dict):
            self.usage = usage
        if not self.strip:
            return line + b"\n"
        if isinstance(usage, dict) and data.get("choices") == []:
            self._dropped = True
            return b""
        if usage is None:
            del data["usage"]
            prefix = b"data: " if line.startswith(b"data: ") else b"data:"
            end = b"\r\n" if line.endswith(b"\r") else b"\n"
            return prefix + json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode() + end
        return line + b"\n"

    @classmethod
    def of(cls, chunks: Any) -> Optional[dict[str, Any]]:
        """The usage of a whole buffered stream (its list of chunks)."""
        scanner = cls()
        for chunk in chunks or ():
            scanner.feed(chunk)
        scanner.flush()
        return scanner.usage


def _usage(value: Any) -> Optional[dict[str, Any]]:
    """The usage of an answer: a completion's ``usage``, or a buffered stream's final usage chunk."""
    if isinstance(value, dict):
        usage = value.get("usage")
        return usage if isinstance(usage, dict) else None
    return _UsageScanner.of(value)


@dataclass(frozen=True)
class _Wire:
    """What differs between the two endpoints that route: chat completions and responses."""

    endpoint: str  # the server's path, as the metrics and the access log name it
    upstream_path: str  # the upstream's, relative to its base URL
    parse: Callable[[bytes, int], dict[str, Any]]
    conversation: Callable[[dict[str, Any]], list[tuple[str, Any]]]
    bounds: Callable[[dict[str, Any], Optional[int]], Optional[tuple[int, int]]]  # of an answer without usage
    usage: Callable[[Any], Optional[dict[str, Any]]]  # of an answer (JSON or buffered stream), in chat names
    #: What the escalation checks see: an answer, a buffered stream, and what the request asked for.
    view: Callable[[dict[str, Any]], AnswerView]
    stream_view: Callable[[Any], AnswerView]
    context: Callable[[dict[str, Any]], Any]
    #: Chat: the upstream is asked for a stream's usage. Responses: ids are pinned to the
    #: upstream that made them (:mod:`shared_core.server.responses`).
    chat: bool
    prompt_fields: tuple[str, ...]  # what ``log_prompts`` writes to the access log

    def body(self, value: dict[str, Any], role: Role, record: dict[str, Any]) -> dict[str, Any]:
        """A non-streamed answer as the client gets it, with the decision record."""
        return {**(value if self.chat else R.with_pinned_id(value, role)), DECISION_FIELD: record}

    def scanner(self, strip: bool, role: Role) -> "_UsageScanner | R.ResponsesScanner":
        """What passes a stream on (``role``'s, the upstream answering) and reads its usage."""
        return _UsageScanner(strip) if self.chat else R.ResponsesScanner(role)

    def error_event(self, error: dict[str, Any]) -> bytes:
        """An upstream error after the first chunk, as an event of this stream."""
        return f"data: {json.dumps(error)}\n\n".encode() if self.chat else R.error_event(error)


CHAT = _Wire("/v1/chat/completions", CHAT_PATH, parse_chat_request, conversation, token_bounds, _usage,
             completion_view, stream_view, call_context, chat=True, prompt_fields=("messages",))
RESPONSES = _Wire("/v1/responses", R.RESPONSES_PATH, R.parse_responses_request, R.responses_conversation,
                  R.response_token_bounds, R.answer_usage, R.response_view, R.response_stream_view,
                  R.responses_call_context, chat=False, prompt_fields=("instructions", "input"))
#: The reason of a decision for a follow-up response (``previous_response_id``): its upstream's, unscored.
CONTINUED = "previous_response"
#: The reason of a decision for a Responses request that the upstream reached through chat
#: completions cannot take (``--weak-responses chat``): the other upstream's, unscored.
NEEDS_RESPONSES = "needs_responses_api"


class _Spend(Reservations):
    """One request's dealings with the strong budget: the strong calls it reserved
    (a strong decision; an escalation the budget admitted), settled once at the end."""

    def __init__(self, server: "_Server", decision: Decision, entry: dict[str, Any],
                 bounds: Callable[[], Optional[tuple[int, int]]]) -> None:
        super().__init__(server.budget, decision)
        self.server = server
        self.bounds = bounds  # the request's token bounds, for an answer without usage
        self.entry = entry
        self.settled = False

    def admit_escalation(self, reason: str) -> bool:
        admitted = super().admit_escalation(reason)
        if not admitted:
            self.server.metrics.budget_exhausted.labels("escalation").inc()
        return admitted

    def settle(self, strong_counts: Optional[tuple[Optional[int], Optional[int]]]) -> None:
        """Charge the strong answer (``strong_counts``: its prompt and completion tokens;
        ``None``: the strong model did not answer) and release the other reservations."""
        if self.budget is None or self.settled:
            return
        self.settled = True
        if strong_counts is not None:
            if None in strong_counts:
                self._charge_without_usage(strong_counts)
            else:
                self.budget.charge(self.server.prices.cost(self.server.config.strong_model, *strong_counts))
            self.held -= 1
        for _ in range(max(0, self.held)):
            self.budget.release()

    def _charge_without_usage(self, counts: tuple[Optional[int], Optional[int]]) -> None:
        """A strong answer without usage: charged at its request's bound (``bounds``, e.g.
        :func:`token_bounds`: the body's bytes, its max tokens), the counts it did report kept; with no bound, its
        cost may be any amount: charged the budget's reserve (at least one strong call's cost)
        if it has one, else the period's budget counts as spent."""
        bounds = self.bounds()
        tokens = None if bounds is None else tuple(known if known is not None else bound
                                                   for known, bound in zip(counts, bounds))
        # priced with the server's prices (price_with at start-up), so never None
        charged = self.budget.charge_left(self.server.config.strong_model, tokens)  # type: ignore[union-attr]
        if tokens is not None:
            how = "bound"
            self.entry["budget_charged"] = {"bound": round(charged, 9), "prompt_tokens": tokens[0],
                                            "completion_tokens": tokens[1]}
        else:
            how = "period" if charged == math.inf else "reserve"
            self.entry["budget_charged"] = how if how == "period" else {"reserve": charged}
        self.server.metrics.budget_without_usage.labels(how).inc()


def _entry(request: Request, event: str, **fields: Any) -> dict[str, Any]:
    """A request's access-log entry as it starts: the event, the request id (the client's
    ``x-request-id`` or a new one), the client's address, and ``fields``."""
    return {"event": event, "request_id": request.headers.get("x-request-id") or uuid.uuid4().hex,
            "client": request.client.host if request.client else None, **fields}


# The server -------------------------------------------------------------------------------
class _Server:
    def __init__(self, config: ServerConfig, engine: RoutingEngine, aliases: dict[str, RoutingEngine],
                 prices: Optional[PriceTable] = None) -> None:
        self.config = config
        self.prices = prices
        self.controller: Optional[Controller] = engine.controller
        self.budget = self.controller if isinstance(self.controller, BudgetController) else None
        if self.budget is not None and prices is None:
            raise ConfigError("a strong budget needs prices to charge strong answers at; configure prices")
        if self.budget is not None:
            self.budget.price_with(prices)  # for answers without usage (BudgetController.charge_left)
        if self.budget is not None and aliases:
            raise ConfigError(f"aliases ({', '.join(sorted(aliases))}) route with their own router, outside the "
                              "strong budget; remove them or the budget")
        self.resolver = ModelResolver(
            engine, config.model_name, aliases, config.on_no_text,
            None if self.budget is None else "a router chosen per request would route outside the strong budget",
        )
        self.upstreams = {
            Role.STRONG: Upstream(Role.STRONG, config.strong_base_url, config.strong_model, config.api_key("strong"),
                                  config.upstream_timeout, config.max_upstream_connections, config.strong_responses),
            Role.WEAK: Upstream(Role.WEAK, config.weak_base_url, config.weak_model, config.api_key("weak"),
                                config.upstream_timeout, config.max_upstream_connections, config.weak_responses),
        }
        self.tokens = [t.get_secret_value().encode() for t in config.auth_tokens]
        self.checks = None if config.escalate_on is None else AnswerChecks.from_spec(list(config.escalate_on))
        self.metrics = Metrics(prices, config.strong_model, self.controller)
        self.access = logging.getLogger(ACCESS_LOGGER)

    async def warm_up(self) -> None:
        """One score per engine before serving, so that no client waits for lazy loading
        (a score, not a decision: a controller sees client requests only)."""
        for name in self.resolver.names:
            batcher = await self.resolver.resolve(name)
            await anyio.to_thread.run_sync(batcher.engine.router.score, ["warm-up"])

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
                "strong_model": self.config.strong_model, "weak_model": self.config.weak_model,
                "prices": None if self.prices is None else self.prices.to_dict(),
                "escalate_on": None if self.checks is None else list(self.checks.names),
                "stream_usage": self.config.stream_usage,
                "responses": {role.value: upstream.responses for role, upstream in self.upstreams.items()},
                "stream_options_refused_by": sorted(role.value for role, upstream in self.upstreams.items()
                                                   if upstream.stream_options_refused),
                **controls_state(self.controller),
                **({"strong_max_output_tokens": self.config.strong_max_output_tokens} if self.budget else {})}

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
        return await self._route(request, CHAT)

    async def responses(self, request: Request) -> Response:
        return await self._route(request, RESPONSES)

    async def _route(self, request: Request, wire: _Wire) -> Response:
        """A request of either routing endpoint: decided, answered by the chosen upstream (or,
        on its failure and with fallback, the other), counted, charged and logged."""
        entry = _entry(request, wire.endpoint.removeprefix("/v1/").replace("/", "."), stream=False)
        started = time.perf_counter()
        streaming = False
        spend: Optional[_Spend] = None
        try:
            self._authorize(request)
            payload = wire.parse(await self._read_body(request), self.config.max_messages)
            entry["stream"] = bool(payload.get("stream"))
            entry["requested_model"] = payload.get("model")
            batcher = await self.resolver.resolve(payload.get("model"))
            decided = time.perf_counter()
            pin = None if wire.chat or payload.get("previous_response_id") is None else \
                R.response_pin(payload["previous_response_id"])
            only = None if wire.chat else self._only_able(payload, pin)
            if pin is not None:  # a follow-up: to the upstream that holds the response it continues, under its own id
                decision = self._unscored(batcher.engine, pin[0], CONTINUED,
                                          "this request continues a response of the strong model "
                                          "(previous_response_id), which the weak model cannot continue; send the "
                                          "conversation without previous_response_id to have it routed",
                                          "previous_response_id")
                payload = {**payload, "previous_response_id": pin[1]}
            elif only is not None:  # a request only the upstream with the Responses API can take: to it
                role, refusal = only
                entry["needs"] = refusal.param
                decision = self._unscored(batcher.engine, role, NEEDS_RESPONSES,
                                          f"this request needs the strong upstream, as the weak one cannot take it: "
                                          f"{refusal.message}", refusal.param)
            else:
                decision = await batcher.decide(wire.conversation(payload))
            self.metrics.routing_seconds.observe(time.perf_counter() - decided)
            self.metrics.decisions.labels(decision.role.value, decision.router).inc()
            if decision.score is None:
                self.metrics.unscored.labels(decision.reason, decision.role.value).inc()
            limit = self.config.strong_max_output_tokens
            spend = _Spend(self, decision, entry, partial(wire.bounds, payload, limit))
            if decision.reason == BUDGET_EXHAUSTED:
                self.metrics.budget_exhausted.labels("decision").inc()
            entry.update(decision.to_dict(), routing_ms=round((time.perf_counter() - decided) * 1000, 3))
            if self.config.log_prompts:
                entry.update({name: payload[name] for name in wire.prompt_fields if name in payload})
            attempts = self._attempts(decision, payload, spend, wire)
            if payload.get("stream"):
                response = await self._stream(attempts, decision, payload, entry, started, spend, wire)
                streaming = True
                return response
            outcome = await attempts.arun(partial(self._complete, payload=payload, path=wire.upstream_path))
            record = self._answered(decision, outcome, entry, spend, stream=False, wire=wire)
            body = wire.body(outcome.value, outcome.role, record)
            self._count(outcome, wire.usage(outcome.value), entry, spend, wire)
            entry["status"] = 200
            return JSONResponse(body, headers=decision_headers(record))
        except APIError as exc:
            entry.update(status=exc.status, error=exc.code or exc.error_type)
            raise
        except (UpstreamError, AllModelsFailedError) as exc:
            for rejected in rejected_answers(exc):  # made and paid for, though the escalation failed
                self._count_rejected(rejected, wire)
            chosen = self.upstreams[decision.role]
            record = decision_record(decision, decision.role, chosen.model)
            error = upstream_api_error(exc, decision_headers(record), {DECISION_FIELD: record})
            entry.update(status=error.status, error=error.code or error.error_type, model=None)  # nobody answered
            raise error from None
        finally:
            if not streaming:
                if spend is not None:
                    spend.settle(None)  # nothing charged yet: the strong model did not answer
                self._finish(entry, started, wire.endpoint)

    def _unscored(self, engine: RoutingEngine, role: Role, reason: str, why_strong: str, param: str) -> Decision:
        """The decision for a request only the ``role`` upstream can answer (a follow-up of a
        response it made; a Responses request the other, reached through chat completions,
        cannot take): that upstream, unscored. Under a budget a strong one is a strong call
        like any other; with the period's budget spent it is refused (429, ``why_strong``
        saying why the weak model cannot take it instead, ``param`` the request's field)."""
        decision = Decision(role, None, engine.threshold, engine.router.label, reason)
        if role is Role.STRONG and self.budget is not None and \
                self.budget.decide(None, engine.threshold, Role.STRONG, reason).role is not Role.STRONG:
            self.metrics.budget_exhausted.labels("decision").inc()
            raise APIError(429, f"the strong model's budget for this period is spent, and {why_strong}",
                           "insufficient_quota", param=param, code=BUDGET_EXHAUSTED)
        return decision

    def _only_able(self, payload: dict[str, Any],
                   pin: Optional[tuple[Role, str]]) -> Optional[tuple[Role, responses_chat.Untranslatable]]:
        """Which upstream alone can take a Responses request, and why the other cannot: when
        one is reached through chat completions and the request holds what a chat completion
        cannot say (built-in tools, ``include``, ...), the one with the Responses API, so
        that the request is sent there whatever its score. ``None`` when either can; a 400
        naming the first such parameter when neither can, or when the request is malformed,
        and for a follow-up of a translated upstream's response (it keeps none)."""
        if pin is not None:
            if self.upstreams[pin[0]].translates:
                raise APIError(400, f"previous_response_id {payload['previous_response_id']!r} names a response of "
                               f"the {pin[0].value} upstream, which is reached through chat completions and keeps no "
                               "responses; send the whole conversation as input instead",
                               param="previous_response_id", code="invalid_value")
            return None
        native = [role for role, upstream in self.upstreams.items() if not upstream.translates]
        if len(native) == len(self.upstreams):
            return None
        try:
            responses_chat.chat_request(payload)
        except responses_chat.Untranslatable as refusal:
            if not native:
                raise
            return native[0], refusal
        return None

    async def stored_response(self, request: Request, response_id: str) -> Response:
        """``GET`` or ``DELETE /v1/responses/{id}`` and ``GET /v1/responses/{id}/input_items``:
        forwarded, with its query, to the upstream that made the response (its id says which)
        under that upstream's own id."""
        entry = _entry(request, "responses.stored", method=request.method)
        started = time.perf_counter()
        try:
            self._authorize(request)
            pin = R.response_pin(response_id)
            if pin is None:
                raise APIError(404, f"no response {response_id!r} was made through this server (its ids start with "
                               f"{R.PIN_PREFIX!r})", param="response_id", code="not_found")
            role, own_id = pin
            upstream = self.upstreams[role]
            entry.update(role=role.value, model=upstream.model)
            if upstream.translates:
                raise APIError(404, f"response {response_id!r} was made by the {role.value} upstream, which is reached "
                               "through chat completions and keeps no responses", param="response_id",
                               code="not_found")
            tail = "/input_items" if request.url.path.endswith("/input_items") else ""
            try:
                data = await upstream.fetch(request.method, f"{R.RESPONSES_PATH}/{quote(own_id, safe='')}{tail}",
                                            list(request.query_params.multi_items()))
            except UpstreamError as exc:
                self.metrics.upstream_errors.labels(role.value, str(exc.status_code)).inc()
                raise upstream_api_error(exc, {}, {}) from None
            entry["status"] = 200
            return JSONResponse(data if tail else R.with_pinned_id(data, role))
        except APIError as exc:
            entry.update(status=exc.status, error=exc.code or exc.error_type)
            raise
        finally:
            self._finish(entry, started, "/v1/responses/{id}")

    # Upstream calls ------------------------------------------------------------------------
    def _attempts(self, decision: Decision, payload: dict[str, Any], spend: _Spend, wire: _Wire) -> Attempts[Upstream]:
        """The attempt loop: the chosen upstream (then the other, with fallback) and, with
        escalation, the strong one for a weak answer the checks reject (and the budget admits);
        a follow-up response, and a request only one upstream can take, neither fall back nor
        escalate, as the other upstream cannot answer them."""
        only = decision.reason in (CONTINUED, NEEDS_RESPONSES)
        roles = [decision.role] if only else attempt_order(decision, self.config.fallback)
        plan = [(role, self.upstreams[role]) for role in roles]
        if self.checks is None or decision.role is not Role.WEAK or only:
            return Attempts(plan, name=lambda upstream: upstream.model)
        checks, context = self.checks, wire.context(payload)
        view: Callable[[Any], AnswerView] = wire.stream_view if payload.get("stream") else wire.view

        def check(role: Role, value: Any) -> Optional[str]:
            reason = checks.reason(view(value), context)
            if reason is None or not spend.admit_escalation(reason):
                return None
            return reason

        return Attempts(plan, name=lambda upstream: upstream.model, check=check,
                        escalate_to=[(Role.STRONG, self.upstreams[Role.STRONG])])

    async def _complete(self, upstream: Upstream, payload: dict[str, Any], path: str) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            return await upstream.complete(payload, path)
        except UpstreamError as exc:
            self.metrics.upstream_errors.labels(upstream.role.value, str(exc.status_code)).inc()
            raise
        finally:
            self.metrics.upstream_seconds.labels(upstream.role.value).observe(time.perf_counter() - started)

    async def _stream_from(self, upstream: Upstream, payload: dict[str, Any], wire: _Wire) -> AsyncIterator[bytes]:
        """The upstream's stream of the client's request (``payload``), a chat stream asked for
        its usage (``stream_usage``) unless the upstream refused that before: then, and when
        it refuses it now (before its first byte), the request goes as the client sent it.
        (A Responses stream always ends with its usage.)"""
        started = time.perf_counter()
        sent, asked = payload, False
        path = wire.upstream_path
        if wire.chat and self.config.stream_usage and not upstream.stream_options_refused:
            sent, asked = asking_stream_usage(payload)
        begun = False
        try:
            try:
                # aclosing: closed at a yield (not cancelled in a read), this closes the upstream
                # stream here and now, not when it is garbage-collected in some other task.
                async with aclosing(upstream.stream(sent, path)) as chunks:
                    async for chunk in chunks:
                        begun = True
                        yield chunk
            except UpstreamError as exc:
                if begun or not asked or not exc.refuses_stream_options:
                    raise
                upstream.stream_options_refused = True
                log.warning("routellm serve: the %s upstream %r refused stream_options (%s); its streams go as the "
                            "client sent them from now on, and one whose client did not ask for usage cannot be "
                            "priced (start with --no-stream-usage to say so)", upstream.role.value, upstream.model,
                            exc)
                async with aclosing(upstream.stream(payload, path)) as chunks:
                    async for chunk in chunks:
                        yield chunk
        except UpstreamError as exc:
            self.metrics.upstream_errors.labels(upstream.role.value, str(exc.status_code)).inc()
            raise
        finally:
            self.metrics.upstream_seconds.labels(upstream.role.value).observe(time.perf_counter() - started)

    async def _stream(self, attempts: Attempts, decision: Decision, payload: dict[str, Any],
                      entry: dict[str, Any], started: float, spend: _Spend, wire: _Wire) -> Response:
        """The streamed answer; with ``stream_usage``, a chat upstream is asked for its usage,
        which is taken out again (after it is read) if the client did not ask for it."""
        # Stripped for a client that did not ask: each upstream is asked in _stream_from.
        strip = wire.chat and self.config.stream_usage and asking_stream_usage(payload)[1]
        chunks = attempts.astream(partial(self._stream_from, payload=payload, wire=wire))
        try:
            head = await chunks.__anext__()
        except StopAsyncIteration:
            head = b""
        except BaseException:
            with anyio.CancelScope(shield=True):
                await chunks.aclose()
            raise
        outcome = chunks.outcome
        # of the answer sent: a rejected answer's usage is in its escalation (its own, unstripped chunks)
        scanner = wire.scanner(strip, outcome.role)
        record = self._answered(decision, outcome, entry, spend, stream=True, wire=wire)
        entry["status"] = 200

        ended = False  # the body ran to its end (or to the error event it sends)

        async def finish() -> None:
            """After the body, or in its place if the client left before it started (the
            response's own ``finally`` calls it once): close the upstream, count, settle, log."""
            if not ended:  # the client left first (before the body's first byte, or during it)
                entry.setdefault("error", "client_disconnected")
            with anyio.CancelScope(shield=True):
                await chunks.aclose()
            scanner.flush()
            self._count(outcome, scanner.usage, entry, spend, wire)
            self._finish(entry, started, wire.endpoint)

        async def body() -> AsyncIterator[bytes]:
            nonlocal ended
            try:
                if head and (sent := scanner.feed(head)):
                    yield sent
                async for chunk in chunks:
                    if sent := scanner.feed(chunk):
                        yield sent
                last = scanner.flush()
            except UpstreamError as exc:  # after the first chunk: tell the client in the stream
                entry["error"] = exc.error_type
                error = upstream_api_error(exc, {}, {}).body()
                last = scanner.flush() + wire.error_event(error)
            if last:
                yield last
            ended = True

        return _DisconnectAwareStream(body(), on_close=finish, media_type="text/event-stream",
                                      headers={**decision_headers(record), "cache-control": "no-cache"})

    # Bookkeeping ---------------------------------------------------------------------------
    def _answered(self, decision: Decision, outcome: Outcome, entry: dict[str, Any], spend: _Spend,
                  stream: bool, wire: _Wire) -> dict[str, Any]:
        if outcome.failures:
            self.metrics.fallbacks.labels(outcome.failures[0].role.value).inc()
        record = outcome_record(decision, outcome, wire.usage)
        if spend.refused is not None:
            record["escalation_refused"] = spend.refused
        self.metrics.answers.labels(outcome.role.value, str(stream).lower()).inc()
        entry.update(role=record["role"], model=record["model"],
                     fallback_from=record["fallback"]["from"] if record["fallback"] else None)
        # The check's name only: its reason may quote the answer, which the access log does not hold.
        if record.get("escalated"):
            entry.update(escalated_from=record["escalated"]["from"],
                         escalation_check=check_name(record["escalated"]["reason"]))
        if spend.refused is not None:
            entry.update(escalation_refused=spend.refused["because"],
                         escalation_check=check_name(spend.refused["reason"]))
        return record

    def _count(self, outcome: Outcome, usage: Any, entry: dict[str, Any], spend: _Spend, wire: _Wire) -> None:
        """Count (and price) each answer's usage once: the rejected ones, then the one sent;
        charge the strong answer to the budget."""
        for rejected in outcome.escalations:
            self._count_rejected(rejected, wire)
        counts = self.metrics.add_usage(outcome.role.value, usage, outcome.model_name)
        entry["prompt_tokens"], entry["completion_tokens"] = counts
        if self.prices is not None and None in counts:
            entry["unpriced"] = "the answer reported no usage"
        spend.settle(counts if outcome.role is Role.STRONG else None)

    def _count_rejected(self, rejected: Escalation, wire: _Wire) -> None:
        """Count an answer a check rejected: the escalation, and its usage (priced, with prices)."""
        self.metrics.escalations.labels(rejected.role.value, check_name(rejected.reason)).inc()
        self.metrics.add_usage(rejected.role.value, wire.usage(rejected.value), rejected.model)

    def _finish(self, entry: dict[str, Any], started: float, endpoint: str) -> None:
        status = entry.setdefault("status", 500)
        entry["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
        self.metrics.requests.labels(endpoint, str(status)).inc()
        self.access.info(json.dumps(entry, ensure_ascii=False, default=str))
