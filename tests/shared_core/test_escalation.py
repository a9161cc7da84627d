"""Escalation checks (shared_core.escalation) and the attempt loop's check / escalate_to."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

from shared_core.attempts import Attempts, rejected_answers
from shared_core.errors import ConfigError
from shared_core.escalation import (
    AnswerChecks,
    AnswerView,
    CallContext,
    Refusal,
    ToolCall,
    schema_problems,
)
from shared_core.routers import Role
from shared_support import in_threads

ADD = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "number"}},
       "required": ["a", "b"], "additionalProperties": False}


class Answer(BaseModel):
    answer: int


# The checks --------------------------------------------------------------------------
@pytest.mark.parametrize("view, reason", [
    (AnswerView(text=""), "empty: the answer has no text and no tool call"),
    (AnswerView(text="I'm sorry, but I can't help with that."), "refusal: the answer is a refusal"),
    (AnswerView(text="I cannot assist with this request."), "refusal: the answer is a refusal"),
    (AnswerView(text="The list goes on and", finish_reason="length"), "length: the answer was cut off"),
    (AnswerView(text="", finish_reason="MAX_TOKENS"), "empty: the answer has no text"),
])
def test_all_checks_reject_what_they_should(view, reason):
    assert AnswerChecks.from_spec("all").reason(view).startswith(reason)


@pytest.mark.parametrize("view", [
    AnswerView(text="4", finish_reason="stop"),
    AnswerView(text="", tool_calls=(ToolCall("add", {"a": 1, "b": 2.5}),)),
    AnswerView(text=None, raw={"k": 1}),  # not text: only a predicate judges it
    AnswerView(text="Sorry for the delay: the answer is 4."),  # an apology is not a refusal
])
def test_all_checks_accept_good_answers(view):
    context = CallContext(tools={"add": ADD})
    assert AnswerChecks.from_spec("all").reason(view, context) is None


@pytest.mark.parametrize("call, expected", [
    (ToolCall("mul", {"a": 1, "b": 2}), "tool call names 'mul', which is not a bound tool (add)"),
    (ToolCall("add", {"a": 1}), "tool call 'add': args misses required key(s) ['b']"),
    (ToolCall("add", {"a": True, "b": 1}), "tool call 'add': args.a must be integer, got bool True"),
    (ToolCall("add", {"a": 1, "b": 2, "c": 3}), "tool call 'add': args has unknown key(s) ['c']"),
    (ToolCall("add", '{"a": 1,'), "tool call 'add': args must be object, got str"),
])
def test_tool_call_check_names_what_does_not_match(call, expected):
    reason = AnswerChecks.from_spec("tool_calls").reason(AnswerView(text="", tool_calls=(call,)),
                                                        CallContext(tools={"add": ADD}))
    assert reason.startswith("tool_calls: " + expected)


def test_a_required_tool_call_that_is_missing_escalates():
    checks = AnswerChecks.from_spec(["tool_calls"])
    assert checks.reason(AnswerView(text="I think 3"), CallContext(tools={"add": ADD})) is None
    assert "a tool call was required" in checks.reason(
        AnswerView(text="I think 3"), CallContext(tools={"add": ADD}, tool_required=True))


def test_structured_check_parses_text_against_a_schema_or_reads_the_parse_error():
    checks = AnswerChecks.from_spec("structured")
    pyd = CallContext(output_schema=Answer)
    assert checks.reason(AnswerView(text='```json\n{"answer": 4}\n```'), pyd) is None
    assert "does not fit Answer" in checks.reason(AnswerView(text='{"answer": "four"}'), pyd)
    assert "is not JSON" in checks.reason(AnswerView(text="four"), pyd)
    schema = CallContext(output_schema={"type": "object", "required": ["answer"]})
    assert "misses required key(s) ['answer']" in checks.reason(AnswerView(text="{}"), schema)
    error = ValueError("Could not extract json string from output")
    assert checks.reason(AnswerView(text=None, parse_error=error)).startswith(
        "structured: structured output did not parse: ValueError: Could not extract")


def test_predicates_reject_with_true_or_a_reason_and_bad_returns_are_errors():
    checks = AnswerChecks.from_spec([lambda v: "TODO" in (v.text or ""), lambda v: v.text == "x" and "it is x"])
    assert checks.reason(AnswerView(text="TODO: answer")) == "<lambda>: the predicate rejected the answer"
    assert checks.reason(AnswerView(text="x")) == "<lambda>: it is x"
    assert checks.reason(AnswerView(text="fine")) is None
    with pytest.raises(ConfigError, match="must return a bool, None or a reason string, got 3"):
        AnswerChecks.from_spec(lambda v: 3).reason(AnswerView(text="a"))


@pytest.mark.parametrize("spec, match", [
    ("emtpy", "escalate_on\\[0\\] is 'emtpy'; known checks: empty, refusal, length, tool_calls, structured"),
    ([3], "escalate_on\\[0\\] must be a check name"),
    ([], "needs at least one check"),
    (42, "escalate_on must be None, 'all', a check name"),
])
def test_bad_check_specs_fail_with_what_is_allowed(spec, match):
    with pytest.raises(ConfigError, match=match):
        AnswerChecks.from_spec(spec)


def test_custom_refusal_patterns_are_validated_and_used():
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        Refusal(["("])
    with pytest.raises(ConfigError, match="one string"):
        Refusal("nope")
    assert AnswerChecks.from_spec([Refusal([r"^nope\b"])]).reason(AnswerView(text="Nope, not today"))


def test_schema_problems_any_of_and_items():
    schema = {"type": "array", "items": {"anyOf": [{"type": "integer"}, {"type": "null"}]}}
    assert schema_problems([1, None], schema) == []
    assert schema_problems([1, "x"], schema) == ["value[1] fits none of the anyOf options, got str 'x'"]


# The loop -----------------------------------------------------------------------------
def _loop(check, *, fallback=False, targets=True):
    weak, strong = "small", "big"
    plan = [(Role.WEAK, weak), (Role.STRONG, strong)] if fallback else [(Role.WEAK, weak)]
    return Attempts(plan, check=check, escalate_to=[(Role.STRONG, strong)] if targets else [])


def _bad_small(role, value):
    return "small said it" if value.startswith("small") else None


def test_a_rejected_answer_escalates_and_is_kept_on_the_outcome():
    outcome = _loop(_bad_small).run(lambda m: f"{m} answer")
    assert (outcome.value, outcome.role, outcome.model_name) == ("big answer", Role.STRONG, "big")
    assert [e.to_dict() for e in outcome.escalations] == [{"role": "weak", "model": "small", "reason": "small said it"}]
    assert outcome.escalations[0].value == "small answer" and outcome.failures == ()


def test_an_accepted_answer_calls_no_other_model():
    called = []
    outcome = _loop(lambda r, v: None).run(lambda m: called.append(m) or m)
    assert called == ["small"] and outcome.escalations == ()


def test_without_targets_the_check_is_not_run():
    seen = []
    outcome = _loop(lambda r, v: seen.append(v) or "bad", targets=False).run(lambda m: m)
    assert outcome.value == "small" and seen == [] and outcome.escalations == ()


def test_the_escalated_answer_is_not_checked_again():
    outcome = _loop(lambda r, v: "always bad").run(lambda m: m)
    assert outcome.value == "big" and len(outcome.escalations) == 1


def test_escalation_is_not_a_fallback_a_weak_error_without_fallback_raises():
    def call(m):
        if m == "small":
            raise ConnectionError("small is down")
        return m

    with pytest.raises(ConnectionError, match="small is down"):
        _loop(_bad_small).run(call)
    assert _loop(_bad_small, fallback=True).run(call).value == "big"


def test_an_error_of_the_escalated_model_is_raised():
    def call(m):
        if m == "big":
            raise ConnectionError("big is down")
        return f"{m} answer"

    with pytest.raises(ConnectionError, match="big is down") as raised:
        _loop(_bad_small).run(call)
    # the rejected answer was made (and paid for): it goes with the error
    assert [(e.role, e.model, e.reason, e.value) for e in rejected_answers(raised.value)] == [
        (Role.WEAK, "small", "small said it", "small answer")]


def test_an_error_without_a_rejection_carries_no_rejected_answers():
    def call(m):
        raise ConnectionError(f"{m} is down")

    with pytest.raises(ConnectionError) as raised:
        _loop(_bad_small).run(call)
    assert rejected_answers(raised.value) == ()
    assert rejected_answers(ValueError("unrelated")) == ()


def test_an_escalated_stream_that_fails_carries_the_rejected_chunks():
    def stream(m):
        if m == "big":
            raise ConnectionError("big is down")
        yield from ("small ", "words")

    with pytest.raises(ConnectionError) as raised:
        list(_loop(_stream_check).stream(stream))
    assert [(e.model, e.value) for e in rejected_answers(raised.value)] == [("small", ["small ", "words"])]


def test_with_fallback_the_plan_strong_is_the_escalation_target_tried_once():
    calls = []
    outcome = _loop(_bad_small, fallback=True).run(lambda m: calls.append(m) or f"{m} answer")
    assert calls == ["small", "big"] and outcome.value == "big answer"


def test_a_check_returning_a_non_string_is_an_error():
    with pytest.raises(ConfigError, match="non-empty reason string"):
        _loop(lambda r, v: 1).run(lambda m: m)


def test_arun_escalates():
    async def call(m):
        await asyncio.sleep(0)
        return f"{m} answer"

    outcome = asyncio.run(_loop(_bad_small).arun(call))
    assert outcome.value == "big answer" and outcome.escalations[0].reason == "small said it"


def _stream_check(role, chunks):
    return "small streamed" if "".join(chunks).startswith("small") else None


def test_a_checked_stream_is_buffered_then_released_or_escalated():
    opened = []

    def open_stream(m):
        opened.append(m)
        return iter([f"{m} ", "answer"])

    chunks = _loop(_stream_check).stream(open_stream)
    assert list(chunks) == ["big ", "answer"] and opened == ["small", "big"]
    assert chunks.outcome.escalations[0].value == ["small ", "answer"]
    passing = _loop(lambda r, c: None).stream(open_stream)
    assert list(passing) == ["small ", "answer"] and passing.outcome.escalations == ()


def test_an_empty_stream_escalates_under_the_empty_check():
    checks = AnswerChecks.from_spec("empty")
    loop = _loop(lambda r, c: checks.reason(AnswerView(text="".join(c))))
    chunks = loop.stream(lambda m: iter([]) if m == "small" else iter(["big"]))
    assert list(chunks) == ["big"] and "empty" in chunks.outcome.escalations[0].reason


def test_an_error_while_buffering_falls_back_as_nothing_was_released():
    def broken():
        yield "small partial"
        raise ConnectionError("small dropped")

    loop = _loop(lambda r, c: None, fallback=True)
    chunks = loop.stream(lambda m: broken() if m == "small" else iter(["big"]))
    assert list(chunks) == ["big"] and chunks.outcome.failures[0].model == "small"


def test_astream_escalates():
    async def gen(m):
        for piece in (f"{m} ", "answer"):
            yield piece

    async def collect():
        stream = _loop(_stream_check).astream(gen)
        return [c async for c in stream], stream.outcome

    chunks, outcome = asyncio.run(collect())
    assert chunks == ["big ", "answer"] and outcome.escalations[0].role is Role.WEAK


def test_one_loop_object_escalates_independently_in_many_threads():
    loop = _loop(lambda r, v: "odd" if int(v.split()[1]) % 2 else None)
    results = {}

    def work(i):
        results[i] = loop.run(lambda m: f"{m} {i}")

    assert not in_threads(work, 40)
    assert len(results) == 40
    for i, outcome in results.items():
        assert outcome.model_name == ("big" if i % 2 else "small")
        assert len(outcome.escalations) == (1 if i % 2 else 0)
