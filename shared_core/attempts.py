"""The one loop that tries models in order: the router's choice, then the fallback.

Every integration (the LangChain chat model and runnable, the LlamaIndex LLM, the
server) hands :class:`Attempts` an ordered plan of ``(role, model)`` pairs and a
``call(model)``; the loop returns an :class:`Outcome` saying which model answered
and which failed before it, or raises one error that carries every failure.

* ``fallback_on`` decides which errors move on to the next model: exception
  types, or a predicate. The default, :func:`is_provider_error`, covers what
  providers raise when they are unreachable or overloaded (connection errors,
  timeouts, HTTP 429 and 5xx), recognised by duck typing so that no provider
  package is imported; a ``TypeError`` or ``ValueError`` (a programming mistake,
  a bad request) is raised at once.
* ``timeout`` (seconds) bounds each attempt: the whole call for :meth:`Attempts.run`
  and :meth:`Attempts.arun`, the wait for each chunk for the streams. An attempt
  that runs out raises :class:`ModelTimeoutError`, which always counts as a
  reason to fall back.
* A stream falls back only before its first chunk; after that, errors propagate.
* ``check`` (opt-in) judges an answer that did come back: given ``(role, value)``
  (for a stream, the list of its chunks, buffered until the check passes) it
  returns ``None`` to accept it or a reason to reject it, and a rejected answer
  *escalates* to the next of ``escalate_to`` not tried yet (the same call on a
  stronger model). Each rejection is an :class:`Escalation` on the outcome, with
  the rejected value, so that its usage can still be counted. An answer is
  checked only while an escalation target is left; the last one is returned as
  it is. Errors of an escalated model follow the ``fallback_on`` rules; the error
  that ends such a call carries the answers rejected before it
  (:func:`rejected_answers`), which were made and paid for.
* When more than one model was tried and all failed, :class:`AllModelsFailedError`
  carries each failure in order, the last one chained as ``__cause__``. A plan of
  one model (no fallback) raises that model's own error unchanged.

Example:
    >>> from shared_core.routers import Role
    >>> def call(model):
    ...     if model == "big":
    ...         raise ConnectionError("big is down")
    ...     return f"{model} says hi"
    >>> outcome = Attempts([(Role.STRONG, "big"), (Role.WEAK, "small")]).run(call)
    >>> outcome.value, outcome.role.value, outcome.model_name
    ('small says hi', 'weak', 'small')
    >>> [f.to_dict() for f in outcome.failures]
    [{'role': 'strong', 'model': 'big', 'error': 'ConnectionError: big is down'}]
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import sys
import threading
from dataclasses import dataclass, field
from typing import (
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Generic,
    Iterable,
    Iterator,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
)

from shared_core.errors import ConfigError, RouteLLMError
from shared_core.routers.base import Role

__all__ = [
    "AllModelsFailedError",
    "AsyncAttemptStream",
    "AttemptStream",
    "Attempts",
    "Check",
    "Escalation",
    "Failure",
    "FallbackOn",
    "ModelTimeoutError",
    "Outcome",
    "check_timeout",
    "fallback_predicate",
    "is_provider_error",
    "model_label",
    "rejected_answers",
]

M = TypeVar("M")
T = TypeVar("T")

#: An answer check: ``(role, value) -> None`` (accept) or a reason to escalate.
Check = Callable[[Role, Any], Optional[str]]
#: Exception types, one type, or a predicate; ``None`` means :func:`is_provider_error`.
FallbackOn = Union[type, Tuple[type, ...], Callable[[BaseException], bool], None]

# Provider exception classes, by name, that mean "unreachable, overloaded or too slow".
# httpx: TransportError covers ConnectError, ReadTimeout, RemoteProtocolError, ...;
# openai / anthropic / mistral: APIConnectionError, APITimeoutError, RateLimitError,
# InternalServerError; requests: ConnectionError, Timeout; aiohttp: ClientConnectionError,
# ServerTimeoutError; google-api-core: ServiceUnavailable, ResourceExhausted, ...
_PROVIDER_ERROR_NAMES = frozenset({
    "TransportError", "TimeoutException", "NetworkError", "ConnectError", "ConnectTimeout", "ReadTimeout",
    "WriteTimeout", "PoolTimeout", "ReadError", "WriteError", "RemoteProtocolError",
    "APIConnectionError", "APITimeoutError", "RateLimitError", "InternalServerError", "ServiceUnavailableError",
    "OverloadedError", "Timeout", "ConnectionError", "ChunkedEncodingError",
    "ClientConnectionError", "ClientConnectorError", "ServerDisconnectedError", "ServerTimeoutError",
    "ServiceUnavailable", "ResourceExhausted", "DeadlineExceeded", "TooManyRequests",
    "BadGateway", "GatewayTimeout",
})
#: Errors that are never retried on another model: the call itself is wrong.
_PROGRAMMING_ERRORS = (TypeError, ValueError, AttributeError, NameError, LookupError, AssertionError,
                       NotImplementedError, ImportError)
_TIMEOUTS = (TimeoutError, asyncio.TimeoutError)


def _status_code(exc: BaseException) -> Optional[int]:
    """The HTTP status an error carries: ``status_code`` (openai, anthropic),
    ``status`` (aiohttp) or ``response.status_code`` (httpx), if any."""
    for value in (getattr(exc, "status_code", None), getattr(exc, "status", None),
                  getattr(getattr(exc, "response", None), "status_code", None)):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def is_provider_error(exc: BaseException) -> bool:
    """Whether ``exc`` is what a provider raises when it is unreachable, overloaded
    or too slow, so that another model may answer.

    True for connection errors and timeouts (builtin, ``asyncio``, httpx, openai,
    requests, aiohttp, ... by class name), for errors carrying HTTP status 408,
    429 or 5xx, and for an error raised from one of these (``__cause__``).
    False for ``TypeError``, ``ValueError`` and other programming mistakes, and
    for every other error.
    """
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, _PROGRAMMING_ERRORS):
            return False
        if isinstance(exc, (ConnectionError, *_TIMEOUTS)):
            return True
        if any(cls.__name__ in _PROVIDER_ERROR_NAMES for cls in type(exc).__mro__):
            return True
        status = _status_code(exc)
        if status is not None:
            return status in (408, 429) or 500 <= status <= 599
        exc, seen = exc.__cause__, seen + 1  # type: ignore[assignment]
    return False


def fallback_predicate(fallback_on: FallbackOn) -> Callable[[BaseException], bool]:
    """``fallback_on`` as a predicate; raises :class:`ConfigError` for anything else.

    ``None`` is :func:`is_provider_error`; an exception type or a tuple of them
    match by ``isinstance``; a callable is used as it is.
    """
    if fallback_on is None:
        return is_provider_error
    if isinstance(fallback_on, type):
        fallback_on = (fallback_on,)
    if isinstance(fallback_on, tuple):
        bad = [t for t in fallback_on if not (isinstance(t, type) and issubclass(t, BaseException))]
        if bad or not fallback_on:
            raise ConfigError(
                f"fallback_on must be exception types, a predicate or None, got {fallback_on!r}"
                + (f" ({bad[0]!r} is not an exception type)" if bad else " (empty)")
            )
        types = fallback_on
        return lambda exc: isinstance(exc, types)
    if callable(fallback_on):
        return fallback_on
    raise ConfigError(
        f"fallback_on must be an exception type, a tuple of them, a predicate or None, "
        f"got {type(fallback_on).__name__}: {fallback_on!r}"
    )


def check_timeout(timeout: Any) -> Optional[float]:
    """``timeout`` as seconds (a positive finite number) or ``None``; raises otherwise."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < float("inf"):
        raise ConfigError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
    return float(timeout)


