"""RouteLLMChat: accounting, identical routing on every path, tools, structured
output, metadata, fallback and configuration errors (offline, fake inner models)."""

from __future__ import annotations

import asyncio
import doctest
from unittest.mock import ANY

import pytest
from langchain_core.callbacks import get_usage_metadata_callback
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.output_parsers import StrOutputParser
from langchain_core.tools import tool
from pydantic import BaseModel, Field

import langchain_routellm.chat_models
import langchain_routellm.runnables
from lc_support import HARD, KeywordRouter, Recorder, merge_chunks
from langchain_routellm import DECISION_KEY, RouteLLMChat, to_conversation
from langchain_routellm.chat_models import PER_MODEL_KWARGS
from langchain_routellm.testing import FakeToolChatModel
from shared_core.engine import shipped_aliases, shipped_router_names
from shared_core.attempts import AllModelsFailedError
from shared_core.errors import ConfigError

EASY = "What is the capital of France?"
HARD_Q = f"Please {HARD} that there are infinitely many primes."


@pytest.fixture
def llm(strong, weak, keyword_router):
    return RouteLLMChat(strong=strong, weak=weak, router=keyword_router, threshold=0.5)


async def _acollect(aiter):
    return [c async for c in aiter]


# Accounting ------------------------------------------------------------------------
ENTRY_POINTS = ["invoke", "ainvoke", "stream", "astream", "batch", "abatch"]


def _call(llm, entry: str, prompt: str, config: dict) -> AIMessage:
    if entry == "invoke":
        return llm.invoke(prompt, config)
    if entry == "ainvoke":
        return asyncio.run(llm.ainvoke(prompt, config))
    if entry == "stream":
        return merge_chunks(list(llm.stream(prompt, config)))
    if entry == "astream":
        return merge_chunks(asyncio.run(_acollect(llm.astream(prompt, config))))
    if entry == "batch":
        return llm.batch([prompt], config)[0]
    return asyncio.run(llm.abatch([prompt], config))[0]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("prompt", [EASY, HARD_Q])
def test_one_run_and_usage_counted_once_on_every_entry_point(llm, entry, prompt):
    direct = (llm.strong if HARD in prompt else llm.weak).invoke(prompt)  # what the chosen model reports alone
    recorder = Recorder()
    with get_usage_metadata_callback() as usage:
        message = _call(llm, entry, prompt, {"callbacks": [recorder]})
    expected_model = "strong-fake" if HARD in prompt else "weak-fake"
    assert usage.usage_metadata == {expected_model: direct.usage_metadata}
    assert message.usage_metadata == direct.usage_metadata
    assert recorder.starts == 1 and len(recorder.ends) == 1
    # callbacks see the real answer, decision included
    generation = recorder.ends[0].generations[0][0]
    assert generation.message.content == direct.content
    assert generation.message.response_metadata[DECISION_KEY]["model"] == expected_model


def test_stream_tokens_reach_callbacks_once(llm):
    recorder = Recorder()
    chunks = list(llm.stream(EASY, {"callbacks": [recorder]}))
    assert "".join(recorder.tokens) == "".join(c.text for c in chunks) == f"[weak-fake] {EASY}"


# Identical routing on every path -----------------------------------------------------
PROMPTS = [EASY, HARD_Q, "hello", f"{HARD.upper()} it", "Summarise the plot of Hamlet."]


def test_routing_identical_on_streaming_and_non_streaming_paths(strong, weak):
    llm = RouteLLMChat(strong=strong, weak=weak, router="random", threshold=0.5)
    expected = [llm.route(p).to_dict() for p in PROMPTS]
    assert {d["role"] for d in expected} == {"strong", "weak"}  # both sides are exercised

    def strip(record):
        return {k: record[k] for k in ("role", "score", "threshold", "router", "reason")}

    for entry in ENTRY_POINTS:
        got = [strip(_call(llm, entry, p, {}).response_metadata[DECISION_KEY]) for p in PROMPTS]
        assert got == [strip(e) for e in expected], entry
    got = [strip(m.response_metadata[DECISION_KEY]) for m in llm.batch(PROMPTS)]
    assert got == [strip(e) for e in expected]
    got = [strip(m.response_metadata[DECISION_KEY]) for m in asyncio.run(llm.abatch(PROMPTS))]
    assert got == [strip(e) for e in expected]
    assert [asyncio.run(llm.aroute(p)).to_dict() for p in PROMPTS] == expected


