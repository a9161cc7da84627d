"""The LlamaIndex RouteLLM: escalation, ladders and conversation options."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.callbacks import CallbackManager, TokenCountingHandler
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from pydantic import BaseModel

from llamaindex_routellm import DECISION_KEY, RouteLLM
from shared_core.engine import resolve_router
from shared_core.errors import ConfigError

from li_support import (
    FixedMockLLM,
    KeywordRouter,
    NamedMockFunctionCallingLLM,
    NamedMockLLM,
    StreamsWithUsage,
    WithUsage,
    tool_answer_generator,
)
from shared_support import TableRouter, in_threads


def routed(weak, strong=None, **kwargs):
    return RouteLLM(strong=strong or NamedMockLLM(name="strong-mock"), weak=weak, router=KeywordRouter(),
                    threshold=0.5, **kwargs)


def record(response):
    return response.additional_kwargs[DECISION_KEY]


USER = [ChatMessage(role="user", content="say hi")]


@pytest.mark.parametrize("method", ["complete", "chat", "acomplete", "achat"])
def test_empty_weak_answers_escalate_on_every_entry_point(method):
    llm = routed(FixedMockLLM(name="weak-mock", answer=""), escalate_on=["empty"])
    arg = USER if "chat" in method else "say hi"
    result = getattr(llm, method)(arg)
    response = asyncio.run(result) if method.startswith("a") else result
    rec = record(response)
    assert (rec["role"], rec["model"]) == ("strong", "strong-mock")
    assert rec["escalated"] == {"from": "weak", "model": "weak-mock",
                                "reason": "empty: the answer has no text and no tool call"}
    assert "say hi" in (response.text if hasattr(response, "text") else response.message.content)


@pytest.mark.parametrize("method", ["complete", "chat", "acomplete", "achat"])
def test_an_escalation_under_a_budget_is_admitted_by_it_like_any_strong_call(method):
    # Before: an escalation went past a spent budget, so the strong spend could exceed the cap.
    from shared_core.controller import BudgetController

    from li_support import FailingMockLLM

    def call(llm, text):
        result = getattr(llm, method)([ChatMessage(role="user", content=text)] if "chat" in method else text)
        return asyncio.run(result) if method.startswith("a") else result

    budget = BudgetController(0.5, reserve=0.3, clock=lambda: 0.0)  # room for one reservation
    llm = routed(FixedMockLLM(name="weak-mock", answer=""), escalate_on=["empty"], controller=budget)
    first = record(call(llm, "say hi"))
    assert first["model"] == "strong-mock" and "escalation_refused" not in first
    assert budget.remaining == pytest.approx(0.2, abs=1e-9)  # held: no ledger charges it here
    second = record(call(llm, "say hi again"))
    assert second["model"] == "weak-mock"  # the weak answer stands
    assert second["escalation_refused"] == {"reason": "empty: the answer has no text and no tool call",
                                            "because": "budget_exhausted"}
    down = routed(FixedMockLLM(name="weak-mock", answer=""), strong=FailingMockLLM(name="strong-down"),
                  escalate_on=["empty"], controller=BudgetController(0.5, reserve=0.3, clock=lambda: 0.0))
    with pytest.raises(ConnectionError, match="strong-down is down"):
        call(down, "say hi")
    assert down.controller.remaining == 0.5  # the escalation's reservation is freed: a failed call is not charged


def test_good_weak_answers_stay_weak_and_escalation_off_changes_nothing():
    good = routed(FixedMockLLM(name="weak-mock", answer="hello"), escalate_on="all").complete("say hi")
    assert record(good)["model"] == "weak-mock" and "escalations" not in record(good)
    off = routed(FixedMockLLM(name="weak-mock", answer="")).complete("say hi")
    assert record(off)["model"] == "weak-mock" and off.text == ""


def test_token_counts_see_each_model_once():
    def count(escalate_on):
        counter = TokenCountingHandler(tokenizer=lambda text: text.split())
        llm = routed(FixedMockLLM(name="weak-mock", answer="I cannot help with that."), escalate_on=escalate_on,
                     callback_manager=CallbackManager([counter]))
        llm.complete("say hi")
        return counter

    plain, escalated = count(None), count(["refusal"])
    assert len(plain.llm_token_counts) == 1 and len(escalated.llm_token_counts) == 2
    weak_event, strong_event = escalated.llm_token_counts
    assert weak_event.completion == "I cannot help with that." and strong_event.completion == "say hi"
    assert escalated.total_llm_token_count == plain.total_llm_token_count + strong_event.total_token_count


def test_streams_are_buffered_while_checked_and_release_the_accepted_answer():
    llm = routed(FixedMockLLM(name="weak-mock", answer="I'm sorry, but I can't do that."), escalate_on=["refusal"])
    chunks = list(llm.stream_complete("say hi"))
    assert "".join(c.delta for c in chunks) == "say hi"
    assert record(chunks[0])["escalations"][0]["model"] == "weak-mock"
    empty = routed(FixedMockLLM(name="weak-mock", answer=""), escalate_on=["empty"])
    assert record(list(empty.stream_chat(USER))[-1])["model"] == "strong-mock"

    async def astream():
        gen = await llm.astream_complete("say hi")
        return [c async for c in gen]

    assert record(asyncio.run(astream())[0])["model"] == "strong-mock"


class Answer(BaseModel):
    answer: int


def test_structured_output_that_does_not_parse_escalates():
    prompt = PromptTemplate("What is {q}? Reply as JSON.")
    strong = FixedMockLLM(name="strong-mock", answer='{"answer": 4}')
    llm = routed(FixedMockLLM(name="weak-mock", answer="four"), strong=strong, escalate_on=["structured"])
    assert llm.structured_predict(Answer, prompt, q="2 + 2") == Answer(answer=4)
    assert asyncio.run(llm.astructured_predict(Answer, prompt, q="2 + 2")) == Answer(answer=4)
    off = routed(FixedMockLLM(name="weak-mock", answer="four"), strong=strong)
    with pytest.raises(ValueError):
        off.structured_predict(Answer, prompt, q="2 + 2")
    both_bad = routed(FixedMockLLM(name="weak-mock", answer="four"), strong=FixedMockLLM(name="s", answer="five"),
                      escalate_on=["structured"])
    with pytest.raises(ValueError):  # the last model's own parse error
        both_bad.structured_predict(Answer, prompt, q="2 + 2")


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def test_a_missing_required_tool_call_escalates():
    weak = NamedMockFunctionCallingLLM(name="weak-fc", response_generator=lambda m, **kw: ChatMessage(
        role="assistant", content="No tool needed."))
    strong = NamedMockFunctionCallingLLM(name="strong-fc", response_generator=tool_answer_generator)
    llm = routed(weak, strong=strong, escalate_on=["tool_calls"])
    tool = FunctionTool.from_defaults(fn=multiply)
    response = llm.chat_with_tools([tool], user_msg="multiply 6 and 7", tool_required=True)
    assert record(response)["model"] == "strong-fc"
    assert "a tool call was required" in record(response)["escalated"]["reason"]
    assert llm.get_tool_calls_from_response(response)[0].tool_kwargs == {"a": 6, "b": 7}
    not_required = llm.chat_with_tools([tool], user_msg="multiply 6 and 7")
    assert record(not_required)["model"] == "weak-fc"


def test_concurrent_calls_escalate_independently():
    llm = routed(NamedMockLLM(name="weak-mock"), escalate_on=[lambda v: "odd" in v.text])
    results: dict[int, Any] = {}

    def work(i):
        results[i] = llm.complete(f"say {'odd' if i % 2 else 'even'} {i}")

    assert not in_threads(work, 24)
    for i, response in results.items():
        assert record(response)["model"] == ("strong-mock" if i % 2 else "weak-mock") and str(i) in response.text


# Ladders --------------------------------------------------------------------------------
def ladder_llm(**kwargs):
    models = [NamedMockLLM(name=n, window=w) for n, w in (("tiny-mock", 2000), ("mid-mock", 4000), ("big-mock", 8000))]
    return RouteLLM(ladder=[(models[0], "tiny", 0.8), (models[1], "mid", 0.7), (models[2], "big", None)],
                    router=TableRouter(), **kwargs)


def test_ladder_routes_to_the_cheapest_good_enough_model():
    llm = ladder_llm()
    assert [record(llm.complete(q))["model"] for q in ("say hi", "explain tides", "prove it")] == [
        "tiny-mock", "mid-mock", "big-mock"]
    assert llm.metadata.context_window == 2000
    assert llm.metadata.model_name == "routellm[table](tiny-mock|mid-mock|big-mock)"
    assert record(asyncio.run(llm.achat([ChatMessage(role="user", content="explain x")])))["rung"] == 1


def test_a_ladders_serialisation_carries_no_rungs_key_or_endpoint():
    from llama_index.llms.openai_like import OpenAILike

    rungs = [OpenAILike(model=f"{n}-model", api_base=f"https://{n}.example/v1", api_key=f"sk-{n}-secret",
                        is_chat_model=True) for n in ("tiny", "mid", "big")]
    llm = RouteLLM(ladder=[(rungs[0], "tiny", 0.8), (rungs[1], "mid", 0.7), (rungs[2], "big", None)],
                   router=TableRouter())
    text = llm.to_json()
    for secret in ("sk-tiny-secret", "sk-mid-secret", "https://big.example/v1", "big-model"):
        assert secret not in text
    # Each rung is written as strong and weak are: its LLM fields and class, then its name and threshold.
    written = {"system_prompt": None, "pydantic_program_mode": "default", "class_name": "OpenAILike"}
    assert llm.to_dict()["strong"] == llm.to_dict()["weak"] == written
    assert json.loads(text)["ladder"] == [[written, "tiny", 0.8], [written, "mid", 0.7], [written, "big", None]]


def test_to_json_describes_object_settings():
    from shared_core.controller import BudgetController, ShareController

    def long_enough(view):
        return len(view.text) > 3

    budget = BudgetController(2.0, reserve=0.1, inner=ShareController(0.3), clock=lambda: 0.0)
    llm = RouteLLM(strong=NamedMockLLM(name="s"), weak=NamedMockLLM(name="w"), router=KeywordRouter(),
                   threshold=0.5, controller=budget, fallback=True, fallback_on=(ConnectionError, TimeoutError),
                   escalate_on=["empty", long_enough])
    written = json.loads(llm.to_json())
    assert written["router"] == "keyword" and written["controller"] == json.loads(json.dumps(budget.to_state()))
    assert written["fallback_on"] == ["builtins.ConnectionError", "builtins.TimeoutError"]
    assert written["escalate_on"] == ["empty", "test_to_json_describes_object_settings.<locals>.long_enough"]
    assert isinstance(llm.router, KeywordRouter) and llm.controller is budget  # only what is written changes


def test_a_shipped_router_object_is_written_by_the_name_that_loads_it_back():
    # Before: written as its kind, "adaptive_ensemble", which from_dict loads as another shipped router.
    router = resolve_router("adaptive_ensemble_mm")
    written = RouteLLM(strong=NamedMockLLM(name="s"), weak=NamedMockLLM(name="w"), router=router, threshold=0.5).to_dict()
    assert written["router"] == "adaptive_ensemble_mm"
    back = RouteLLM.from_dict(written, strong=NamedMockLLM(name="s"), weak=NamedMockLLM(name="w"))
    assert back.engine.router is router and back.engine.threshold == 0.5


def test_a_ladder_set_later_is_checked_as_at_construction():
    llm = ladder_llm()
    with pytest.raises(ConfigError, match=r"ladder\[1\] model must be a LlamaIndex LLM, got str: 'mid'"):
        llm.ladder = [(NamedMockLLM(name="a"), "tiny", 0.8), ("mid", "mid", 0.7), (NamedMockLLM(name="c"), "big", None)]
    assert [rung[0].metadata.model_name for rung in llm.ladder] == ["tiny-mock", "mid-mock", "big-mock"]

def test_ladder_escalates_one_rung_up():
    llm = ladder_llm(escalate_on=[lambda v: "climb" in v.text])  # every rung echoes it: all but the top rejected
    rec = record(llm.complete("climb"))
    assert [e["model"] for e in rec["escalations"]] == ["tiny-mock", "mid-mock"]
    assert (rec["model"], rec["answered_rung"]) == ("big-mock", 2)


# Conversations --------------------------------------------------------------------------
def test_route_on_last_turn():
    convo = [ChatMessage(role="user", content="Please prove it."), ChatMessage(role="assistant", content="Sure."),
             ChatMessage(role="user", content="And again?")]
    assert routed(NamedMockLLM(name="weak-mock")).route(convo).role.value == "weak"
    assert routed(NamedMockLLM(name="weak-mock"), route_on="last_turn").route(convo).role.value == "strong"


def test_thread_pins_by_keyword():
    llm = routed(NamedMockLLM(name="weak-mock"), pin_threads=8)
    assert record(llm.chat([ChatMessage(role="user", content="prove it")], thread_id="a"))["model"] == "strong-mock"
    follow = record(llm.complete("thanks", thread_id="a"))
    assert (follow["model"], follow["reason"]) == ("strong-mock", "pinned")
    assert record(asyncio.run(llm.acomplete("hi", thread_id="a")))["model"] == "strong-mock"
    assert record(llm.complete("hi"))["model"] == "weak-mock"
    assert record(list(llm.stream_complete("hi", thread_id="a"))[0])["model"] == "strong-mock"


def test_thread_id_is_checked_only_when_pinning_is_on():
    # Before: a thread_id that is not a string, an int or a UUID (here a tuple) failed the call
    # although no pinning was asked for (the LangChain wrappers check it only with pin_threads too).
    thread = ("session", 7)
    assert record(routed(NamedMockLLM(name="weak-mock")).complete("hi", thread_id=thread))["model"] == "weak-mock"
    with pytest.raises(ConfigError, match="thread_id must be a non-empty string, an int or a UUID, got tuple"):
        routed(NamedMockLLM(name="weak-mock"), pin_threads=8).complete("hi", thread_id=thread)


def test_escalation_moves_a_pin():
    llm = routed(NamedMockLLM(name="weak-mock"), pin_threads=8, escalate_on=[lambda v: "bad" in v.text])
    assert record(llm.complete("say bad", thread_id=1))["model"] == "strong-mock"
    assert record(llm.complete("say hi", thread_id=1))["reason"] == "pinned"


def test_ledger_prices_the_rejected_weak_answer_once():
    """The rejected answer's usage rides on the record, so the ledger pays for it once."""
    from llamaindex_routellm import LedgerHandler

    llm = routed(WithUsage(name="weak-mock", answer=""), WithUsage(name="strong-mock", answer="hi"),
                 escalate_on=["empty"])
    with LedgerHandler(prices={"strong-mock": (10.0, 30.0), "weak-mock": (1.0, 2.0)},
                       strong_model="strong-mock") as ledger:
        response = llm.complete("say hi")
    rec = record(response)
    assert rec["escalations"][0]["usage"] == {"input_tokens": 5, "output_tokens": 2}
    [call] = ledger.ledger.calls
    assert call.rejected == ("weak-mock",) and call.rejected_cost == pytest.approx((5 * 1.0 + 2 * 2.0) / 1e6)
    assert call.cost == pytest.approx((5 * 10.0 + 2 * 30.0 + 5 * 1.0 + 2 * 2.0) / 1e6)
    assert call.strong_cost == pytest.approx((5 * 10.0 + 2 * 30.0) / 1e6)


