"""The attempt loop: fallback triggers, the all-failed error, timeouts, streams."""

from __future__ import annotations

import asyncio
import contextvars
import pickle
import threading
import time

import pytest

from shared_core.attempts import (
    AllModelsFailedError,
    Attempts,
    ModelTimeoutError,
    check_timeout,
    fallback_predicate,
    is_provider_error,
    model_label,
)
from shared_core.errors import ConfigError, RouteLLMError
from shared_core.routers import Role

PLAN = [(Role.STRONG, "big"), (Role.WEAK, "small")]


def failing(errors):
    """A call that raises ``errors[model]`` for the models named there, else answers."""
    calls = []

    def call(model):
        calls.append(model)
        if model in errors:
            raise errors[model]
        return f"{model}: ok"

    return call, calls


# Provider-style errors, duck typed (no provider package imported) ------------------------
class RateLimitError(Exception):
    """Named like openai's / anthropic's."""


class APIStatusError(Exception):
    def __init__(self, message, status_code):
        super().__init__(message)
        self.status_code = status_code


class _Response:
    def __init__(self, status_code):
        self.status_code = status_code


class HTTPStatusError(Exception):
    """Shaped like httpx's: the status is on ``response``."""

    def __init__(self, message, status_code):
        super().__init__(message)
        self.response = _Response(status_code)


class ReadTimeout(Exception):
    """Named like httpx's (whose base class is ``TransportError``)."""


@pytest.mark.parametrize("exc", [
    ConnectionError("refused"), ConnectionResetError("reset"), TimeoutError("slow"), asyncio.TimeoutError(),
    RateLimitError("429"), ReadTimeout("read"), APIStatusError("overloaded", 529), APIStatusError("busy", 503),
    APIStatusError("too many", 429), HTTPStatusError("bad gateway", 502), APIStatusError("timeout", 408),
])
def test_default_falls_back_on_what_providers_raise(exc):
    assert is_provider_error(exc)


@pytest.mark.parametrize("exc", [
    TypeError("bad argument"), ValueError("bad value"), KeyError("k"), AttributeError("a"),
    RuntimeError("bug"), APIStatusError("bad request", 400), APIStatusError("unauthorized", 401),
    HTTPStatusError("not found", 404), ConfigError("misuse"),
])
def test_default_does_not_fall_back_on_mistakes(exc):
    assert not is_provider_error(exc)


def test_an_error_raised_from_a_provider_error_counts_as_one():
    try:
        try:
            raise ConnectionError("refused")
        except ConnectionError as inner:
            raise RuntimeError("the client gave up") from inner
    except RuntimeError as outer:
        assert is_provider_error(outer)


def test_fallback_on_types_and_predicates():
    assert fallback_predicate(KeyError)(KeyError("x")) and not fallback_predicate(KeyError)(ConnectionError())
    assert fallback_predicate((KeyError, OSError))(OSError())
    assert fallback_predicate(lambda e: "retry" in str(e))(RuntimeError("please retry"))
    assert fallback_predicate(None) is is_provider_error
    for bad in ("ConnectionError", (KeyError, "x"), (), 3):
        with pytest.raises(ConfigError, match="fallback_on"):
            fallback_predicate(bad)


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan"), "5", True])
def test_timeout_must_be_positive_seconds(bad):
    with pytest.raises(ConfigError, match="timeout must be a positive number"):
        check_timeout(bad)


def test_plan_is_checked():
    with pytest.raises(ConfigError, match="at least one"):
        Attempts([])
    with pytest.raises(ConfigError, match=r"plan\[0\]"):
        Attempts([("strong", "big")])


# run / arun -------------------------------------------------------------------------------
def test_first_model_answers():
    call, calls = failing({})
    outcome = Attempts(PLAN).run(call)
    assert (outcome.value, outcome.role, outcome.model, outcome.model_name, outcome.failures) == (
        "big: ok", Role.STRONG, "big", "big", ())
    assert calls == ["big"]


def test_falls_back_on_a_provider_error_and_records_it():
    call, calls = failing({"big": ConnectionError("big is down")})
    outcome = Attempts(PLAN).run(call)
    assert (outcome.value, outcome.role) == ("small: ok", Role.WEAK)
    assert [f.to_dict() for f in outcome.failures] == [
        {"role": "strong", "model": "big", "error": "ConnectionError: big is down"}]
    assert calls == ["big", "small"]


def test_a_programming_error_is_raised_at_once():
    call, calls = failing({"big": TypeError("unexpected keyword 'temprature'")})
    with pytest.raises(TypeError, match="temprature"):
        Attempts(PLAN).run(call)
    assert calls == ["big"]