def test_metadata_on_every_response(llm):
    record = llm.invoke(HARD_Q).response_metadata[DECISION_KEY]
    assert record == {
        "role": "strong", "model": "strong-fake", "score": pytest.approx(0.9), "threshold": 0.5,
        "router": "keyword", "reason": "score", "fallback": None, "failures": [],
        "id": ANY,
    }
    chunks = list(llm.stream(EASY))
    assert DECISION_KEY in chunks[0].response_metadata
    assert sum(DECISION_KEY in c.response_metadata for c in chunks) == 1  # merged chunks keep one record
    assert merge_chunks(chunks).response_metadata[DECISION_KEY]["role"] == "weak"


def test_route_calls_no_model(keyword_router):
    down = FakeToolChatModel(model_name="down", fail=True)
    llm = RouteLLMChat(strong=down, weak=down, router=keyword_router, threshold=0.5)
    assert llm.route(HARD_Q).role.value == "strong"
    assert llm.route([SystemMessage("be brief"), HumanMessage(EASY)]).role.value == "weak"
    assert asyncio.run(llm.aroute(HARD_Q)).score == pytest.approx(0.9)


@pytest.mark.parametrize("method", ["batch", "abatch"])
def test_batch_scores_all_inputs_in_one_router_call(llm, keyword_router, method):
    prompts = [EASY, HARD_Q, "hi", "prove it"]
    out = llm.batch(prompts) if method == "batch" else asyncio.run(llm.abatch(prompts))
    assert keyword_router.calls == [prompts]
    assert [m.response_metadata[DECISION_KEY]["role"] for m in out] == ["weak", "strong", "weak", "strong"]


def test_bound_batch_also_scores_once(llm, keyword_router):
    @tool
    def lookup(query: str) -> str:
        """Look something up."""
        return "42"

    out = llm.bind_tools([lookup]).batch([EASY, HARD_Q])
    assert len(keyword_router.calls) == 1
    assert [m.tool_calls[0]["name"] for m in out] == ["lookup", "lookup"]