def model_label(model: Any) -> str:
    """A readable name for a model: LlamaIndex ``metadata.model_name``, then
    ``model_name``, ``model``, ``get_name()``, else the class name."""
    metadata = getattr(model, "metadata", None)
    for candidate in (getattr(metadata, "model_name", None), getattr(model, "model_name", None),
                      getattr(model, "model", None)):
        if isinstance(candidate, str) and candidate:
            return candidate
    if isinstance(model, str):
        return model
    get_name = getattr(model, "get_name", None)
    if callable(get_name):
        name = get_name()
        if isinstance(name, str) and name:
            return name
    return type(model).__name__


# Results and errors ---------------------------------------------------------------------
@dataclass(frozen=True)
class Failure:
    """One model's failed attempt: its role, its name and the error it raised."""

    role: Role
    model: str
    error: BaseException

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role.value, "model": self.model, "error": f"{type(self.error).__name__}: {self.error}"}


@dataclass(frozen=True)
class Escalation:
    """An answer a check rejected: who gave it, why, and the answer itself
    (``value``; a stream's buffered chunks), kept so that its usage counts.
    ``model_id`` is the ``id()`` of the model object that gave it, so that a caller
    which watched each attempt (the LlamaIndex ledger, for answers that are plain
    text) can tell whose usage it was, within the call."""

    role: Role
    model: str
    reason: str
    value: Any = field(default=None, repr=False, compare=False)
    model_id: Optional[int] = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role.value, "model": self.model, "reason": self.reason}