def test_custom_fallback_on_replaces_the_default():
    call, calls = failing({"big": KeyError("missing")})
    assert Attempts(PLAN, fallback_on=KeyError).run(call).role is Role.WEAK
    call, calls = failing({"big": ConnectionError("down")})
    with pytest.raises(ConnectionError):
        Attempts(PLAN, fallback_on=KeyError).run(call)
    assert calls == ["big"]


def test_all_failed_carries_every_error_in_order():
    first, last = ConnectionError("big is down"), RateLimitError("small: 429")
    call, _ = failing({"big": first, "small": last})
    with pytest.raises(AllModelsFailedError) as info:
        Attempts(PLAN).run(call)
    err = info.value
    assert isinstance(err, RouteLLMError)
    assert [(f.role, f.model, f.error) for f in err.errors] == [(Role.STRONG, "big", first), (Role.WEAK, "small", last)]
    assert err.exceptions == (first, last)
    assert err.__cause__ is last
    assert "strong model 'big': ConnectionError: big is down" in str(err)
    assert "weak model 'small': RateLimitError: small: 429" in str(err)
    again = pickle.loads(pickle.dumps(err))
    assert [f.model for f in again.errors] == ["big", "small"] and str(again) == str(err)


def test_a_plan_of_one_raises_the_model_s_own_error():
    error = ConnectionError("big is down")
    call, _ = failing({"big": error})
    with pytest.raises(ConnectionError) as info:
        Attempts(PLAN[:1]).run(call)
    assert info.value is error


def test_a_mistake_after_a_fallback_names_the_earlier_failure():
    call, _ = failing({"big": ConnectionError("big is down"), "small": TypeError("bad")})
    with pytest.raises(TypeError) as info:
        Attempts(PLAN).run(call)
    assert any("big is down" in note for note in getattr(info.value, "__notes__", ["big is down"]))


def test_arun_falls_back_and_raises_the_same_way():
    async def call(model):
        if model == "big":
            raise ConnectionError("big is down")
        return f"{model}: ok"

    outcome = asyncio.run(Attempts(PLAN).arun(call))
    assert (outcome.value, outcome.role, [f.model for f in outcome.failures]) == ("small: ok", Role.WEAK, ["big"])

    async def broken(model):
        raise ConnectionError(f"{model} is down")

    with pytest.raises(AllModelsFailedError) as info:
        asyncio.run(Attempts(PLAN).arun(broken))
    assert [f.model for f in info.value.errors] == ["big", "small"]


def test_names_come_from_the_name_function():
    call, _ = failing({"big": ConnectionError("down")})
    outcome = Attempts(PLAN, name=str.upper).run(call)
    assert outcome.model_name == "SMALL" and outcome.failures[0].model == "BIG"


def test_model_label_duck_types_framework_models():
    class Meta:
        model_name = "from-metadata"

    class LlamaLike:
        metadata = Meta()

    class LangChainLike:
        model_name = "gpt-x"

    assert model_label(LlamaLike()) == "from-metadata"
    assert model_label(LangChainLike()) == "gpt-x"
    assert model_label("plain") == "plain"
    assert model_label(object()) == "object"


# Timeouts -----------------------------------------------------------------------------------
def test_run_timeout_raises_and_falls_back():
    def call(model):
        if model == "big":
            time.sleep(2)
        return f"{model}: ok"

    started = time.perf_counter()
    outcome = Attempts(PLAN, timeout=0.1).run(call)
    assert time.perf_counter() - started < 1.5
    assert outcome.role is Role.WEAK
    assert isinstance(outcome.failures[0].error, ModelTimeoutError)
    assert "strong model 'big' gave no answer within timeout=0.1 s" in str(outcome.failures[0].error)

    with pytest.raises(ModelTimeoutError, match="gave no answer within timeout=0.1 s") as info:
        Attempts(PLAN[:1], timeout=0.1).run(call)
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, RouteLLMError)


def test_a_timeout_falls_back_whatever_fallback_on_says():
    outcome = Attempts(PLAN, timeout=0.05, fallback_on=KeyError).run(
        lambda m: time.sleep(1) if m == "big" else "ok")
    assert outcome.value == "ok"


def test_a_timed_call_sees_the_caller_s_context_and_errors():
    var = contextvars.ContextVar("var", default="unset")
    var.set("caller")
    seen = []

    def call(model):
        seen.append((var.get(), threading.current_thread().name))
        raise ValueError("bad request")

    with pytest.raises(ValueError, match="bad request"):
        Attempts(PLAN, timeout=5).run(call)
    assert seen == [("caller", "routellm-attempt")]