@pytest.mark.parametrize("method", ["complete", "acomplete", "chat", "achat", "stream_complete", "stream_chat",
                                    "astream_complete", "astream_chat"])
def test_when_the_escalation_fails_the_ledger_still_prices_the_rejected_answer(method):
    """The strong model is down: the call raises its error, and the rejected weak answer,
    made and paid for, is priced as an unanswered cost (no call: nothing answered)."""
    from li_support import FailingMockLLM
    from llamaindex_routellm import LedgerHandler

    llm = routed(StreamsWithUsage(name="weak-mock", answer=""), FailingMockLLM(name="strong-down"),
                 escalate_on=["empty"])
    arg = USER if "chat" in method else "say hi"

    async def consume(result):
        result = await result
        return [c async for c in result] if "stream" in method else result

    with LedgerHandler(prices={"strong-down": (10.0, 30.0), "weak-mock": (1.0, 2.0)},
                       strong_model="strong-down") as ledger:
        with pytest.raises(ConnectionError, match="strong-down is down"):
            result = getattr(llm, method)(arg)
            if method.startswith("a"):
                asyncio.run(consume(result))
            elif "stream" in method:
                list(result)
    assert ledger.ledger.calls == []
    [lost] = ledger.ledger.unanswered
    assert lost.rejected == ("weak-mock",) and lost.reason.startswith("empty")
    assert ledger.totals()["cost"] == pytest.approx((5 * 1.0 + 2 * 2.0) / 1e6, abs=1e-15)
    assert ledger.totals()["unanswered_answers"] == 1
