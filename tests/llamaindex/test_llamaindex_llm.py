"""RouteLLM over LlamaIndex's mock LLMs: every entry point routes, events come once
from the chosen model, metadata holds for both models, bad settings fail early."""

from __future__ import annotations

import asyncio
import doctest
import inspect

import pytest

from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole, TextBlock
from llama_index.core.tools import FunctionTool

import llamaindex_routellm.embeddings
import llamaindex_routellm.llm
from llamaindex_routellm import DECISION_KEY, RouteLLM, to_conversation
from shared_core.attempts import AllModelsFailedError, ModelTimeoutError
from shared_core.errors import ConfigError
from shared_core.routers import Role

from li_support import HARD, KeywordRouter, NamedMockLLM

EASY_Q = "What is the capital of France?"
HARD_Q = f"Please {HARD} that there are infinitely many primes."


def _consume(result):
    """Run an entry point's result to the end: await it, iterate its stream."""

    async def _async(value):
        value = await value
        if hasattr(value, "__aiter__"):
            return [x async for x in value]
        return value

    if inspect.iscoroutine(result):
        return asyncio.run(_async(result))
    if hasattr(result, "__next__"):
        return list(result)
    return result


def _last(result):
    return result[-1] if isinstance(result, list) else result


CHAT = ["chat", "stream_chat", "achat", "astream_chat"]
COMPLETE = ["complete", "stream_complete", "acomplete", "astream_complete"]


def _call(llm, method, question):
    if method in CHAT:
        return getattr(llm, method)([ChatMessage(role="system", content="Be brief."),
                                     ChatMessage(role="user", content=question)])
    return getattr(llm, method)(question)


@pytest.mark.parametrize("method", CHAT + COMPLETE)
@pytest.mark.parametrize("question, role", [(EASY_Q, "weak"), (HARD_Q, "strong")])
def test_every_entry_point_calls_the_chosen_model_once(models, events, method, question, role):
    llm = RouteLLM(strong=models["strong"], weak=models["weak"], router=KeywordRouter(), threshold=0.5)
    assert llm.route(question).role.value == role

    routed = _last(_consume(_call(llm, method, question)))
    routed_counts, routed_models = events.counts(), events.models()
    events.clear()
    direct = _last(_consume(_call(models[role], method, question)))
    direct_counts, direct_models = events.counts(), events.models()

    # Only the chosen model ran, and it emitted exactly what it emits when called
    # directly (MockLLM's chat calls its own complete: 2 start events there, too).
    assert set(routed_models) == {f"{role}-mock"}
    assert routed_models == direct_models
    assert routed_counts == direct_counts
    assert sum(routed_counts.values()) >= 2  # a start and an end event at least
    # Same answer as the chosen model alone, with the decision recorded.
    assert str(routed) == str(direct)
    record = routed.additional_kwargs[DECISION_KEY]
    assert record["role"] == role
    assert record["model"] == f"{role}-mock"
    assert record["router"] == "keyword"
    assert record["threshold"] == pytest.approx(0.5)
    assert record["score"] == pytest.approx(0.9 if role == "strong" else 0.1)
    # The async ones run in asyncio.run's task, a copy of this context: the caller reads them too.
    assert llm.last_decision.role.value == role


def test_last_decision_is_per_context(models):
    llm = RouteLLM(strong=models["strong"], weak=models["weak"], router=KeywordRouter(), threshold=0.5)
    assert llm.last_decision is None

    async def ask(question):
        await llm.acomplete(question)
        return llm.last_decision.role.value

    async def both():
        return await asyncio.gather(ask(HARD_Q), ask(EASY_Q))

    assert asyncio.run(both()) == ["strong", "weak"]  # each task reads its own
    # The caller reads the last call made in a context copied from its own (the tasks').
    assert llm.last_decision.role.value in ("strong", "weak")
    asyncio.run(ask(HARD_Q))
    assert llm.last_decision.role.value == "strong"
    llm.complete(EASY_Q)
    assert llm.last_decision.role.value == "weak"