#: The attribute of an error that ended a call after a rejection: the rejected answers.
_REJECTED = "_routellm_rejected"


def rejected_answers(error: BaseException) -> Tuple[Escalation, ...]:
    """The answers a check rejected before ``error`` ended the call (the model
    escalated to failed): they were made, and are paid for, though none came back."""
    return tuple(getattr(error, _REJECTED, ()))


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What answered: the value, the role and model that gave it, the failures
    before it and the answers rejected before it (``escalations``)."""

    value: T
    role: Role
    model: Any
    model_name: str
    failures: Tuple[Failure, ...] = ()
    escalations: Tuple[Escalation, ...] = ()


class AllModelsFailedError(RouteLLMError):
    """Every model of the plan failed. ``errors`` holds each :class:`Failure` in the
    order tried (``exceptions`` their errors, as an ``ExceptionGroup`` names them);
    the last error is ``__cause__``."""

    def __init__(self, errors: Sequence[Failure]) -> None:
        self.errors: Tuple[Failure, ...] = tuple(errors)
        self.exceptions: Tuple[BaseException, ...] = tuple(f.error for f in self.errors)
        parts = "; ".join(f"{f.role.value} model {f.model!r}: {type(f.error).__name__}: {f.error}" for f in self.errors)
        super().__init__(f"all {len(self.errors)} models failed: {parts}")
        if self.errors:
            self.__cause__ = self.errors[-1].error

    def __reduce__(self):
        return (type(self), (self.errors,))


class ModelTimeoutError(RouteLLMError, TimeoutError):
    """A model gave no answer (or, streaming, no next chunk) within ``timeout`` seconds."""

    def __init__(self, role: Role, model: str, timeout: float, what: str = "answer") -> None:
        self.role, self.model, self.timeout, self.what = role, model, timeout, what
        super().__init__(f"the {role.value} model {model!r} gave no {what} within timeout={timeout:g} s")

    def __reduce__(self):
        return (type(self), (self.role, self.model, self.timeout, self.what))


# Timeouts -----------------------------------------------------------------------------------
def _in_thread(fn: Callable[[], T], timeout: float, ctx: contextvars.Context, on_timeout: Callable[[], BaseException]) -> T:
    """``fn()`` in a daemon thread (in ``ctx``), waiting at most ``timeout`` seconds.

    Python cannot stop a thread: a call that runs out keeps running in the
    background and its result is dropped.
    """
    box: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["value"] = ctx.run(fn)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name="routellm-attempt", daemon=True).start()
    if not done.wait(timeout):
        raise on_timeout()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _task(coro: Awaitable[T], ctx: Optional[contextvars.Context]) -> "asyncio.Future[T]":
    if ctx is not None and sys.version_info >= (3, 11):
        return asyncio.get_running_loop().create_task(coro, context=ctx)  # type: ignore[arg-type]
    return asyncio.ensure_future(coro)


async def _await_within(
    awaitable: Awaitable[T], timeout: Optional[float], on_timeout: Callable[[], BaseException],
    ctx: Optional[contextvars.Context] = None,
) -> T:
    if timeout is None:
        return await awaitable
    task = _task(awaitable, ctx)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:  # the caller gave up: so does the call
        task.cancel()
        raise
    if not done:
        task.cancel()
        raise on_timeout()
    return task.result()


_END = object()


# The loop -----------------------------------------------------------------------------------
class Attempts(Generic[M]):
    """Try the models of ``plan`` in order until one answers.

    Args:
        plan: ``(role, model)`` pairs, the router's choice first.
        fallback_on: which errors move on to the next model (see :func:`fallback_predicate`).
        timeout: seconds each attempt may take (``None``: no limit).
        name: how to name a model in failures and outcomes (default :func:`model_label`).
        on_failure: called with each :class:`Failure` the loop moves on from,
            before the next model is tried (to say so in that call's metadata).
        check: judges each answer while an escalation target is left (see the
            module docstring); ``None``: every answer is accepted.
        escalate_to: ``(role, model)`` pairs, in order, that a rejected answer
            escalates to; a pair also in ``plan`` is the same attempt (compared
            by identity), not a second one.
        on_strong_failure: called when an attempt of the strong role fails (whether
            or not another model is tried next): a budget frees the reservation it
            held for a strong answer that will not come.
    """

    def __init__(
        self,
        plan: Sequence[Tuple[Role, M]],
        *,
        fallback_on: FallbackOn = None,
        timeout: Optional[float] = None,
        name: Callable[[M], str] = model_label,
        on_failure: Optional[Callable[[Failure], None]] = None,
        check: Optional[Check] = None,
        escalate_to: Sequence[Tuple[Role, M]] = (),
        on_strong_failure: Optional[Callable[[], None]] = None,
    ) -> None:
        self.plan: Tuple[Tuple[Role, M], ...] = tuple(plan)
        if not self.plan:
            raise ConfigError("an attempt plan needs at least one (role, model) pair, got none")
        self.escalate_to: Tuple[Tuple[Role, M], ...] = tuple(escalate_to)
        for what, pairs in (("plan", self.plan), ("escalate_to", self.escalate_to)):
            for i, item in enumerate(pairs):
                if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], Role)):
                    raise ConfigError(f"{what}[{i}] must be a (Role, model) pair, got {item!r}")
        if check is not None and not callable(check):
            raise ConfigError(f"check must be a callable (role, value) -> reason or None, got {check!r}")
        self._check = check
        #: What the caller calls each model, by ``id`` (a role, a ladder's rung); the loop does not read it.
        self.keys: dict[int, Any] = {}
        #: The call's budget reservations, if the caller keeps them here; the loop does not read it.
        self.spend: Any = None
        self.timeout = check_timeout(timeout)
        self._should_fall_back = fallback_predicate(fallback_on)
        self._name = name
        self._on_failure = on_failure
        self._on_strong_failure = on_strong_failure

    # Shared by every path -------------------------------------------------------------------
    def _falls_back(self, exc: BaseException) -> bool:
        return isinstance(exc, ModelTimeoutError) or bool(self._should_fall_back(exc))

    def _queue(self) -> "_Queue[M]":
        return _Queue(self)

    def _failed(self, failures: list[Failure], last: bool, role: Role, model: M, exc: BaseException) -> None:
        """Record a failure, or raise: a non-fallback error as it is, the last one
        as itself (one model tried) or as :class:`AllModelsFailedError`."""
        if not self._falls_back(exc):
            if failures and hasattr(exc, "add_note"):
                exc.add_note("after: " + "; ".join(f"{f.role.value} model {f.model!r} failed with "
                                                    f"{type(f.error).__name__}: {f.error}" for f in failures))
            raise exc
        failures.append(Failure(role, self._name(model), exc))
        if last:
            if len(failures) == 1:
                raise exc
            raise AllModelsFailedError(failures) from exc
        if self._on_failure is not None:
            self._on_failure(failures[-1])

    def _timeout_error(self, role: Role, model: M, what: str = "answer") -> Callable[[], BaseException]:
        return lambda: ModelTimeoutError(role, self._name(model), self.timeout or 0.0, what)

    def _outcome(self, value: T, role: Role, model: M, queue: "_Queue[M]") -> Outcome[T]:
        return Outcome(value, role, model, self._name(model), tuple(queue.failures), tuple(queue.escalations))

    @property
    def checks(self) -> bool:
        """Whether answers may be checked (a check and somewhere to escalate to)."""
        return self._check is not None and bool(self.escalate_to)

    # run / arun --------------------------------------------------------------------------------
    def run(self, call: Callable[[M], T]) -> Outcome[T]:
        """``call(model)`` for each model in turn until one returns an accepted answer."""
        queue = self._queue()
        for role, model in queue:
            try:
                if self.timeout is None:
                    value = call(model)
                else:
                    value = _in_thread(lambda: call(model), self.timeout, contextvars.copy_context(),
                                       self._timeout_error(role, model))
            except Exception as exc:
                queue.failed(role, model, exc)
                continue
            if queue.accepts(role, model, value):
                return self._outcome(value, role, model, queue)
        raise AssertionError("unreachable")  # pragma: no cover

    async def arun(self, call: Callable[[M], Awaitable[T]]) -> Outcome[T]:
        """``await call(model)`` for each model in turn until one returns an accepted answer."""
        queue = self._queue()
        for role, model in queue:
            try:
                value = await _await_within(call(model), self.timeout, self._timeout_error(role, model))
            except Exception as exc:
                queue.failed(role, model, exc)
                continue
            if queue.accepts(role, model, value):
                return self._outcome(value, role, model, queue)
        raise AssertionError("unreachable")  # pragma: no cover

    # stream / astream ------------------------------------------------------------------------
    def stream(self, open_stream: Callable[[M], Iterable[T]], *, eager: bool = False) -> "AttemptStream[M, T]":
        """The chunks of the first model whose stream yields a first chunk (or ends
        cleanly); read :attr:`AttemptStream.outcome` once the first chunk is out.

        With ``eager`` the first model's ``open_stream`` is called now (as a direct
        call of a framework that starts the request at once would); an error it
        raises is handled at the first ``next``.
        """
        return AttemptStream(self, open_stream, eager)

    def astream(self, open_stream: Callable[[M], Any]) -> "AsyncAttemptStream[M, T]":
        """Async :meth:`stream`; ``open_stream(model)`` returns an async iterable or
        an awaitable of one (LlamaIndex's ``astream_chat``). To open the first
        model's stream at once, ``await stream.open_first()``."""
        return AsyncAttemptStream(self, open_stream)


class _Queue(Generic[M]):
    """The order of one call's attempts: the plan, grown by an escalation target
    when an answer is rejected at its end. Iterate it for ``(role, model)``;
    report each attempt with :meth:`failed` or :meth:`accepts`."""

    def __init__(self, attempts: Attempts[M]) -> None:
        self.attempts = attempts
        self.entries: list[Tuple[Role, M]] = list(attempts.plan)
        self.failures: list[Failure] = []
        self.escalations: list[Escalation] = []
        self.position = -1

    def __iter__(self) -> Iterator[Tuple[Role, M]]:
        while self.position + 1 < len(self.entries):
            self.position += 1
            yield self.entries[self.position]

    def _untried_targets(self) -> list[Tuple[Role, M]]:
        tried = {id(model) for _, model in self.entries[: self.position + 1]}
        return [t for t in self.attempts.escalate_to if id(t[1]) not in tried]

    def checking(self) -> bool:
        """Whether the current attempt's answer will be checked."""
        return self.attempts._check is not None and bool(self._untried_targets())  # noqa: SLF001

    def failed(self, role: Role, model: M, exc: BaseException) -> None:
        last = self.position + 1 == len(self.entries)
        hook = self.attempts._on_strong_failure  # noqa: SLF001
        if role is Role.STRONG and hook is not None:
            hook()
        try:
            self.attempts._failed(self.failures, last, role, model, exc)  # noqa: SLF001
        except BaseException as raised:
            if self.escalations:  # the call ends here: its rejected answers go with the error
                with contextlib.suppress(AttributeError):  # an error that takes no attributes keeps none
                    setattr(raised, _REJECTED, tuple(self.escalations))
            raise

    def accepts(self, role: Role, model: M, value: Any) -> bool:
        """Check ``value``; a rejection records an :class:`Escalation` and queues
        the next escalation target (if the queue has no next attempt)."""
        if not self.checking():
            return True
        reason = self.attempts._check(role, value)  # type: ignore[misc]  # noqa: SLF001
        if reason is None:
            return True
        if not isinstance(reason, str) or not reason:
            raise ConfigError(f"an answer check must return None or a non-empty reason string, got {reason!r}")
        self.escalations.append(Escalation(role, self.attempts._name(model), reason, value, id(model)))  # noqa: SLF001
        if self.position + 1 == len(self.entries):
            self.entries.append(self._untried_targets()[0])
        return False


@dataclass(eq=False)
class AttemptStream(Generic[M, T]):
    """Iterator over the answering model's chunks; see :meth:`Attempts.stream`."""

    attempts: Attempts[M]
    open_stream: Callable[[M], Iterable[T]]
    eager: bool = False
    #: Set when a model's stream gave its first chunk (or ended without one).
    outcome: Optional[Outcome[None]] = field(default=None, init=False)
    _chunks: Optional[Iterator[T]] = field(default=None, repr=False)
    _head: Any = field(default=_END, repr=False)
    _opened: Any = field(default=None, repr=False)
    _ctx: contextvars.Context = field(default_factory=contextvars.copy_context, repr=False)
    _stalled: bool = field(default=False, repr=False)
    _buffered: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if self.eager:
            role, model = self.attempts.plan[0]
            try:
                self._opened = self._open(model, role)
            except Exception as exc:
                self._opened = exc

    def _open(self, model: M, role: Role) -> Iterator[T]:
        if self.attempts.timeout is None:
            return iter(self.open_stream(model))
        return _in_thread(lambda: iter(self.open_stream(model)), self.attempts.timeout, self._ctx,
                          self.attempts._timeout_error(role, model))  # noqa: SLF001

    def __iter__(self) -> "AttemptStream[M, T]":
        return self

    def _next_of(self, chunks: Iterator[T], role: Role, model: M, what: str) -> Any:
        if self.attempts.timeout is None:
            return next(chunks, _END)
        return _in_thread(lambda: next(chunks, _END), self.attempts.timeout, self._ctx,
                          self.attempts._timeout_error(role, model, what))  # noqa: SLF001

    def _start(self) -> None:
        attempts, queue, base = self.attempts, self.attempts._queue(), self._ctx  # noqa: SLF001
        for role, model in queue:
            # One context per attempt, kept across its chunks: a timed-out attempt's
            # thread may still be running in the previous one.
            self._ctx = base.copy()
            checked = queue.checking()
            try:
                if queue.position == 0 and self._opened is not None:
                    opened, self._opened = self._opened, None
                    if isinstance(opened, BaseException):
                        raise opened
                    chunks = opened
                else:
                    chunks = self._open(model, role)
                head = self._next_of(chunks, role, model, "first chunk")
                if checked:  # the whole answer, before any chunk is released
                    buffered = [] if head is _END else [head]
                    while head is not _END:
                        head = self._next_of(chunks, role, model, "next chunk")
                        if head is not _END:
                            buffered.append(head)
            except Exception as exc:
                queue.failed(role, model, exc)
                continue
            if checked:
                if not queue.accepts(role, model, buffered):
                    continue
                chunks, head = iter(buffered), _END
                self._buffered = True
            self._chunks, self._head = chunks, head
            self.outcome = attempts._outcome(None, role, model, queue)  # noqa: SLF001
            return

    def __next__(self) -> T:
        if self.outcome is None:
            self._start()
            if self._head is not _END:
                head, self._head = self._head, _END
                return head
        if self._stalled:
            raise StopIteration
        if self._buffered:
            return next(self._chunks)  # type: ignore[arg-type]
        try:
            chunk = self._next_of(self._chunks, self.outcome.role, self.outcome.model, "next chunk")
        except ModelTimeoutError:
            self._stalled = True  # the stalled stream stays with its thread
            raise
        if chunk is _END:
            raise StopIteration
        return chunk

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if callable(close):
            close()


@dataclass(eq=False)
class AsyncAttemptStream(Generic[M, T]):
    """Async iterator over the answering model's chunks; see :meth:`Attempts.astream`."""

    attempts: Attempts[M]
    open_stream: Callable[[M], Any]
    #: Set when a model's stream gave its first chunk (or ended without one).
    outcome: Optional[Outcome[None]] = field(default=None, init=False)
    _chunks: Optional[AsyncIterator[T]] = field(default=None, repr=False)
    _head: Any = field(default=_END, repr=False)
    _ctx: contextvars.Context = field(default_factory=contextvars.copy_context, repr=False)
    _stalled: bool = field(default=False, repr=False)
    _opened: Any = field(default=None, repr=False)
    _buffer: Optional[Iterator[T]] = field(default=None, repr=False)

    def __aiter__(self) -> "AsyncAttemptStream[M, T]":
        return self

    async def open_first(self) -> "AsyncAttemptStream[M, T]":
        """Open the first model's stream now, as a direct call of a framework that
        starts the request at once would (the async form of ``stream(eager=True)``);
        an error it raises is handled at the first ``anext``. Returns the stream."""
        if self._opened is None and self.outcome is None:
            role, model = self.attempts.plan[0]
            try:
                self._opened = await self._open(model, role)
            except Exception as exc:
                self._opened = exc
        return self

    async def _anext_of(self, chunks: AsyncIterator[T], role: Role, model: M, what: str) -> Any:
        async def step() -> Any:
            try:
                return await chunks.__anext__()
            except StopAsyncIteration:
                return _END

        return await _await_within(step(), self.attempts.timeout,
                                   self.attempts._timeout_error(role, model, what), self._ctx)  # noqa: SLF001

    async def _open(self, model: M, role: Role) -> AsyncIterator[T]:
        async def opening() -> AsyncIterator[T]:
            opened = self.open_stream(model)
            if inspect.isawaitable(opened):
                opened = await opened
            return opened.__aiter__()

        return await _await_within(opening(), self.attempts.timeout,
                                   self.attempts._timeout_error(role, model), self._ctx)  # noqa: SLF001

    async def _start(self) -> None:
        attempts, queue, base = self.attempts, self.attempts._queue(), self._ctx  # noqa: SLF001
        for role, model in queue:
            self._ctx = base.copy()
            checked = queue.checking()
            try:
                if queue.position == 0 and self._opened is not None:
                    opened, self._opened = self._opened, None
                    if isinstance(opened, BaseException):
                        raise opened
                    chunks = opened
                else:
                    chunks = await self._open(model, role)
                head = await self._anext_of(chunks, role, model, "first chunk")
                if checked:  # the whole answer, before any chunk is released
                    buffered = [] if head is _END else [head]
                    while head is not _END:
                        head = await self._anext_of(chunks, role, model, "next chunk")
                        if head is not _END:
                            buffered.append(head)
            except Exception as exc:
                queue.failed(role, model, exc)
                continue
            if checked:
                if not queue.accepts(role, model, buffered):
                    continue
                self._buffer, head = iter(buffered), _END
            self._chunks, self._head = chunks, head
            self.outcome = attempts._outcome(None, role, model, queue)  # noqa: SLF001
            return

    async def __anext__(self) -> T:
        if self.outcome is None:
            await self._start()
            if self._head is not _END:
                head, self._head = self._head, _END
                return head
        if self._stalled:
            raise StopAsyncIteration
        if self._buffer is not None:
            chunk = next(self._buffer, _END)
            if chunk is _END:
                raise StopAsyncIteration
            return chunk
        try:
            chunk = await self._anext_of(self._chunks, self.outcome.role, self.outcome.model, "next chunk")
        except ModelTimeoutError:
            self._stalled = True
            raise
        if chunk is _END:
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        aclose = getattr(self._chunks, "aclose", None)
        if callable(aclose):
            await aclose()