def test_arun_timeout_cancels_the_call_and_falls_back():
    cancelled = []

    async def call(model):
        if model == "big":
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                cancelled.append(model)
                raise
        return f"{model}: ok"

    async def main():
        outcome = await Attempts(PLAN, timeout=0.05).arun(call)
        await asyncio.sleep(0)
        return outcome

    outcome = asyncio.run(main())
    assert outcome.value == "small: ok" and isinstance(outcome.failures[0].error, ModelTimeoutError)
    assert cancelled == ["big"]


def test_a_model_s_own_timeout_error_is_not_ours():
    async def call(model):
        raise TimeoutError("the provider's own timeout")

    with pytest.raises(TimeoutError) as info:
        asyncio.run(Attempts(PLAN[:1], timeout=5).arun(call))
    assert not isinstance(info.value, ModelTimeoutError)


# Streams ------------------------------------------------------------------------------------
def gen(model, fail_before=None, fail_after=None, n=3):
    if fail_before:
        raise fail_before
    for i in range(n):
        yield f"{model}-{i}"
    if fail_after:
        raise fail_after


def test_stream_falls_back_only_before_the_first_chunk():
    stream = Attempts(PLAN).stream(lambda m: gen(m, fail_before=ConnectionError("down") if m == "big" else None))
    assert stream.outcome is None
    assert list(stream) == ["small-0", "small-1", "small-2"]
    assert stream.outcome.role is Role.WEAK and stream.outcome.failures[0].model == "big"

    stream = Attempts(PLAN).stream(lambda m: gen(m, fail_after=ConnectionError("cut off")))
    got = []
    with pytest.raises(ConnectionError, match="cut off"):
        for chunk in stream:
            got.append(chunk)
    assert got == ["big-0", "big-1", "big-2"] and stream.outcome.role is Role.STRONG


def test_stream_errors_raised_when_opening_count_too():
    def open_stream(model):
        if model == "big":
            raise RateLimitError("429")
        return iter(["a", "b"])

    stream = Attempts(PLAN).stream(open_stream)
    assert list(stream) == ["a", "b"] and stream.outcome.model == "small"


def test_empty_stream_is_an_answer():
    stream = Attempts(PLAN).stream(lambda m: iter([]))
    assert list(stream) == [] and stream.outcome.role is Role.STRONG


def test_stream_all_failed_and_mistakes():
    with pytest.raises(AllModelsFailedError):
        list(Attempts(PLAN).stream(lambda m: gen(m, fail_before=ConnectionError(f"{m} down"))))
    opened = []

    def mistake(model):
        opened.append(model)
        return gen(model, fail_before=TypeError("bug"))

    with pytest.raises(TypeError, match="bug"):
        list(Attempts(PLAN).stream(mistake))
    assert opened == ["big"]


def test_eager_stream_opens_the_first_model_at_once():
    opened = []

    def open_stream(model):
        opened.append(model)
        if model == "big":
            raise ConnectionError("down")
        return iter(["x"])

    stream = Attempts(PLAN).stream(open_stream, eager=True)
    assert opened == ["big"]
    assert list(stream) == ["x"] and opened == ["big", "small"]


def test_stream_timeout_before_the_first_chunk_falls_back_and_later_raises():
    def slow(model):
        time.sleep(2)
        yield "late"

    stream = Attempts(PLAN, timeout=0.1).stream(lambda m: slow(m) if m == "big" else iter(["quick"]))
    assert list(stream) == ["quick"] and isinstance(stream.outcome.failures[0].error, ModelTimeoutError)

    def stalls(model):
        yield "first"
        time.sleep(2)
        yield "late"

    stream = Attempts(PLAN, timeout=0.1).stream(stalls)
    assert next(stream) == "first"
    with pytest.raises(ModelTimeoutError, match="gave no next chunk"):
        next(stream)
    with pytest.raises(StopIteration):  # a stalled stream is over
        next(stream)


def test_timed_stream_keeps_one_context_across_chunks():
    var = contextvars.ContextVar("step", default=0)

    def counting(model):
        for _ in range(3):
            var.set(var.get() + 1)
            yield var.get()

    assert list(Attempts(PLAN, timeout=5).stream(counting)) == [1, 2, 3]


async def agen(model, fail_before=None, fail_after=None, delay=0.0):
    if delay:
        await asyncio.sleep(delay)
    if fail_before:
        raise fail_before
    for i in range(2):
        yield f"{model}-{i}"
    if fail_after:
        raise fail_after


async def _collect(stream):
    return [chunk async for chunk in stream]