def test_last_decision_of_a_call_in_a_thread_started_with_a_copy_of_the_context(models):
    # LlamaIndex's streaming chat engines make the model call in such a thread.
    import contextvars
    import threading

    llm = RouteLLM(strong=models["strong"], weak=models["weak"], router=KeywordRouter(), threshold=0.5)
    llm.complete(EASY_Q)
    seen = {}

    def ask(question):
        llm.complete(question)
        seen[question] = llm.last_decision.role.value

    thread = threading.Thread(target=contextvars.copy_context().run, args=(ask, HARD_Q))
    thread.start()
    thread.join()
    assert seen == {HARD_Q: "strong"}
    assert llm.last_decision.role.value == "strong"  # before: the caller still read "weak"

    # A thread with a context of its own (no copy) does not write into the caller's.
    llm.complete(EASY_Q)
    thread = threading.Thread(target=ask, args=(HARD_Q,))
    thread.start()
    thread.join()
    assert llm.last_decision.role.value == "weak"

    # Two threads from one copied context at once: each reads its own call's decision.
    barrier = threading.Barrier(2)

    def ask_together(question):
        llm.complete(question)
        barrier.wait()
        seen[question] = llm.last_decision.role.value

    threads = [threading.Thread(target=contextvars.copy_context().run, args=(ask_together, q)) for q in (HARD_Q, EASY_Q)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {HARD_Q: "strong", EASY_Q: "weak"}


@pytest.mark.parametrize("method", ["chat", "stream_chat", "achat", "astream_chat"])
def test_every_streamed_chunk_carries_the_decision(models, method):
    llm = RouteLLM(strong=models["strong"], weak=models["weak"], router=KeywordRouter(), threshold=0.5)
    result = _consume(_call(llm, method, HARD_Q))
    chunks = result if isinstance(result, list) else [result]
    assert chunks
    assert all(c.additional_kwargs[DECISION_KEY]["role"] == "strong" for c in chunks)


def test_routes_on_the_last_user_message_not_the_system_prompt(models, events):
    router = KeywordRouter()
    llm = RouteLLM(strong=models["strong"], weak=models["weak"], router=router, threshold=0.5)
    messages = [
        ChatMessage(role="system", content=f"You {HARD} theorems for a living."),
        ChatMessage(role="user", content=HARD_Q),
        ChatMessage(role="assistant", content="Here is a proof."),
        ChatMessage(role="user", content=EASY_Q),
    ]
    llm.chat(messages)
    assert router.seen == [EASY_Q]
    assert set(events.models()) == {"weak-mock"}


def test_message_without_text_goes_to_on_no_text(models):
    image_only = [ChatMessage(role="user", blocks=[ImageBlock(image=b"\x89PNG....", image_mimetype="image/png")])]
    for target in ("strong", "weak"):
        llm = RouteLLM(strong=models["strong"], weak=models["weak"], router=KeywordRouter(),
                       threshold=0.5, on_no_text=target)
        decision = llm.route(image_only)
        assert (decision.role.value, decision.score, decision.reason) == (target, None, "no_text")


def test_to_conversation_maps_roles_and_keeps_blocks():
    messages = [
        ChatMessage(role=MessageRole.SYSTEM, content="s"),
        ChatMessage(role=MessageRole.USER, blocks=[TextBlock(text="a"), TextBlock(text="b")]),
        ChatMessage(role=MessageRole.ASSISTANT, content="c"),
        ChatMessage(role=MessageRole.TOOL, content="d"),
        ChatMessage(role=MessageRole.CHATBOT, content="e"),
        ChatMessage(role=MessageRole.DEVELOPER, content="f"),
    ]
    pairs = to_conversation(messages)
    assert [r for r, _ in pairs] == ["system", "user", "assistant", "tool", "assistant", "system"]
    assert [b.text for b in pairs[1][1]] == ["a", "b"]
    with pytest.raises(ConfigError, match="messages\\[0\\]"):
        to_conversation([{"role": "user", "content": "x"}])


# Function calling -----------------------------------------------------------

def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


TOOLS = [FunctionTool.from_defaults(fn=multiply)]
TOOL_METHODS = ["chat_with_tools", "achat_with_tools", "stream_chat_with_tools", "astream_chat_with_tools"]


def _call_tools(llm, method, question):
    return getattr(llm, method)(TOOLS, user_msg=question,
                                chat_history=[ChatMessage(role="system", content="Use tools.")])


@pytest.mark.parametrize("method", TOOL_METHODS)
@pytest.mark.parametrize("question, role", [("multiply 6 and 7", "weak"), (f"{HARD} 6 times 7 is 42", "strong")])
def test_tool_calling_entry_points(fc_models, events, method, question, role):
    llm = RouteLLM(strong=fc_models["strong"], weak=fc_models["weak"], router=KeywordRouter(), threshold=0.5)
    routed = _last(_consume(_call_tools(llm, method, question)))
    routed_counts, routed_models = events.counts(), events.models()
    events.clear()
    direct = _last(_consume(_call_tools(fc_models[role], method, question)))

    assert set(routed_models) == {f"{role}-fc"}
    assert routed_models == events.models()
    assert routed_counts == events.counts()
    assert routed.additional_kwargs[DECISION_KEY]["role"] == role

    calls = llm.get_tool_calls_from_response(routed, error_on_no_tool_call=False)
    # Parsed by the model that wrote the response, with the same result as the model alone.
    assert fc_models[role].parsed[-1] is routed
    assert fc_models["weak" if role == "strong" else "strong"].parsed == []
    expected = fc_models[role].get_tool_calls_from_response(direct, error_on_no_tool_call=False)
    assert [(c.tool_name, c.tool_kwargs) for c in calls] == [(c.tool_name, c.tool_kwargs) for c in expected]
    assert [(c.tool_name, c.tool_kwargs) for c in calls] == [("multiply", {"a": 6, "b": 7})]


@pytest.mark.parametrize("use_async", [False, True])
def test_predict_and_call_runs_the_tool_on_the_chosen_model(fc_models, events, use_async):
    llm = RouteLLM(strong=fc_models["strong"], weak=fc_models["weak"], router=KeywordRouter(), threshold=0.5)
    if use_async:
        out = asyncio.run(llm.apredict_and_call(TOOLS, user_msg="multiply 6 and 7"))
    else:
        out = llm.predict_and_call(TOOLS, user_msg="multiply 6 and 7")
    assert out.response == "42"
    assert set(events.models()) == {"weak-fc"}
    assert len(fc_models["weak"].parsed) == 1 and fc_models["strong"].parsed == []


def test_prepare_chat_with_tools_then_chat_stays_on_one_model(fc_models, events):
    llm = RouteLLM(strong=fc_models["strong"], weak=fc_models["weak"], router=KeywordRouter(), threshold=0.5)
    prepared = llm._prepare_chat_with_tools(TOOLS, user_msg=f"{HARD} 6 and 7")
    response = llm.chat(**prepared)
    assert events.models() == ["strong-fc"]
    assert llm.get_tool_calls_from_response(response)[0].tool_kwargs == {"a": 6, "b": 7}


def test_unrecorded_response_is_parsed_by_the_strong_model(fc_models):
    from llama_index.core.base.llms.types import ChatResponse

    llm = RouteLLM(strong=fc_models["strong"], weak=fc_models["weak"], router=KeywordRouter(), threshold=0.5)
    empty = ChatResponse(message=ChatMessage())  # what FunctionAgent passes for an empty stream
    assert llm.get_tool_calls_from_response(empty, error_on_no_tool_call=False) == []
    assert fc_models["strong"].parsed == [empty]


def test_tool_calling_with_a_non_function_calling_model_fails_clearly(fc_models, models):
    llm = RouteLLM(strong=fc_models["strong"], weak=models["weak"], router=KeywordRouter(), threshold=0.5)
    assert llm.metadata.is_function_calling_model is False
    with pytest.raises(ConfigError, match="weak model NamedMockLLM is not a FunctionCallingLLM"):
        llm.chat_with_tools(TOOLS, user_msg="multiply 6 and 7")
    assert llm.chat_with_tools(TOOLS, user_msg=f"{HARD} 6 and 7").additional_kwargs[DECISION_KEY]["role"] == "strong"


def test_function_agent_keeps_one_model_through_its_tool_loop(fc_models, events):
    from llama_index.core.agent.workflow import FunctionAgent

    for question, role in [("multiply 6 and 7", "weak"), (f"{HARD}: multiply 6 and 7", "strong")]:
        for streaming in (False, True):
            events.clear()
            llm = RouteLLM(strong=fc_models["strong"], weak=fc_models["weak"], router=KeywordRouter(), threshold=0.5)
            agent = FunctionAgent(tools=TOOLS, llm=llm, streaming=streaming)

            async def run():
                return await agent.run(user_msg=question)

            result = asyncio.run(run())
            assert str(result) == "The answer is 42."
            # Every LLM call of the loop (tool call, then answer) on the same model.
            assert set(events.models()) == {f"{role}-fc"}
            assert events.counts()["LLMChatEndEvent"] >= 2
            assert [c.tool_name for c in result.tool_calls] == ["multiply"]


def test_react_agent_keeps_one_model_through_its_tool_loop():
    # Before: ReAct sends the tool's output as a user message ("Observation: 12"), so the
    # step after a tool call was routed on it: a hard question's answer came from the weak model.
    from llama_index.core.agent.workflow import ReActAgent

    from li_support import ReActMockLLM

    for question, role in [("what is 3 times 4?", "weak"), (f"{HARD}: what is 3 times 4?", "strong")]:
        router = KeywordRouter()
        llm = RouteLLM(strong=ReActMockLLM(name="strong-mock", is_chat_model=True),
                       weak=ReActMockLLM(name="weak-mock", is_chat_model=True), router=router, threshold=0.5)

        async def run():
            return await ReActAgent(tools=[FunctionTool.from_defaults(fn=lambda a, b: a * b, name="multiply")],
                                    llm=llm).run(user_msg=question)

        result = asyncio.run(run())
        assert str(result) == f"[{role}-mock] done"
        assert [c.tool_output.content for c in result.tool_calls] == ["12"]
        assert router.seen == [question, question]  # both steps, on the question
    # Only the ReAct shape is a tool message: a user's own "Observation:" still routes.
    assert to_conversation([ChatMessage(role="assistant", content="Thought: hm"),
                            ChatMessage(role="user", content="Observation: prove it")])[-1][0] == "user"


# Metadata ------------------------------------------------------------------------

def test_metadata_is_what_holds_for_both(models, fc_models):
    mixed = RouteLLM(strong=fc_models["strong"], weak=models["weak"], router="random", threshold=0.5)
    meta = mixed.metadata
    assert meta.context_window == 2000  # the smaller of 8000 and 2000
    assert meta.is_function_calling_model is False  # the weak MockLLM cannot call functions
    assert meta.is_chat_model is False
    assert "strong-fc" in meta.model_name and "weak-mock" in meta.model_name

    both_fc = RouteLLM(strong=fc_models["strong"], weak=fc_models["weak"], router="random", threshold=0.5)
    assert both_fc.metadata.context_window == 4000
    assert both_fc.metadata.is_function_calling_model is True

    chat_models = RouteLLM(
        strong=NamedMockLLM(name="s", is_chat_model=True, max_tokens=100),
        weak=NamedMockLLM(name="w", is_chat_model=True, max_tokens=300),
        router="random", threshold=0.5,
    )
    assert chat_models.metadata.is_chat_model is True
    assert chat_models.metadata.num_output == 300  # reserve room for the longer answer
    one_chat = RouteLLM(strong=NamedMockLLM(is_chat_model=True), weak=NamedMockLLM(), router="random", threshold=0.5)
    assert one_chat.metadata.is_chat_model is False


# Settings ------------------------------------------------------------------------

def test_bad_settings_fail_at_construction(models):
    s, w = models["strong"], models["weak"]
    with pytest.raises(ConfigError, match="strong must be a LlamaIndex LLM"):
        RouteLLM(strong="gpt-4", weak=w, router="random", threshold=0.5)
    with pytest.raises(ConfigError, match="not both"):
        RouteLLM(strong=s, weak=w, router="random", threshold=0.5, strong_fraction=0.5)
    with pytest.raises(ConfigError, match="threshold must be in"):
        RouteLLM(strong=s, weak=w, router="random", threshold=1.5)
    with pytest.raises(ConfigError, match="unknown router 'nope'"):
        RouteLLM(strong=s, weak=w, router="nope", threshold=0.5)
    with pytest.raises(ConfigError, match="on_no_text"):
        RouteLLM(strong=s, weak=w, router="random", threshold=0.5, on_no_text="cheap")
    with pytest.raises(ConfigError, match="needs calibration prompts"):
        RouteLLM(strong=s, weak=w, router=KeywordRouter(), strong_fraction=0.3)


def test_strong_fraction_is_calibrated_on_prompts(models):
    prompts = [f"question number {i}" for i in range(200)]
    llm = RouteLLM(strong=models["strong"], weak=models["weak"], router="random",
                   strong_fraction=0.25, calibration_prompts=prompts)
    share = sum(llm.route(p).role is Role.STRONG for p in prompts) / len(prompts)
    assert share == pytest.approx(0.25, abs=0.01)


def test_model_string_carries_router_and_threshold(models):
    llm = RouteLLM(strong=models["strong"], weak=models["weak"], router="router-random-0.3")
    assert llm.engine.threshold == pytest.approx(0.3)
    assert llm.engine.router.name == "random"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # doctest's scan touches pydantic internals
def test_docstring_examples_run():
    for module in (llamaindex_routellm.llm, llamaindex_routellm.embeddings):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0
        assert result.failed == 0, module.__name__


STRUCTURED = ["structured_predict", "astructured_predict", "stream_structured_predict", "astream_structured_predict"]


@pytest.mark.parametrize("method", STRUCTURED)
@pytest.mark.parametrize("question, role", [("what is it?", "weak"), (f"{HARD} it", "strong")])
def test_structured_predict_routes_on_query_str(events, method, question, role):
    from pydantic import BaseModel

    from llama_index.core.prompts import PromptTemplate

    from li_support import NamedMockFunctionCallingLLM

    class Answer(BaseModel):
        answer: str = "forty-two"  # MockFunctionCallingLLM fills a tool call with defaults

    router = KeywordRouter()
    llm = RouteLLM(strong=NamedMockFunctionCallingLLM(name="strong-fc", parsed=[]),
                   weak=NamedMockFunctionCallingLLM(name="weak-fc", parsed=[]), router=router, threshold=0.5)
    template = PromptTemplate(f"Context: we {HARD} things here.\nQuestion: {{query_str}}")
    result = _consume(getattr(llm, method)(Answer, template, query_str=question))
    assert _last(result).answer == "forty-two"
    assert router.seen == [question]
    assert set(events.models()) == {f"{role}-fc"}


def test_copies_and_pickles_route_the_same(models):
    import copy
    import pickle

    llm = RouteLLM(strong=models["strong"], weak=models["weak"], router="random", threshold=0.5)
    for clone in (copy.deepcopy(llm), pickle.loads(pickle.dumps(llm))):
        for q in (EASY_Q, HARD_Q, "third question"):
            assert clone.route(q) == llm.route(q)


# Fallback ------------------------------------------------------------------------

@pytest.mark.parametrize("method", CHAT + COMPLETE)
def test_without_fallback_the_chosen_models_error_propagates(models, method):
    from li_support import FailingMockLLM

    llm = RouteLLM(strong=FailingMockLLM(name="strong-down"), weak=models["weak"], router=KeywordRouter(),
                   threshold=0.5)
    with pytest.raises(ConnectionError, match="strong-down is down"):
        _consume(_call(llm, method, HARD_Q))


@pytest.mark.parametrize("method", CHAT + COMPLETE)
def test_fallback_answers_with_the_other_model_and_says_so(models, events, method):
    from li_support import FailingMockLLM

    llm = RouteLLM(strong=FailingMockLLM(name="strong-down"), weak=models["weak"], router=KeywordRouter(),
                   threshold=0.5, fallback=True)
    result = _consume(_call(llm, method, HARD_Q))
    record = _last(result).additional_kwargs[DECISION_KEY]
    assert record["role"] == "weak" and record["model"] == "weak-mock"
    assert record["score"] == pytest.approx(0.9)  # the router still chose strong
    assert record["fallback"] == {"from": "strong", "model": "strong-down", "error": "ConnectionError: strong-down is down"}
    assert record["failures"] == [{"role": "strong", "model": "strong-down", "error": "ConnectionError: strong-down is down"}]
    assert HARD_Q in str(_last(result))
    assert events.models()[0] == "strong-down" and events.models()[-1] == "weak-mock"
    # A model that works is not retried: the record says no fallback.
    ok = _last(_consume(_call(llm, method, EASY_Q))).additional_kwargs[DECISION_KEY]
    assert (ok["role"], ok["fallback"]) == ("weak", None)


@pytest.mark.parametrize("method", CHAT + COMPLETE)
def test_a_failed_strong_call_frees_its_budget_reservation(models, method):
    # Before: the reservation held for the strong answer stayed until the period ended (never charged).
    from shared_core.controller import BudgetController

    from li_support import FailingMockLLM

    budget = BudgetController(1.0, reserve=0.3, clock=lambda: 0.0)
    llm = RouteLLM(strong=FailingMockLLM(name="strong-down"), weak=models["weak"], router=KeywordRouter(),
                   threshold=0.5, fallback=True, controller=budget)
    for _ in range(4):  # more than the budget's room for three reservations
        assert _last(_consume(_call(llm, method, HARD_Q))).additional_kwargs[DECISION_KEY]["model"] == "weak-mock"
        assert budget.remaining == 1.0
    answered = RouteLLM(strong=models["strong"], weak=models["weak"], router=KeywordRouter(), threshold=0.5,
                        controller=budget)
    _consume(_call(answered, method, HARD_Q))  # answered, not charged (no ledger here): its reservation stays
    assert budget.remaining == pytest.approx(0.7, abs=1e-9)


@pytest.mark.parametrize("method", ["stream_complete", "astream_complete", "stream_chat", "astream_chat"])
def test_a_stream_that_fails_after_its_first_chunk_does_not_fall_back(models, method):
    from li_support import FailingMockLLM

    strong = FailingMockLLM(name="strong-down")
    strong.fail_after_first_chunk = True
    llm = RouteLLM(strong=strong, weak=models["weak"], router=KeywordRouter(), threshold=0.5, fallback=True)
    with pytest.raises(ConnectionError, match="strong-down is down"):
        _consume(_call(llm, method, HARD_Q))


@pytest.mark.parametrize("use_async", [False, True])
def test_fallback_in_a_query_engine_template_call(models, use_async):
    from llama_index.core.prompts import PromptTemplate

    from li_support import FailingMockLLM

    llm = RouteLLM(strong=FailingMockLLM(name="strong-down"), weak=models["weak"], router=KeywordRouter(),
                   threshold=0.5, fallback=True)
    prompt = PromptTemplate("Context: {context_str}\nQuestion: {query_str}")
    args = {"context_str": "notes", "query_str": HARD_Q}
    out = asyncio.run(llm.apredict(prompt, **args)) if use_async else llm.predict(prompt, **args)
    assert out == f"Context: notes\nQuestion: {HARD_Q}"
    if not use_async:  # asyncio.run keeps its context to itself
        assert llm.last_decision.role is Role.STRONG  # the router's decision, before the fallback


def test_fallback_must_be_a_bool(models):
    with pytest.raises(ConfigError, match="fallback must be True or False"):
        RouteLLM(strong=models["strong"], weak=models["weak"], router="random", threshold=0.5, fallback="yes")


# The attempt loop: which errors fall back, one error when all fail, timeouts -----------

@pytest.mark.parametrize("method", CHAT + COMPLETE)
def test_a_programming_error_does_not_fall_back(models, method):
    # Before: every Exception fell back, so a bug in the call hid behind the other model's answer.
    from li_support import FailingMockLLM

    llm = RouteLLM(strong=FailingMockLLM(name="strong-bug", error=TypeError("bad kwarg")), weak=models["weak"],
                   router=KeywordRouter(), threshold=0.5, fallback=True)
    with pytest.raises(TypeError, match="bad kwarg"):
        _consume(_call(llm, method, HARD_Q))


@pytest.mark.parametrize("method", CHAT + COMPLETE)
def test_when_both_fail_one_error_carries_both(method):
    # Before: only the weak model's error survived, with no trace of the strong one's.
    from li_support import FailingMockLLM

    llm = RouteLLM(strong=FailingMockLLM(name="strong-down"), weak=FailingMockLLM(name="weak-down"),
                   router=KeywordRouter(), threshold=0.5, fallback=True)
    with pytest.raises(AllModelsFailedError) as info:
        _consume(_call(llm, method, HARD_Q))
    assert [(f.role, f.model, str(f.error)) for f in info.value.errors] == [
        (Role.STRONG, "strong-down", "strong-down is down"), (Role.WEAK, "weak-down", "weak-down is down")]
    assert info.value.__cause__ is info.value.errors[-1].error


def test_fallback_on_chooses_the_errors(models):
    from li_support import FailingMockLLM

    llm = RouteLLM(strong=FailingMockLLM(name="strong-odd", error=KeyError("odd")), weak=models["weak"],
                   router=KeywordRouter(), threshold=0.5, fallback=True, fallback_on=[KeyError])
    assert llm.complete(HARD_Q).additional_kwargs[DECISION_KEY]["model"] == "weak-mock"


@pytest.mark.parametrize("method", CHAT + COMPLETE)
def test_timeout_is_a_setting_and_falls_back(models, method):
    # Before: RouteLLM(timeout=...) was silently accepted and did nothing.
    from li_support import SlowMockLLM

    llm = RouteLLM(strong=SlowMockLLM(name="strong-slow", delay=1.0), weak=models["weak"], router=KeywordRouter(),
                   threshold=0.5, fallback=True, timeout=0.05)
    record = _last(_consume(_call(llm, method, HARD_Q))).additional_kwargs[DECISION_KEY]
    assert record["model"] == "weak-mock"
    assert record["failures"] == [{"role": "strong", "model": "strong-slow",
                                   "error": "ModelTimeoutError: the strong model 'strong-slow' gave no "
                                            + ("first chunk" if "stream" in method else "answer")
                                            + " within timeout=0.05 s"}]
    without = llm.model_copy(update={"fallback": False})
    with pytest.raises(ModelTimeoutError, match="strong-slow"):
        _consume(_call(without, method, HARD_Q))


@pytest.mark.parametrize("method", ["complete", "stream_complete", "acomplete", "astream_complete", "chat"])
def test_timeout_per_call(models, method):
    from li_support import SlowMockLLM

    llm = RouteLLM(strong=SlowMockLLM(name="strong-slow", delay=1.0), weak=models["weak"], router=KeywordRouter(),
                   threshold=0.5)
    question = [ChatMessage(role="user", content=HARD_Q)] if method == "chat" else HARD_Q
    with pytest.raises(ModelTimeoutError, match="timeout=0.05 s"):
        _consume(getattr(llm, method)(question, timeout=0.05))
    with pytest.raises(ConfigError, match="timeout must be a positive number"):
        _consume(getattr(llm, method)(question, timeout=-1))


# Settings: one model, validated once; later changes take effect -----------------------

def test_unknown_keyword_arguments_are_refused(models):
    # Before: silently accepted and ignored.
    with pytest.raises(ConfigError, match=r"unknown keyword argument\(s\) 'temprature'"):
        RouteLLM(strong=models["strong"], weak=models["weak"], router="random", threshold=0.5, temprature=0.2)


def test_calibration_prompts_must_not_be_one_string(models):
    # Before: the string was split into its characters and calibrated on them.
    with pytest.raises(ConfigError, match="calibration_prompts must be a list of strings, got a single string"):
        RouteLLM(strong=models["strong"], weak=models["weak"], router="random", strong_fraction=0.5,
                 calibration_prompts="What is 2 + 2?")


def test_setting_a_field_later_takes_effect(models):
    # Before: llm.threshold = ... changed the field and not the routing.
    llm = RouteLLM(strong=models["strong"], weak=models["weak"], router=KeywordRouter(), threshold=0.5)
    assert llm.complete(HARD_Q).additional_kwargs[DECISION_KEY]["role"] == "strong"
    llm.threshold = 0.95
    assert llm.engine.threshold == 0.95
    assert llm.complete(HARD_Q).additional_kwargs[DECISION_KEY]["role"] == "weak"
    copy = llm.model_copy(update={"threshold": 0.5})
    assert copy.route(HARD_Q).role is Role.STRONG and llm.route(HARD_Q).role is Role.WEAK
    with pytest.raises(ConfigError, match="on_no_text must be 'strong' or 'weak'"):
        llm.on_no_text = "cheap"
    with pytest.raises(ConfigError, match="not both"):
        llm.strong_fraction = 0.3
    assert (llm.on_no_text, llm.strong_fraction, llm.engine.threshold) == ("strong", None, 0.95)  # unchanged



def test_a_model_set_later_is_checked_as_at_construction(models):
    # Before: llm.strong = 5 was accepted and the next strong call raised AttributeError.
    llm = RouteLLM(strong=models["strong"], weak=models["weak"], router=KeywordRouter(), threshold=0.5)
    with pytest.raises(ConfigError, match="strong must be a LlamaIndex LLM, got int: 5"):
        llm.strong = 5
    with pytest.raises(ConfigError, match="weak must be a LlamaIndex LLM, got str: 'gpt-4o-mini'"):
        llm.weak = "gpt-4o-mini"
    assert (llm.strong, llm.weak) == (models["strong"], models["weak"])  # unchanged
    other = NamedMockLLM(name="other-mock")
    llm.weak = other
    assert llm.complete(EASY_Q).additional_kwargs[DECISION_KEY]["model"] == "other-mock"

@pytest.mark.slow  # loads the shipped default router
def test_copies_and_pickles_work_with_the_shipped_default_router(models):
    # Before: pickle.dumps(llm) raised "cannot pickle '_thread.lock' object".
    import copy
    import pickle

    llm = RouteLLM(strong=models["strong"], weak=models["weak"], threshold=0.5)
    for clone in (copy.deepcopy(llm), pickle.loads(pickle.dumps(llm))):
        assert clone.route(HARD_Q) == llm.route(HARD_Q) and clone.route(EASY_Q) == llm.route(EASY_Q)
        assert clone.complete(EASY_Q).additional_kwargs[DECISION_KEY]["score"] == pytest.approx(
            llm.route(EASY_Q).score, abs=1e-9)


def test_the_models_callback_managers_are_left_alone(models):
    # Before: setting RouteLLM's callback_manager overwrote both models' managers.
    from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler

    mine, engines = LlamaDebugHandler(), LlamaDebugHandler()
    strong = NamedMockLLM(name="strong-mock", callback_manager=CallbackManager([mine]))
    llm = RouteLLM(strong=strong, weak=models["weak"], router=KeywordRouter(), threshold=0.5)
    llm.callback_manager = CallbackManager([engines])
    assert llm.complete(HARD_Q).text == HARD_Q
    assert strong.callback_manager.handlers == [mine]
    assert len(mine.get_event_pairs(CBEventType.LLM)) == 1 and len(engines.get_event_pairs(CBEventType.LLM)) == 1


@pytest.mark.parametrize("setting, value", [
    ("system_prompt", "Answer in one word."),
    ("query_wrapper_prompt", "[wrapped] {query_str}"),
    ("messages_to_prompt", lambda messages: " | ".join(f"{m.role.value}> {m.content}" for m in messages)),
    ("completion_to_prompt", lambda prompt: f"<s>{prompt}</s>"),
])
def test_prompt_settings_given_to_route_llm_apply_as_on_the_chosen_model(setting, value):
    # Before: RouteLLM accepted LlamaIndex's LLM prompt settings and dropped them.
    from llama_index.core.prompts import PromptTemplate

    value = PromptTemplate(value) if setting == "query_wrapper_prompt" else value
    strong, weak = NamedMockLLM(name="strong-mock"), NamedMockLLM(name="weak-mock")
    llm = RouteLLM(strong=strong, weak=weak, router=KeywordRouter(), threshold=0.5, **{setting: value})
    direct = NamedMockLLM(name="weak-mock")
    setattr(direct, setting, value)  # MockLLM's constructor takes only some of them
    template, messages = PromptTemplate("Q: {query_str}"), [ChatMessage(role="user", content=EASY_Q)]

    def answers(model):
        return [model.predict(template, query_str=EASY_Q), model.chat(messages).message.content,
                asyncio.run(model.achat(messages)).message.content, "".join(model.stream(template, query_str=EASY_Q))]

    assert answers(llm) == answers(direct)
    assert answers(llm) != answers(weak)
    assert getattr(weak, setting) == getattr(NamedMockLLM(), setting)  # the user's model is not changed
    assert llm.last_decision.role is Role.WEAK


def test_what_is_not_messages_or_a_template_fails_before_any_model_is_called(models, events):
    # Before: TypeError / AttributeError from deep inside, or (an iterator) the model got it empty.
    llm = RouteLLM(strong=models["strong"], weak=models["weak"], router=KeywordRouter(), threshold=0.5)
    message = ChatMessage(role="user", content=EASY_Q)
    cases = [
        (lambda: llm.chat(None), r"messages must be a list of llama_index ChatMessage, got NoneType: None"),
        (lambda: llm.chat(EASY_Q), r"messages must be a list .*got str: 'What is the capital"),
        (lambda: llm.stream_chat(iter([message])), r"messages must be a list .*got list_iterator"),
        (lambda: asyncio.run(llm.achat(m for m in [message])), r"messages must be a list .*got generator"),
        (lambda: llm.route(42), r"prompt must be a string or a list of llama_index ChatMessage, got int: 42"),
        (lambda: llm.predict("What is {x}?", x="1"), r"prompt must be a llama_index prompt template .*got str"),
        (lambda: asyncio.run(llm.astructured_predict(dict, "Name {x}", x="1")), r"prompt must be a llama_index"),
    ]
    for call, message_pattern in cases:
        with pytest.raises(ConfigError, match=message_pattern):
            call()
    assert events.models() == []


def test_tool_call_arguments_that_are_not_messages_fail_clearly(fc_models, events):
    llm = RouteLLM(strong=fc_models["strong"], weak=fc_models["weak"], router=KeywordRouter(), threshold=0.5)
    with pytest.raises(ConfigError, match=r"chat_history must be a list .*got generator"):
        llm.chat_with_tools(TOOLS, user_msg="multiply 6 and 7", chat_history=(m for m in []))
    with pytest.raises(ConfigError, match=r"user_msg must be a string, a llama_index ChatMessage or None, got int: 6"):
        llm.chat_with_tools(TOOLS, user_msg=6)
    assert events.models() == []


def test_each_copy_reports_its_own_last_decision(models):
    # Before: copies shared the original's key, so each reported the other's last decision.
    import copy
    import pickle

    llm = RouteLLM(strong=models["strong"], weak=models["weak"], router=KeywordRouter(), threshold=0.5)
    copies = [llm.model_copy(update={"threshold": 0.95}), llm.model_copy(deep=True), copy.copy(llm),
              copy.deepcopy(llm), pickle.loads(pickle.dumps(llm))]
    llm.complete(HARD_Q)
    assert llm.last_decision.role is Role.STRONG
    assert [c.last_decision for c in copies] == [None] * len(copies)
    copies[0].complete(HARD_Q)
    assert (copies[0].last_decision.role, copies[0].last_decision.threshold) == (Role.WEAK, 0.95)
    assert (llm.last_decision.role, llm.last_decision.threshold) == (Role.STRONG, 0.5)


def test_an_empty_message_list_is_refused_before_any_model_is_called(models, fc_models, events):
    # Before: routed as 'no_user_message' and sent to the strong model as an empty request
    # (RouteLLMChat refuses it too).
    for llm in (RouteLLM(strong=models["strong"], weak=models["weak"], router=KeywordRouter(), threshold=0.5),
                RouteLLM(strong=fc_models["strong"], weak=fc_models["weak"], router=KeywordRouter(), threshold=0.5)):
        calls = [lambda: llm.chat([]), lambda: llm.stream_chat([]), lambda: asyncio.run(llm.achat([])),
                 lambda: asyncio.run(llm.astream_chat([])), lambda: llm.route([])]
        if isinstance(llm.strong, type(fc_models["strong"])):
            calls.append(lambda: llm.chat_with_tools(TOOLS, user_msg=None, chat_history=[]))
        for call in calls:
            with pytest.raises(ConfigError, match="RouteLLM got an empty list of messages"):
                call()
    assert events.models() == []