# Policy (decided in shared_core.policy; checked here through the wrapper) ------------
def test_routes_on_last_human_message_and_text_blocks(llm, keyword_router):
    messages = [
        HumanMessage(HARD_Q),
        AIMessage("Sure."),
        HumanMessage([{"type": "text", "text": "now something easy"},
                      {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]),
    ]
    assert llm.route(messages).role.value == "weak"
    assert keyword_router.calls[-1] == ["now something easy"]


@pytest.mark.parametrize(
    "messages, reason",
    [
        ([SystemMessage("You are terse.")], "no_user_message"),
        ([HumanMessage("   ")], "no_text"),
        ([HumanMessage([{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}])], "no_text"),
    ],
)
@pytest.mark.parametrize("on_no_text", ["strong", "weak"])
def test_nothing_to_score_goes_to_on_no_text(strong, weak, keyword_router, messages, reason, on_no_text):
    llm = RouteLLMChat(strong=strong, weak=weak, router=keyword_router, threshold=0.5, on_no_text=on_no_text)
    record = llm.invoke(messages).response_metadata[DECISION_KEY]
    assert (record["role"], record["score"], record["reason"]) == (on_no_text, None, reason)
    assert keyword_router.calls == []


def test_to_conversation_roles():
    from langchain_core.messages import ChatMessage

    pairs = to_conversation([SystemMessage("s"), HumanMessage("h"), AIMessage("a"),
                             ToolMessage("t", tool_call_id="1"), ChatMessage(role="user", content="c")])
    assert pairs == [("system", "s"), ("user", "h"), ("assistant", "a"), ("tool", "t"), ("user", "c")]


# Tools, agents, structured output ------------------------------------------------------
@tool
def get_weather(location: str) -> str:
    """Weather in a city."""
    return f"It is sunny in {location}."


@pytest.mark.parametrize("question, role", [("What is the weather in 'Paris'?", "weak"),
                                            (f"{HARD} the weather in 'Paris' will hold", "strong")])
def test_agent_tool_loop_stays_on_one_model(llm, question, role):
    from langchain.agents import create_agent

    agent = create_agent(llm, tools=[get_weather])
    result = agent.invoke({"messages": [HumanMessage(question)]})
    answers = [m for m in result["messages"] if isinstance(m, AIMessage)]
    assert len(answers) == 2 and answers[0].tool_calls  # a tool call, then the answer
    assert isinstance(result["messages"][2], ToolMessage) and "sunny in Paris" in result["messages"][2].content
    assert {m.response_metadata[DECISION_KEY]["role"] for m in answers} == {role}
    assert answers[-1].content == f"[{role}-fake] The tool said: It is sunny in Paris."


def test_bind_tools_binds_on_both_models(llm):
    bound = llm.bind_tools([get_weather], tool_choice="get_weather")
    per_model = bound.kwargs[PER_MODEL_KWARGS]
    assert set(per_model) == {"strong", "weak"}
    for kwargs in per_model.values():
        assert kwargs["tools"][0]["function"]["name"] == "get_weather"
        assert kwargs["tool_choice"] == "get_weather"
    for q in (EASY, HARD_Q):
        message = bound.invoke(q)
        assert message.tool_calls[0]["name"] == "get_weather"


@pytest.mark.parametrize("entry", ["invoke", "stream"])
def test_call_arguments_win_over_bound_tool_arguments(keyword_router, entry):
    # As with any RunnableBinding: llm.bind_tools(..., tool_choice=X).invoke(q, tool_choice=Y) uses Y.
    llm = RouteLLMChat(strong=FakeToolChatModel(model_name="s"), weak=FakeToolChatModel(model_name="w"),
                       router=keyword_router, threshold=0.5, escalate_on=["tool_calls"])
    bound = llm.bind_tools([get_weather], tool_choice="get_weather")
    for q, model in ((EASY, "w"), (HARD_Q, "s")):
        if entry == "invoke":
            message = bound.invoke(q, tool_choice="none")
        else:
            message = merge_chunks(list(bound.stream(q, tool_choice="none")))
        assert message.tool_calls == [] and message.content == f"[{model}] {q}"
        # the call's tool_choice, not the bound one, decides whether a tool call was required
        assert "escalated" not in message.response_metadata[DECISION_KEY]


def test_bind_tools_needs_tool_calling_on_both(strong, keyword_router):
    from langchain_core.language_models import GenericFakeChatModel

    llm = RouteLLMChat(strong=strong, weak=GenericFakeChatModel(messages=iter(["x"])), router=keyword_router,
                       threshold=0.5)
    with pytest.raises(ConfigError, match="weak model GenericFakeChatModel does not support tool calling"):
        llm.bind_tools([get_weather])


class Person(BaseModel):
    """A person."""

    name: str = Field(description="The name.")
    age: int = Field(description="The age.")


@pytest.mark.parametrize("question, role", [("Who is 'Ada', 36?", "weak"), (f"{HARD}: 'Ada' is 36", "strong")])
def test_structured_output_whichever_model_is_chosen(llm, question, role):
    assert llm.with_structured_output(Person).invoke(question) == Person(name="Ada", age=36)
    out = llm.with_structured_output(Person, include_raw=True).invoke(question)
    assert out["parsed"] == Person(name="Ada", age=36)
    assert out["raw"].response_metadata[DECISION_KEY]["role"] == role
    streamed = list(llm.with_structured_output(Person).stream(question))
    assert streamed[-1] == Person(name="Ada", age=36)


def test_lcel_chain(llm):
    chain = ChatPromptTemplate.from_messages([("system", "Be brief."), ("human", "{q}")]) | llm | StrOutputParser()
    assert chain.invoke({"q": EASY}) == f"[weak-fake] {EASY}"
    assert chain.batch([{"q": EASY}, {"q": HARD_Q}]) == [f"[weak-fake] {EASY}", f"[strong-fake] {HARD_Q}"]


def test_num_tokens_and_profile_delegate(strong, weak, keyword_router):
    class Counter(FakeToolChatModel):
        def get_num_tokens(self, text: str) -> int:
            return 1000 + len(text.split())

    llm = RouteLLMChat(strong=Counter(model_name="s"), weak=weak, router=keyword_router, threshold=0.5)
    assert llm.get_num_tokens(EASY) == len(EASY.split())  # weak counts
    assert llm.get_num_tokens(HARD_Q) == 1000 + len(HARD_Q.split())  # strong counts
    assert llm.get_num_tokens_from_messages([HumanMessage(HARD_Q)]) > 1000

    strong.profile = {"max_input_tokens": 128000, "tool_calling": True, "image_inputs": True}
    weak.profile = {"max_input_tokens": 8192, "tool_calling": True, "image_inputs": False}
    llm = RouteLLMChat(strong=strong, weak=weak, router=keyword_router, threshold=0.5)
    assert llm.profile == {"max_input_tokens": 8192, "tool_calling": True, "image_inputs": False}
    assert RouteLLMChat(strong=FakeToolChatModel(), weak=weak, router=keyword_router, threshold=0.5).profile is None


def test_call_settings_are_forwarded(keyword_router):
    seen: list[dict] = []

    class Spy(FakeToolChatModel):
        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            seen.append({"stop": stop, **kwargs})
            return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)

    llm = RouteLLMChat(strong=Spy(), weak=Spy(), router=keyword_router, threshold=0.5,
                       temperature=0.2, max_tokens=7, stop=["France"])
    assert llm.invoke(EASY).content == "[fake-chat] What is the capital of "
    assert seen == [{"stop": ["France"], "temperature": 0.2, "max_tokens": 7}]
    assert llm._get_ls_params() == {"ls_provider": "routellm", "ls_model_name": "routellm(fake-chat|fake-chat)",
                                    "ls_model_type": "chat", "ls_temperature": 0.2, "ls_max_tokens": 7,
                                    "ls_stop": ["France"]}
    # stop=[] asks for no stop sequences (as ChatOpenAI reads it), not for the field's
    seen.clear()
    assert llm.invoke(EASY, stop=[]).content == f"[fake-chat] {EASY}"
    assert merge_chunks(list(llm.stream(EASY, stop=[]))).content == f"[fake-chat] {EASY}"
    assert seen[0]["stop"] == []


