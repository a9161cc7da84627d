"""RouteLLMChat / RouteLLMRunnable: escalation, ladders and conversation options."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.callbacks import get_usage_metadata_callback
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.runnables import RunnableLambda
from pydantic import BaseModel

from langchain_routellm import RouteLLMChat, RouteLLMRunnable
from langchain_routellm.testing import FakeToolChatModel
from lc_support import KeywordRouter, merge_chunks
from shared_core.errors import ConfigError
from shared_support import TableRouter, in_threads


class Scripted(FakeToolChatModel):
    """A fake whose answer is fixed: ``text``, ``tool_calls``, ``finish_reason``."""

    text: str = ""
    calls: list = []
    finish_reason: str = "stop"

    def _answer(self, messages, stop, kwargs) -> AIMessage:
        return AIMessage(
            content=self.text, tool_calls=list(self.calls),
            usage_metadata=UsageMetadata(input_tokens=5, output_tokens=2, total_tokens=7),
            response_metadata={"model_name": self.model_name, "finish_reason": self.finish_reason},
        )


def lazy(model_name="weak-fake", **kw):
    return Scripted(model_name=model_name, **kw)


def chat(weak, strong=None, **kwargs):
    return RouteLLMChat(strong=strong or FakeToolChatModel(model_name="strong-fake"), weak=weak,
                        router=KeywordRouter(), threshold=0.5, **kwargs)


# Escalation -----------------------------------------------------------------------------
@pytest.mark.parametrize("weak, spec, reason", [
    (lazy(text=""), ["empty"], "empty: the answer has no text"),
    (lazy(text="I'm sorry, but I can't help with that."), ["refusal"], "refusal: the answer is a refusal"),
    (lazy(text="Once upon a", finish_reason="length"), ["length"], "length: the answer was cut off"),
    (lazy(text="TODO"), [lambda v: v.text == "TODO"], "<lambda>: the predicate rejected the answer"),
])
def test_invoke_escalates_a_bad_weak_answer_and_records_it(weak, spec, reason):
    message = chat(weak, escalate_on=spec).invoke("say hi")
    record = message.response_metadata["routellm"]
    assert message.content == "[strong-fake] say hi"
    assert (record["role"], record["model"]) == ("strong", "strong-fake")
    assert record["escalated"]["from"] == "weak" and record["escalated"]["reason"].startswith(reason)
    assert record["escalations"][0]["usage"] == {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7}


def test_good_weak_answers_and_strong_decisions_do_not_escalate():
    llm = chat(lazy(text="fine"), escalate_on="all")
    weak_answer = llm.invoke("say hi")
    assert weak_answer.content == "fine" and "escalations" not in weak_answer.response_metadata["routellm"]
    strong = chat(lazy(text=""), escalate_on="all").invoke("prove it")
    assert strong.response_metadata["routellm"]["role"] == "strong"


def test_escalation_off_keeps_the_weak_answer_and_the_record_as_before():
    message = chat(lazy(text="")).invoke("say hi")
    assert message.content == "" and set(message.response_metadata["routellm"]) == {
        "role", "score", "threshold", "router", "reason", "model", "fallback", "failures", "id"}


@pytest.mark.parametrize("entry", ["invoke", "ainvoke", "stream", "astream"])
def test_an_escalation_under_a_budget_is_admitted_by_it_like_any_strong_call(entry):
    # Before: the wrappers escalated past a spent budget, so the strong spend could exceed the cap.
    from shared_core.controller import BudgetController

    def call(llm, prompt):
        if entry == "invoke":
            return llm.invoke(prompt)
        if entry == "ainvoke":
            return asyncio.run(llm.ainvoke(prompt))

        async def collect():
            return [c async for c in llm.astream(prompt)]

        return merge_chunks(list(llm.stream(prompt)) if entry == "stream" else asyncio.run(collect()))

    budget = BudgetController(0.5, reserve=0.3, clock=lambda: 0.0)  # room for one reservation
    llm = chat(lazy(text=""), escalate_on=["empty"], controller=budget)
    first = call(llm, "say hi").response_metadata["routellm"]
    reason = "empty: the answer has no text and no tool call"
    assert (first["model"], first["escalated"]["reason"]) == ("strong-fake", reason)
    assert "escalation_refused" not in first and budget.remaining == pytest.approx(0.2, abs=1e-9)  # held, uncharged
    second = call(llm, "say hi again")
    record = second.response_metadata["routellm"]
    assert (record["model"], second.text) == ("weak-fake", "")  # the weak answer stands
    assert record["escalation_refused"] == {"reason": reason, "because": "budget_exhausted"}
    assert budget.remaining == pytest.approx(0.2, abs=1e-9)
    down = chat(lazy(text=""), strong=FakeToolChatModel(model_name="strong-down", fail=True), escalate_on=["empty"],
                controller=BudgetController(0.5, reserve=0.3, clock=lambda: 0.0))
    with pytest.raises(ConnectionError, match="strong-down is down"):
        call(down, "say hi")
    assert down.controller.remaining == 0.5  # the escalation's reservation is freed: a failed call is not charged


def test_usage_is_counted_once_for_each_model_on_invoke_ainvoke_stream_and_astream():
    llm = chat(lazy(text=""), escalate_on=["empty"])
    expected = {"weak-fake": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7},
                "strong-fake": {"input_tokens": 3, "output_tokens": 3, "total_tokens": 6}}

    async def astream():
        return [c async for c in llm.astream("say hi")]

    for run in (lambda: llm.invoke("say hi"), lambda: asyncio.run(llm.ainvoke("say hi")),
                lambda: list(llm.stream("say hi")), lambda: asyncio.run(astream())):
        with get_usage_metadata_callback() as cb:
            run()
        assert cb.usage_metadata == expected


def test_invoke_of_a_streaming_model_counts_the_rejected_answer_too():
    llm = chat(lazy(text=""), escalate_on=["empty"], streaming=True)
    with get_usage_metadata_callback() as cb:
        message = llm.invoke("say hi")
    assert message.content == "[strong-fake] say hi"
    assert set(cb.usage_metadata) == {"weak-fake", "strong-fake"}
    assert cb.usage_metadata["weak-fake"]["total_tokens"] == 7


def test_stream_releases_only_the_accepted_answer():
    weak = FakeToolChatModel(model_name="weak-fake")
    llm = chat(weak, escalate_on=[lambda v: v.text.startswith("[weak-fake]")])
    chunks = list(llm.stream("say hi"))
    merged = merge_chunks(chunks)
    assert merged.content == "[strong-fake] say hi"
    assert chunks[0].response_metadata["routellm"]["escalations"][0]["model"] == "weak-fake"
    passing = list(chat(weak, escalate_on=["empty"]).stream("say hi"))
    assert merge_chunks(passing).content == "[weak-fake] say hi"


def test_batch_escalates_each_input_on_its_own():
    llm = chat(FakeToolChatModel(model_name="weak-fake"), escalate_on=[lambda v: "bad" in v.text])
    out = llm.batch(["say bad", "say good", "prove it"])
    assert [m.response_metadata["routellm"]["model"] for m in out] == ["strong-fake", "weak-fake", "strong-fake"]
    assert ["escalations" in m.response_metadata["routellm"] for m in out] == [True, False, False]
    aout = asyncio.run(llm.abatch(["say bad", "say good"]))
    assert [m.response_metadata["routellm"]["model"] for m in aout] == ["strong-fake", "weak-fake"]


class Add(BaseModel):
    """Add two integers."""

    a: int
    b: int


@pytest.mark.parametrize("calls, reason", [
    ([{"name": "mul", "args": {"a": 1, "b": 2}, "id": "1", "type": "tool_call"}], "names 'mul', which is not a bound"),
    ([{"name": "Add", "args": {"a": "one", "b": 2}, "id": "1", "type": "tool_call"}], "args.a must be integer"),
    ([{"name": "Add", "args": {"a": 1}, "id": "1", "type": "tool_call"}], "misses required key(s) ['b']"),
])
def test_tool_calls_that_do_not_match_the_bound_tools_escalate(calls, reason):
    llm = chat(lazy(calls=calls), escalate_on=["tool_calls"]).bind_tools([Add])
    message = llm.invoke("add 1 and 2")
    assert message.tool_calls[0]["args"] == {"a": 1, "b": 1}  # the strong fake's valid call (first number)
    assert reason in message.response_metadata["routellm"]["escalated"]["reason"]


@pytest.mark.parametrize("check", ["tool_calls", "structured"])
def test_structured_output_escalates_when_the_weak_model_calls_no_tool(check):
    llm = chat(lazy(text="a is 1 and b is 2"), escalate_on=[check])
    result = llm.with_structured_output(Add, include_raw=True).invoke("add 1 and 2")
    assert result["parsed"] == Add(a=1, b=1)
    assert "a tool call was required" in result["raw"].response_metadata["routellm"]["escalated"]["reason"]


def test_structured_output_with_wrong_types_escalates_under_structured():
    bad = [{"name": "Add", "args": {"a": "one", "b": 2}, "id": "1", "type": "tool_call"}]
    result = chat(lazy(calls=bad), escalate_on=["structured"]).with_structured_output(Add).invoke("add 1 and 2")
    assert result == Add(a=1, b=1)
    plain_tools = chat(lazy(calls=bad), escalate_on=["structured"]).bind_tools([Add]).invoke("add 1 and 2")
    assert plain_tools.tool_calls[0]["args"] == {"a": "one", "b": 2}  # not structured output: not this check's


def test_concurrent_invokes_escalate_independently():
    llm = chat(FakeToolChatModel(model_name="weak-fake"), escalate_on=[lambda v: "odd" in v.text])
    results: dict[int, Any] = {}

    def work(i):
        results[i] = llm.invoke(f"say {'odd' if i % 2 else 'even'} {i}")

    assert not in_threads(work, 24)
    for i, message in results.items():
        assert message.response_metadata["routellm"]["model"] == ("strong-fake" if i % 2 else "weak-fake")
        assert str(i) in message.content


def test_runnable_escalates_string_and_dict_outputs():
    strong = RunnableLambda(lambda q: f"rag: {q}", name="rag")
    weak = RunnableLambda(lambda q: "" if "empty" in q else f"direct: {q}", name="direct")
    chain = RouteLLMRunnable(strong=strong, weak=weak, router=KeywordRouter(), threshold=0.5, escalate_on=["empty"])
    assert chain.invoke("say empty") == "rag: say empty"
    assert chain.invoke("say hi") == "direct: say hi"
    assert asyncio.run(chain.ainvoke("say empty")) == "rag: say empty"
    assert "".join(chain.stream("say empty")) == "rag: say empty"
    assert chain.batch(["say empty", "say hi"]) == ["rag: say empty", "direct: say hi"]
    dicts = RouteLLMRunnable(
        strong=RunnableLambda(lambda q: {"answer": 42}), weak=RunnableLambda(lambda q: {"answer": None}),
        router=KeywordRouter(), threshold=0.5, escalate_on=[lambda v: v.raw.get("answer") is None])
    assert dicts.invoke("say hi") == {"answer": 42}


def test_runnable_adds_up_a_str_output_parser_stream():
    # StrOutputParser streams a str subclass: the chunks were added up wrongly (the last ones only), so a
    # non-empty weak answer looked empty to the check, and the run's output was a fragment
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.output_parsers import StrOutputParser

    class Ends(BaseCallbackHandler):
        def __init__(self) -> None:
            self.outputs: list = []

        def on_chain_end(self, outputs, *, parent_run_id=None, **kwargs):
            if parent_run_id is None:
                self.outputs.append(outputs)

    chain = RouteLLMRunnable(strong=FakeToolChatModel(model_name="big") | StrOutputParser(),
                             weak=FakeToolChatModel(model_name="small") | StrOutputParser(),
                             router=KeywordRouter(), threshold=0.5, escalate_on=["empty"])
    ends = Ends()
    assert "".join(chain.stream("hi", config={"callbacks": [ends]})) == "[small] hi"
    assert "".join(chain.stream("hi there you")) == "[small] hi there you"
    assert "".join(chain.model_copy(update={"escalate_on": None}).stream("hi there you", {"callbacks": [ends]})) \
        == "[small] hi there you"
    assert ends.outputs == ["[small] hi", "[small] hi there you"]


def test_bad_escalate_on_fails_at_construction():
    with pytest.raises(ValueError, match="known checks: empty, refusal"):
        chat(lazy(), escalate_on=["emptyy"])


# Ladders --------------------------------------------------------------------------------
def ladder_chat(**kwargs):
    models = [FakeToolChatModel(model_name=n) for n in ("tiny-fake", "mid-fake", "big-fake")]
    ladder = [(models[0], "tiny", 0.8), (models[1], "mid", 0.7), (models[2], "big", None)]
    return RouteLLMChat(ladder=ladder, router=TableRouter(), **kwargs)


def test_ladder_picks_the_cheapest_model_that_is_good_enough():
    llm = ladder_chat()
    assert (llm.weak.model_name, llm.strong.model_name) == ("tiny-fake", "big-fake")
    out = llm.batch(["say hi", "explain tides", "prove it"])
    assert [m.content.split("]")[0] for m in out] == ["[tiny-fake", "[mid-fake", "[big-fake"]
    record = out[1].response_metadata["routellm"]
    assert (record["rung"], record["rung_model"], record["answered_rung"], record["role"]) == (1, "mid", 1, "weak")
    assert "".join(c.content for c in llm.stream("explain tides")) == "[mid-fake] explain tides"
    assert asyncio.run(llm.ainvoke("prove it")).content == "[big-fake] prove it"


def test_ladder_escalates_one_rung_at_a_time():
    llm = ladder_chat(escalate_on=[lambda v: v.text.startswith("[tiny-fake]")])
    record = llm.invoke("say hi").response_metadata["routellm"]
    assert (record["model"], record["answered_rung"]) == ("mid-fake", 1)
    assert [e["model"] for e in record["escalations"]] == ["tiny-fake"]


def test_ladder_binds_tools_on_every_rung():
    llm = ladder_chat().bind_tools([Add])
    message = llm.invoke("explain 2 and 3")
    assert message.tool_calls[0]["args"] == {"a": 2, "b": 2}
    assert message.response_metadata["routellm"]["model"] == "mid-fake"


def test_ladder_configuration_errors():
    with pytest.raises(ValueError, match="either strong and weak, or a ladder"):
        RouteLLMChat(strong=FakeToolChatModel(), weak=FakeToolChatModel(), router=TableRouter(),
                     ladder=[(FakeToolChatModel(), "tiny", 0.5), (FakeToolChatModel(), "big", None)])
    with pytest.raises(ValueError, match="ladder\\[1\\] model must be a LangChain BaseChatModel"):
        RouteLLMChat(router=TableRouter(), ladder=[(FakeToolChatModel(), "tiny", 0.5), ("gpt", "big", None)])
    with pytest.raises(ValueError, match="scores one pair of models only"):
        RouteLLMChat(router=KeywordRouter(), ladder=[(FakeToolChatModel(), "tiny", 0.5), (FakeToolChatModel(), "big", None)])
    with pytest.raises(ValueError, match="not in the router's model table"):
        RouteLLMChat(router=TableRouter(), ladder=[(FakeToolChatModel(), "tiny", 0.5), (FakeToolChatModel(), "gpt", None)])


def test_runnable_ladder():
    rungs = [(RunnableLambda(lambda q, n=n: f"{n}: {q}", name=n), n, t)
             for n, t in (("tiny", 0.8), ("mid", 0.7), ("big", None))]
    chain = RouteLLMRunnable(ladder=rungs, router=TableRouter())
    assert chain.batch(["say hi", "explain x", "prove y"]) == ["tiny: say hi", "mid: explain x", "big: prove y"]


# Conversations --------------------------------------------------------------------------
def test_route_on_last_turn_sees_the_previous_question():
    convo = [HumanMessage("Prove that sqrt(2) is irrational."), AIMessage("Assume p/q."), HumanMessage("And 3?")]
    assert chat(FakeToolChatModel(model_name="weak-fake")).route(convo).role.value == "weak"
    assert chat(FakeToolChatModel(model_name="weak-fake"), route_on="last_turn").route(convo).role.value == "strong"


def test_a_thread_stays_on_the_model_it_started_on():
    llm = chat(FakeToolChatModel(model_name="weak-fake"), pin_threads=10)
    hard = {"configurable": {"thread_id": "t-hard"}}
    easy = {"configurable": {"thread_id": "t-easy"}}
    assert llm.invoke("prove it", config=hard).response_metadata["routellm"]["model"] == "strong-fake"
    follow = llm.invoke("thanks!", config=hard).response_metadata["routellm"]
    assert (follow["model"], follow["reason"], follow["score"]) == ("strong-fake", "pinned", None)
    assert llm.invoke("hi", config=easy).response_metadata["routellm"]["model"] == "weak-fake"
    assert llm.invoke("prove it", config=easy).response_metadata["routellm"]["model"] == "weak-fake"
    assert llm.invoke("thanks!").response_metadata["routellm"]["reason"] == "score"  # no thread: routed
    streamed = list(llm.stream("prove it", config=easy))
    assert streamed[0].response_metadata["routellm"]["model"] == "weak-fake"


def test_an_escalation_moves_the_pin_to_the_strong_model():
    llm = chat(FakeToolChatModel(model_name="weak-fake"), pin_threads=10,
               escalate_on=[lambda v: "bad" in v.text])
    config = {"configurable": {"thread_id": 7}}
    assert llm.invoke("say bad", config=config).response_metadata["routellm"]["model"] == "strong-fake"
    assert llm.invoke("say hi", config=config).response_metadata["routellm"]["reason"] == "pinned"
    assert llm.invoke("say hi", config=config).response_metadata["routellm"]["model"] == "strong-fake"


def test_pins_without_pin_threads_are_ignored_and_bad_thread_ids_raise():
    llm = chat(FakeToolChatModel(model_name="weak-fake"))
    config = {"configurable": {"thread_id": "t"}}
    llm.invoke("prove it", config=config)
    assert llm.invoke("hi", config=config).response_metadata["routellm"]["model"] == "weak-fake"
    with pytest.raises(ConfigError, match="thread_id must be a non-empty string, an int or a UUID"):
        chat(FakeToolChatModel(), pin_threads=2).invoke("hi", config={"configurable": {"thread_id": ""}})


def test_any_langgraph_thread_id_passes_when_pinning_is_off():
    # configurable.thread_id is LangGraph's key (a UUID is common there): only pin_threads reads it
    runnable = RouteLLMRunnable(strong=RunnableLambda(lambda x: "s"), weak=RunnableLambda(lambda x: "w"),
                                router=KeywordRouter(), threshold=0.5)
    for thread_id in ("", 1.5):
        config = {"configurable": {"thread_id": thread_id}}
        assert chat(FakeToolChatModel(model_name="weak-fake")).invoke("hi", config=config).content == "[weak-fake] hi"
        assert merge_chunks(list(chat(FakeToolChatModel(model_name="weak-fake")).stream("hi", config=config))).content \
            == "[weak-fake] hi"
        assert runnable.invoke("hi", config=config) == "w"
        with pytest.raises(ConfigError, match="thread_id must be a non-empty string, an int or a UUID"):
            runnable.model_copy(update={"pin_threads": 2}).invoke("hi", config=config)


def test_a_uuid_thread_id_pins_as_its_string():
    import uuid

    thread = uuid.uuid4()
    llm = chat(FakeToolChatModel(model_name="weak-fake"), pin_threads=10)
    assert llm.invoke("prove it", config={"configurable": {"thread_id": thread}}).response_metadata["routellm"][
        "model"] == "strong-fake"
    for same in (thread, str(thread)):
        meta = llm.invoke("hi", config={"configurable": {"thread_id": same}}).response_metadata["routellm"]
        assert (meta["model"], meta["reason"]) == ("strong-fake", "pinned")
    assert llm.invoke("hi", config={"configurable": {"thread_id": uuid.uuid4()}}).response_metadata["routellm"][
        "model"] == "weak-fake"


def test_concurrent_threads_keep_their_own_pins():
    llm = chat(FakeToolChatModel(model_name="weak-fake"), pin_threads=100)

    def work(i):
        config = {"configurable": {"thread_id": f"c{i}"}}
        llm.invoke("prove it" if i % 2 else "hi", config=config)
        for _ in range(3):
            model = llm.invoke("and then?", config=config).response_metadata["routellm"]["model"]
            assert model == ("strong-fake" if i % 2 else "weak-fake")

    assert not in_threads(work, 20)


def test_runnable_pins_by_thread_id():
    chain = RouteLLMRunnable(strong=RunnableLambda(lambda q: "S"), weak=RunnableLambda(lambda q: "W"),
                             router=KeywordRouter(), threshold=0.5, pin_threads=5)
    config = {"configurable": {"thread_id": "x"}}
    assert chain.invoke("prove it", config=config) == "S"
    assert chain.invoke("hi", config=config) == "S"
    assert asyncio.run(chain.ainvoke("hi", config=config)) == "S"
    assert chain.invoke("hi") == "W"


def test_concurrent_async_calls_escalate_and_count_usage_once_each():
    llm = chat(FakeToolChatModel(model_name="weak-fake"), escalate_on=[lambda v: "odd" in v.text])

    async def many():
        return await asyncio.gather(*(llm.ainvoke(f"say {'odd' if i % 2 else 'even'} {i}") for i in range(16)))

    with get_usage_metadata_callback() as cb:
        out = asyncio.run(many())
    assert [m.response_metadata["routellm"]["model"] for m in out] == ["weak-fake", "strong-fake"] * 8
    # 8 accepted weak answers + 8 rejected ones; 8 strong answers; 4 tokens in, 4 out each
    assert cb.usage_metadata["weak-fake"]["total_tokens"] == 16 * 8
    assert cb.usage_metadata["strong-fake"]["total_tokens"] == 8 * 8


def test_batch_configs_carry_each_inputs_thread():
    llm = chat(FakeToolChatModel(model_name="weak-fake"), pin_threads=10)
    configs = [{"configurable": {"thread_id": "hard"}}, {"configurable": {"thread_id": "easy"}}]
    llm.batch(["prove it", "hi"], config=configs)
    again = llm.batch(["thanks", "prove this too"], config=configs)
    assert [m.response_metadata["routellm"]["model"] for m in again] == ["strong-fake", "weak-fake"]
    assert {m.response_metadata["routellm"]["reason"] for m in again} == {"pinned"}


def test_pins_are_shared_by_copies_and_a_pickle_starts_with_none():
    import pickle

    llm = chat(FakeToolChatModel(model_name="weak-fake"), pin_threads=10, escalate_on=["empty"])
    config = {"configurable": {"thread_id": "p"}}
    llm.invoke("prove it", config=config)
    copy = llm.model_copy()
    assert copy.invoke("hi", config=config).response_metadata["routellm"]["reason"] == "pinned"
    clone = pickle.loads(pickle.dumps(llm))
    assert clone.escalate_on == ("empty",) and clone.pin_threads == 10
    assert clone.invoke("hi", config=config).response_metadata["routellm"]["reason"] == "score"


def test_ledger_prices_the_rejected_weak_answer_once():
    """An escalated call cost the rejected weak answer and the strong one: the ledger adds both, once."""
    from langchain_routellm import LedgerCallbackHandler

    handler = LedgerCallbackHandler(prices={"strong-fake": (10.0, 30.0), "weak-fake": (1.0, 2.0)},
                                    strong_model="strong-fake")
    message = chat(lazy(text=""), escalate_on=["empty"]).invoke("say hi", config={"callbacks": [handler]})
    assert message.response_metadata["routellm"]["escalated"]["from"] == "weak"
    [call] = handler.ledger.calls  # the rejected answer's own run is not a second call
    usage = message.usage_metadata
    strong = (usage["input_tokens"] * 10.0 + usage["output_tokens"] * 30.0) / 1e6
    rejected = (5 * 1.0 + 2 * 2.0) / 1e6
    assert call.rejected == ("weak-fake",)
    assert call.rejected_cost == pytest.approx(rejected)
    assert call.cost == pytest.approx(strong + rejected)
    assert call.strong_cost == pytest.approx(strong)  # straight to the strong model: no rejected answer


@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream", "astream", "invoke_streaming"])
def test_when_the_escalation_fails_the_rejected_answer_is_still_reported_and_priced(how):
    """The strong model is down: the call raises its error, and the rejected weak answer,
    made and paid for, reaches the callbacks (usage) and the ledger (unanswered cost)."""
    from langchain_routellm import LedgerCallbackHandler

    llm = chat(lazy(text=""), strong=FakeToolChatModel(model_name="strong-fake", fail=True), escalate_on=["empty"],
               streaming=how == "invoke_streaming")
    handler = LedgerCallbackHandler(prices={"strong-fake": (10.0, 30.0), "weak-fake": (1.0, 2.0)},
                                    strong_model="strong-fake")
    config = {"callbacks": [handler]}

    async def astream():
        return [c async for c in llm.astream("say hi", config=config)]

    run = {"invoke": lambda: llm.invoke("say hi", config=config),
           "invoke_streaming": lambda: llm.invoke("say hi", config=config),
           "ainvoke": lambda: asyncio.run(llm.ainvoke("say hi", config=config)),
           "stream": lambda: list(llm.stream("say hi", config=config)),
           "astream": lambda: asyncio.run(astream())}[how]
    with get_usage_metadata_callback() as cb, pytest.raises(ConnectionError, match="strong-fake is down"):
        run()
    assert cb.usage_metadata == {"weak-fake": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7}}
    assert handler.ledger.calls == [] and handler.unrouted == 0
    [lost] = handler.ledger.unanswered
    assert lost.rejected == ("weak-fake",) and lost.reason.startswith("empty")
    assert (lost.input_tokens, lost.output_tokens) == (5, 2)
    totals = handler.ledger.totals()
    assert totals["cost"] == pytest.approx((5 * 1.0 + 2 * 2.0) / 1e6, abs=1e-15)
    assert totals["unanswered_answers"] == 1 and totals["strong_cost"] == 0.0
    assert "1 rejected answer of a failed call" in handler.ledger.summary()