def test_astream_falls_back_before_the_first_chunk_only():
    stream = Attempts(PLAN).astream(lambda m: agen(m, fail_before=ConnectionError("down") if m == "big" else None))
    assert asyncio.run(_collect(stream)) == ["small-0", "small-1"]
    assert stream.outcome.role is Role.WEAK

    stream = Attempts(PLAN).astream(lambda m: agen(m, fail_after=ConnectionError("cut off")))
    with pytest.raises(ConnectionError, match="cut off"):
        asyncio.run(_collect(stream))
    assert stream.outcome.role is Role.STRONG


def test_astream_accepts_an_awaitable_of_a_stream():
    async def open_stream(model):  # LlamaIndex's astream_chat: a coroutine returning the generator
        if model == "big":
            raise RateLimitError("429")
        return agen(model)

    stream = Attempts(PLAN).astream(open_stream)
    assert asyncio.run(_collect(stream)) == ["small-0", "small-1"]
    assert [f.model for f in stream.outcome.failures] == ["big"]


def test_astream_timeout_and_all_failed():
    stream = Attempts(PLAN, timeout=0.05).astream(lambda m: agen(m, delay=2 if m == "big" else 0))
    assert asyncio.run(_collect(stream)) == ["small-0", "small-1"]
    assert isinstance(stream.outcome.failures[0].error, ModelTimeoutError)

    with pytest.raises(AllModelsFailedError) as info:
        asyncio.run(_collect(Attempts(PLAN).astream(lambda m: agen(m, fail_before=ConnectionError(m)))))
    assert [str(e) for e in info.value.exceptions] == ["big", "small"]


# The decision record says what failed -------------------------------------------------------
def test_decision_record_lists_the_failures_before_the_answer():
    from shared_core.engine import decision_record, outcome_record
    from shared_core.routers import Decision

    decision = Decision(Role.STRONG, 0.8, 0.5, "random")
    call, _ = failing({"big": ConnectionError("big is down")})
    record = outcome_record(decision, Attempts(PLAN).run(call))
    assert record == {
        "role": "weak", "model": "small", "score": 0.8, "threshold": 0.5, "router": "random", "reason": "score",
        "fallback": {"from": "strong", "model": "big", "error": "ConnectionError: big is down"},
        "failures": [{"role": "strong", "model": "big", "error": "ConnectionError: big is down"}],
        "id": decision.id,
    }
    assert decision_record(decision, Role.STRONG, "big")["failures"] == []
    assert decision_record(decision, Role.STRONG, "big")["fallback"] is None


def test_on_failure_hears_each_failure_before_the_next_attempt():
    heard = []
    call, calls = failing({"big": ConnectionError("big is down")})

    def hear(failure):
        heard.append((failure.model, len(calls)))

    Attempts(PLAN, on_failure=hear).run(call)
    assert heard == [("big", 1)]  # after the first call, before the second


def test_cancelling_a_timed_call_cancels_the_model_call():
    cancelled = []

    async def call(model):
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append(model)
            raise

    async def main():
        outer = asyncio.ensure_future(Attempts(PLAN, timeout=10).arun(call))
        await asyncio.sleep(0.05)
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer
        await asyncio.sleep(0.01)
        assert cancelled == ["big"]  # before asyncio.run would cancel leftovers itself

    asyncio.run(main())


def test_real_httpx_and_openai_errors_are_recognised():
    httpx = pytest.importorskip("httpx")
    openai = pytest.importorskip("openai")
    request = httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions")

    def response(status):
        return httpx.Response(status, request=request)

    falls_back = [
        httpx.ConnectError("refused", request=request), httpx.ReadTimeout("slow", request=request),
        httpx.HTTPStatusError("busy", request=request, response=response(503)),
        openai.APIConnectionError(request=request), openai.APITimeoutError(request=request),
        openai.RateLimitError("slow down", response=response(429), body=None),
        openai.InternalServerError("oops", response=response(500), body=None),
    ]
    raised = [
        openai.BadRequestError("bad", response=response(400), body=None),
        openai.AuthenticationError("key", response=response(401), body=None),
        httpx.HTTPStatusError("missing", request=request, response=response(404)),
    ]
    assert [type(e).__name__ for e in falls_back if not is_provider_error(e)] == []
    assert [type(e).__name__ for e in raised if is_provider_error(e)] == []


def test_open_first_opens_the_first_async_stream_at_once():
    opened = []

    async def open_stream(model):
        opened.append(model)
        if model == "big":
            raise ConnectionError("down")
        return agen(model)

    async def main():
        stream = await Attempts(PLAN).astream(open_stream).open_first()
        assert opened == ["big"]
        return await _collect(stream)

    assert asyncio.run(main()) == ["small-0", "small-1"] and opened == ["big", "small"]