# Fallback --------------------------------------------------------------------------
def test_fallback_off_by_default_raises(strong, keyword_router):
    llm = RouteLLMChat(strong=strong, weak=FakeToolChatModel(model_name="weak-down", fail=True),
                       router=keyword_router, threshold=0.5)
    with pytest.raises(ConnectionError, match="weak-down is down"):
        llm.invoke(EASY)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_fallback_calls_the_other_model_and_records_it(strong, keyword_router, entry):
    llm = RouteLLMChat(strong=strong, weak=FakeToolChatModel(model_name="weak-down", fail=True),
                       router=keyword_router, threshold=0.5, fallback=True)
    with get_usage_metadata_callback() as usage:
        message = _call(llm, entry, EASY, {})
    record = message.response_metadata[DECISION_KEY]
    assert message.text == f"[strong-fake] {EASY}"
    assert record["role"] == "strong" and record["model"] == "strong-fake"
    assert record["score"] == pytest.approx(0.1)  # the router's decision is kept
    assert record["fallback"] == {"from": "weak", "model": "weak-down", "error": "ConnectionError: weak-down is down"}
    assert record["failures"] == [{"role": "weak", "model": "weak-down", "error": "ConnectionError: weak-down is down"}]
    assert list(usage.usage_metadata) == ["strong-fake"]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_fallback_raises_one_error_with_both_failures(keyword_router, entry):
    # Before: only the last error survived, with no trace of the first.
    llm = RouteLLMChat(strong=FakeToolChatModel(model_name="strong-down", fail=True),
                       weak=FakeToolChatModel(model_name="weak-down", fail=True),
                       router=keyword_router, threshold=0.5, fallback=True)
    with pytest.raises(AllModelsFailedError) as info:
        _call(llm, entry, EASY, {})
    assert [(f.role.value, f.model, str(f.error)) for f in info.value.errors] == [
        ("weak", "weak-down", "weak-down is down"), ("strong", "strong-down", "strong-down is down")]
    assert info.value.__cause__ is info.value.errors[-1].error


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("fallback", [True, False])
def test_a_failed_strong_call_frees_its_budget_reservation(weak, keyword_router, entry, fallback):
    # Before: the reservation held for the strong answer stayed until the period ended (never charged).
    from shared_core.controller import BudgetController

    budget = BudgetController(1.0, reserve=0.3, clock=lambda: 0.0)
    llm = RouteLLMChat(strong=FakeToolChatModel(model_name="strong-down", fail=True), weak=weak,
                       router=keyword_router, threshold=0.5, fallback=fallback, controller=budget)
    for _ in range(4):  # more than the budget's room for three reservations
        if fallback:
            assert _call(llm, entry, HARD_Q, {}).response_metadata[DECISION_KEY]["model"] == "weak-fake"
        else:
            with pytest.raises(ConnectionError, match="strong-down is down"):
                _call(llm, entry, HARD_Q, {})
        assert budget.remaining == 1.0
    answered = RouteLLMChat(strong=FakeToolChatModel(model_name="strong-up"), weak=weak, router=keyword_router,
                            threshold=0.5, controller=budget)
    _call(answered, entry, HARD_Q, {})  # answered, not charged (no ledger here): its reservation stays
    assert budget.remaining == pytest.approx(0.7, abs=1e-9)
    weak_first = RouteLLMChat(strong=FakeToolChatModel(model_name="strong-down", fail=True),
                              weak=FakeToolChatModel(model_name="weak-down", fail=True), router=keyword_router,
                              threshold=0.5, fallback=True, controller=budget)
    with pytest.raises(AllModelsFailedError):  # a weak decision reserved nothing: its strong fallback frees nothing
        _call(weak_first, entry, EASY, {})
    assert budget.remaining == pytest.approx(0.7, abs=1e-9)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_programming_error_does_not_fall_back(strong, keyword_router, entry):
    # Before: every Exception fell back, so a bug in one model's call hid behind the other's answer.
    llm = RouteLLMChat(strong=strong, weak=FakeToolChatModel(model_name="weak-bug", fail=TypeError("bad kwarg")),
                       router=keyword_router, threshold=0.5, fallback=True)
    with pytest.raises(TypeError, match="bad kwarg"):
        _call(llm, entry, EASY, {})


def test_fallback_on_chooses_the_errors(strong, keyword_router):
    weak = FakeToolChatModel(model_name="weak-odd", fail=KeyError("odd"))
    llm = RouteLLMChat(strong=strong, weak=weak, router=keyword_router, threshold=0.5, fallback=True,
                       fallback_on=(KeyError,))
    assert llm.invoke(EASY).response_metadata[DECISION_KEY]["model"] == "strong-fake"
    with pytest.raises(ConfigError, match="fallback_on"):
        RouteLLMChat(strong=strong, weak=weak, router=keyword_router, threshold=0.5, fallback_on="KeyError")


# Configuration ---------------------------------------------------------------------
def test_model_string_and_strong_fraction(strong, weak):
    llm = RouteLLMChat(strong=strong, weak=weak, router="router-random-0.3")
    assert llm.engine.threshold == pytest.approx(0.3) and llm.engine.router.name == "random"
    prompts = [f"question number {i}" for i in range(200)]
    llm = RouteLLMChat(strong=strong, weak=weak, router="random", strong_fraction=0.25, calibration_prompts=prompts)
    share = sum(d.role.value == "strong" for d in llm.engine.decide_texts(prompts)) / len(prompts)
    assert share == pytest.approx(0.25, abs=0.01)


def test_calibration_prompts_from_an_iterator_are_kept(strong, weak):
    prompts = [f"question number {i}" for i in range(20)]
    llm = RouteLLMChat(strong=strong, weak=weak, router="random", strong_fraction=0.5,
                       calibration_prompts=iter(prompts))
    assert llm.calibration_prompts == prompts
    by_list = RouteLLMChat(strong=strong, weak=weak, router="random", strong_fraction=0.5, calibration_prompts=prompts)
    assert llm.engine.threshold == by_list.engine.threshold


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"strong": "gpt-4o"}, "strong must be a LangChain BaseChatModel, got str"),
        ({"weak": None}, "weak must be a LangChain BaseChatModel, got NoneType"),
        ({"threshold": 1.5}, r"threshold must be in \[0, 1\], got 1.5"),
        ({"threshold": 0.5, "strong_fraction": 0.3}, "either threshold"),
        ({"threshold": None, "strong_fraction": 2.0}, "2.0"),
        ({"router": "no-such-router"}, "unknown router 'no-such-router'"),
        ({"router": "router-random-0.3"}, "already carries threshold 0.3"),
        ({"router": "./does/not/exist"}, "does not exist"),
        ({"on_no_text": "medium"}, "on_no_text must be 'strong' or 'weak'"),
        ({"threshhold": 0.2}, "threshhold"),
        ({"timeout": 0}, "timeout must be a positive number"),
        ({"max_retries": 2}, "max_retries"),
    ],
)
def test_bad_configuration_fails_at_construction(strong, weak, overrides, match):
    params = {"strong": strong, "weak": weak, "router": "random", "threshold": 0.5, **overrides}
    with pytest.raises(ValueError, match=match):
        RouteLLMChat(**params)


def test_bound_model_is_rejected_with_a_hint(strong, weak):
    with pytest.raises(ConfigError, match="pass the model itself"):
        RouteLLMChat(strong=strong.bind(temperature=0), weak=weak, router="random", threshold=0.5)


@pytest.mark.slow
def test_default_router_loads_or_says_it_is_missing(strong, weak):
    if "default" not in shipped_router_names():
        with pytest.raises(ConfigError, match="default router is missing"):
            RouteLLMChat(strong=strong, weak=weak, threshold=0.5)
        return
    llm = RouteLLMChat(strong=strong, weak=weak, threshold=0.5)
    record = llm.invoke(EASY).response_metadata[DECISION_KEY]
    assert 0.0 <= record["score"] <= 1.0 and record["router"] == shipped_aliases()["default"]


def test_docstring_examples_run():
    for module in (langchain_routellm.chat_models, langchain_routellm.runnables):
        result = doctest.testmod(module, raise_on_error=False)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_unreadable_prompt_fails_only_its_batch_item() -> None:
    """A lone surrogate in one prompt fails that item with a PromptError, not the whole batch."""
    from shared_core.errors import PromptError

    llm = RouteLLMChat(strong=FakeToolChatModel(model_name="big"), weak=FakeToolChatModel(model_name="small"),
                       router=KeywordRouter(), threshold=0.5)
    prompts = ["fine prompt", "bad \udc80 prompt", "another"]
    for out in (llm.batch(prompts, return_exceptions=True),
                asyncio.run(llm.abatch(prompts, return_exceptions=True))):
        assert [type(o).__name__ for o in out] == ["AIMessage", "PromptError", "AIMessage"]
        assert "the prompt is not valid Unicode text" in str(out[1]) and "lone surrogate" in str(out[1])
    with pytest.raises(PromptError, match="the prompt is not valid Unicode text"):
        llm.invoke("bad \udc80 prompt")


def test_an_empty_message_list_fails_only_its_batch_item(llm, keyword_router) -> None:
    """No messages at all is refused before any model is called, in a batch for that item alone."""
    inputs = [EASY, [], HARD_Q]
    for out in (llm.batch(inputs, return_exceptions=True), asyncio.run(llm.abatch(inputs, return_exceptions=True))):
        assert [type(o).__name__ for o in out] == ["AIMessage", "ConfigError", "AIMessage"]
        assert "empty list of messages" in str(out[1])
        assert [o.response_metadata[DECISION_KEY]["role"] for o in (out[0], out[2])] == ["weak", "strong"]
    for call in (lambda: llm.invoke([]), lambda: list(llm.stream([])), lambda: llm.route([])):
        with pytest.raises(ConfigError, match="empty list of messages"):
            call()


def test_a_text_block_without_string_text_fails_only_its_batch_item(llm) -> None:
    """Such a block would be left out of the routed text silently (and fail at the provider)."""
    bad = [{"role": "user", "content": [{"type": "text", "text": HARD_Q}, {"type": "text", "text": 5}]}]
    inputs = [EASY, bad, HARD_Q]
    for out in (llm.batch(inputs, return_exceptions=True), asyncio.run(llm.abatch(inputs, return_exceptions=True))):
        assert [type(o).__name__ for o in out] == ["AIMessage", "ConfigError", "AIMessage"]
        assert "messages[0].content[1] is a text block whose text is int 5; expected a string" in str(out[1])
    with pytest.raises(ConfigError, match=r"content\[0\] is a text block whose text is NoneType None"):
        llm.route([HumanMessage(content=[{"type": "text"}])])


def test_a_non_streaming_model_streams_its_whole_answer(keyword_router) -> None:
    """Streaming through a model without _stream keeps what its answer has: invalid tool calls, name."""
    from langchain_core.language_models import BaseChatModel
    from langchain_core.outputs import ChatGeneration, ChatResult

    class NoStream(BaseChatModel):
        @property
        def _llm_type(self) -> str:
            return "no-stream"

        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            message = AIMessage(content="", name="bot",
                                tool_calls=[{"name": "a", "args": {"q": 1}, "id": "c1", "type": "tool_call"}],
                                invalid_tool_calls=[{"name": "b", "args": "{bad json", "id": "c2", "error": "bad",
                                                     "type": "invalid_tool_call"}])
            return ChatResult(generations=[ChatGeneration(message=message)])

    llm = RouteLLMChat(strong=NoStream(), weak=NoStream(), router=keyword_router, threshold=0.5)
    invoked, streamed = llm.invoke(EASY), merge_chunks(list(llm.stream(EASY)))
    assert streamed.tool_calls == invoked.tool_calls
    assert streamed.invalid_tool_calls == invoked.invalid_tool_calls and invoked.invalid_tool_calls[0]["id"] == "c2"
    assert streamed.name == invoked.name == "bot"


def test_route_and_token_counts_neither_count_nor_reserve_under_a_controller(strong, weak, keyword_router) -> None:
    """route() and get_num_tokens call no model: a budget must not hold back a strong call for them."""
    from langchain_routellm import RouteLLMRunnable
    from shared_core.controller import BudgetController

    budget = BudgetController(1.0, reserve=0.3, clock=lambda: 0.0)
    llm = RouteLLMChat(strong=strong, weak=weak, router=keyword_router, threshold=0.5, controller=budget)
    runnable = RouteLLMRunnable(strong=strong, weak=weak, router=keyword_router, threshold=0.5, controller=budget)
    for _ in range(4):
        assert llm.route(HARD_Q).role.value == runnable.route(HARD_Q).role.value == "strong"
        llm.get_num_tokens(HARD_Q)
        llm.get_num_tokens_from_messages([HumanMessage(HARD_Q)])
    assert budget.remaining == 1.0
    assert llm.invoke(HARD_Q).response_metadata[DECISION_KEY]["role"] == "strong"
    assert runnable.invoke(HARD_Q).response_metadata[DECISION_KEY]["role"] == "strong"
    assert budget.remaining == pytest.approx(0.4, abs=1e-9)  # the two real calls hold their reserve


@pytest.mark.parametrize("use_async", [False, True])
def test_a_batch_decision_no_call_uses_frees_its_reservation(strong, weak, keyword_router, use_async) -> None:
    """A batch decides ahead; an item a cache hit answers, or whose pinned thread overrides the
    decision, uses no strong call, so the budget must not keep holding one for it."""
    from langchain_core.caches import InMemoryCache

    from shared_core.controller import BudgetController

    budget = BudgetController(1.0, reserve=0.3, clock=lambda: 0.0)
    llm = RouteLLMChat(strong=strong, weak=weak, router=keyword_router, threshold=0.5, controller=budget,
                       cache=InMemoryCache(), pin_threads=10)
    run = (lambda items, **kw: asyncio.run(llm.abatch(items, **kw))) if use_async else llm.batch
    llm.invoke(HARD_Q)  # strong, uncharged (no ledger here): its reservation is held
    assert budget.remaining == pytest.approx(0.7, abs=1e-9)
    answers = run([HARD_Q, HARD_Q])  # both from the cache
    assert [a.content for a in answers] == [f"[strong-fake] {HARD_Q}"] * 2
    assert budget.remaining == pytest.approx(0.7, abs=1e-9)
    llm.invoke(HARD_Q + "!", config={"configurable": {"thread_id": "t"}})  # pins thread t to strong; held
    assert budget.remaining == pytest.approx(0.4, abs=1e-9)
    pinned = run([HARD_Q + " again", HARD_Q + " once more"], config={"configurable": {"thread_id": "t"}})
    assert [a.response_metadata[DECISION_KEY]["reason"] for a in pinned] == ["pinned"] * 2
    assert budget.remaining == pytest.approx(0.4, abs=1e-9)  # a pinned call takes no reservation
    run([HARD_Q + " new"])  # an item whose call used its strong decision keeps the reservation until charged
    assert budget.remaining == pytest.approx(0.1, abs=1e-9)


def test_the_cache_keeps_answers_made_with_other_settings_apart(keyword_router) -> None:
    from langchain_core.caches import InMemoryCache

    seen: list = []

    class Spy(FakeToolChatModel):
        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            seen.append(kwargs)
            return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)

    llm = RouteLLMChat(strong=Spy(), weak=Spy(), router=keyword_router, threshold=0.5, temperature=0.0,
                       cache=InMemoryCache())
    llm.invoke(EASY)
    llm.invoke(EASY)  # a cache hit
    llm.model_copy(update={"temperature": 1.0}).invoke(EASY)
    llm.model_copy(update={"max_tokens": 5}).invoke(EASY)
    assert seen == [{"temperature": 0.0}, {"temperature": 1.0}, {"temperature": 0.0, "max_tokens": 5}]


def test_the_cache_keeps_answers_of_differently_set_models_apart(keyword_router) -> None:
    """Two routers over models of the same name but other parameters share no cached answer."""
    from langchain_core.caches import InMemoryCache

    class Tuned(FakeToolChatModel):
        temperature: float = 0.0
        calls: int = 0

        @property
        def _identifying_params(self) -> dict:
            return {**super()._identifying_params, "temperature": self.temperature}

        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            self.calls += 1
            return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)

    cache = InMemoryCache()
    cold, hot = Tuned(model_name="m"), Tuned(model_name="m", temperature=1.0)
    first = RouteLLMChat(strong=cold, weak=cold, router=keyword_router, threshold=0.5, cache=cache)
    second = RouteLLMChat(strong=hot, weak=hot, router=keyword_router, threshold=0.5, cache=cache)
    first.invoke(EASY)
    first.invoke(EASY)  # a hit
    second.invoke(EASY)  # not the first router's answer: its model is set otherwise
    assert (cold.calls, hot.calls) == (1, 1)
    same = Tuned(model_name="m")  # set as the first router's model: its cached answer is reused
    RouteLLMChat(strong=same, weak=same, router=keyword_router, threshold=0.5, cache=cache).invoke(EASY)
    assert same.calls == 0
