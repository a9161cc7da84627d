"""The routing settings both LangChain wrappers share (shared_core.settings), and
the attempt loop's timeouts and errors on every entry point."""

from __future__ import annotations

import asyncio
import copy
import pickle

import pytest
from langchain_core.runnables import RunnableLambda

from langchain_routellm import DECISION_KEY, RouteLLMChat, RouteLLMRunnable
from langchain_routellm.testing import FakeToolChatModel
from lc_support import HARD, ChainMeta, KeywordRouter, merge_chunks
from shared_core.attempts import AllModelsFailedError, ModelTimeoutError
from shared_core.errors import ConfigError
from shared_core.routers import Role

HARD_Q = f"Please {HARD} that there are infinitely many primes."
EASY_Q = "What is the capital of France?"
WRAPPERS = [RouteLLMChat, RouteLLMRunnable]
ENTRY_POINTS = ["invoke", "ainvoke", "stream", "astream", "batch", "abatch"]


async def _acollect(stream):
    return [chunk async for chunk in stream]


def _call(llm, entry, prompt, **kwargs):
    if entry == "invoke":
        return llm.invoke(prompt, **kwargs)
    if entry == "ainvoke":
        return asyncio.run(llm.ainvoke(prompt, **kwargs))
    if entry == "stream":
        return merge_chunks(list(llm.stream(prompt, **kwargs)))
    if entry == "astream":
        return merge_chunks(asyncio.run(_acollect(llm.astream(prompt, **kwargs))))
    if entry == "batch":
        return llm.batch([prompt], **kwargs)[0]
    return asyncio.run(llm.abatch([prompt], **kwargs))[0]


def _make(cls, strong=None, weak=None, **settings):
    strong = strong or FakeToolChatModel(model_name="strong-fake")
    weak = weak or FakeToolChatModel(model_name="weak-fake")
    return cls(strong=strong, weak=weak, **{"router": KeywordRouter(), "threshold": 0.5, **settings})


# Settings ---------------------------------------------------------------------------
@pytest.mark.parametrize("cls", WRAPPERS)
def test_setting_a_field_later_takes_effect(cls):
    # Before: llm.threshold = 0.95 changed the field and not the routing.
    llm = _make(cls)
    assert llm.invoke(HARD_Q).response_metadata[DECISION_KEY]["role"] == "strong"
    llm.threshold = 0.95
    assert llm.engine.threshold == 0.95
    assert llm.invoke(HARD_Q).response_metadata[DECISION_KEY]["role"] == "weak"
    llm.on_no_text = "weak"
    assert llm.engine.on_no_text is Role.WEAK


@pytest.mark.parametrize("cls", WRAPPERS)
def test_model_copy_update_takes_effect(cls):
    # Before: model_copy(update={"threshold": ...}) kept the original engine.
    llm = _make(cls)
    stricter = llm.model_copy(update={"threshold": 0.95})
    assert stricter.route(HARD_Q).role is Role.WEAK and llm.route(HARD_Q).role is Role.STRONG
    assert stricter.threshold == 0.95 and llm.threshold == 0.5
    with pytest.raises(ConfigError, match="threshold must be in"):
        llm.model_copy(update={"threshold": 3})


@pytest.mark.parametrize("cls", WRAPPERS)
def test_a_bad_later_value_raises_and_changes_nothing(cls):
    llm = _make(cls)
    with pytest.raises(ConfigError, match="threshold must be in"):
        llm.threshold = 1.5
    with pytest.raises(ConfigError, match="not both"):
        llm.strong_fraction = 0.3
    with pytest.raises(ConfigError, match="fallback must be True or False"):
        llm.fallback = "yes"
    assert (llm.threshold, llm.strong_fraction, llm.fallback, llm.engine.threshold) == (0.5, None, False, 0.5)


@pytest.mark.parametrize("cls", WRAPPERS)
def test_calibration_prompts_must_not_be_one_string(cls):
    # Before: "one string" was split into characters and calibrated on them.
    with pytest.raises(ConfigError, match="calibration_prompts must be a list of strings, got a single string"):
        _make(cls, router="random", threshold=None, strong_fraction=0.5, calibration_prompts="What is 2 + 2?")


@pytest.mark.parametrize("cls", WRAPPERS)
def test_copies_and_pickles_with_a_router_object(cls):
    llm = _make(cls)
    for clone in (copy.deepcopy(llm), pickle.loads(pickle.dumps(llm))):
        assert clone.route(HARD_Q) == llm.route(HARD_Q) and clone.route(EASY_Q) == llm.route(EASY_Q)
        clone.threshold = 0.95
        assert clone.route(HARD_Q).role is Role.WEAK and llm.route(HARD_Q).role is Role.STRONG


@pytest.mark.slow  # loads the shipped default router
@pytest.mark.parametrize("cls", WRAPPERS)
def test_copies_and_pickles_with_the_shipped_default_router(cls):
    # Before: pickle.dumps raised "cannot pickle '_thread.lock' object" (and deepcopy with it).
    llm = _make(cls, router=None)
    for clone in (copy.deepcopy(llm), pickle.loads(pickle.dumps(llm))):
        for q in (HARD_Q, EASY_Q):
            assert clone.route(q) == llm.route(q)
        assert clone.invoke(EASY_Q).response_metadata[DECISION_KEY]["score"] == pytest.approx(
            llm.route(EASY_Q).score, abs=1e-9)


# Which errors fall back; one error when all fail --------------------------------------
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_runnable_fallback_only_on_provider_errors(entry):
    def bug(_):
        raise TypeError("bad kwarg")

    def down(_):
        raise ConnectionError("rag is down")

    llm = RouteLLMRunnable(strong=RunnableLambda(bug, name="rag"), weak=RunnableLambda(lambda x: "direct"),
                           router=KeywordRouter(), threshold=0.5, fallback=True)
    with pytest.raises(TypeError, match="bad kwarg"):  # before: the bug fell back and was hidden
        _call(llm, entry, HARD_Q)
    both_down = llm.model_copy(update={"strong": RunnableLambda(down, name="rag"),
                                       "weak": RunnableLambda(down, name="direct")})
    with pytest.raises(AllModelsFailedError) as info:  # before: only the last error survived
        _call(both_down, entry, HARD_Q)
    assert [(f.role, f.model) for f in info.value.errors] == [(Role.STRONG, "rag"), (Role.WEAK, "direct")]


# Timeouts -------------------------------------------------------------------------------
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_chat_timeout_falls_back_and_is_recorded(entry):
    llm = _make(RouteLLMChat, strong=FakeToolChatModel(model_name="strong-slow", delay=0.5), fallback=True,
                timeout=0.05)
    record = _call(llm, entry, HARD_Q).response_metadata[DECISION_KEY]
    what = "first chunk" if "stream" in entry else "answer"
    assert record["model"] == "weak-fake"
    assert record["failures"] == [{"role": "strong", "model": "strong-slow", "error":
                                   f"ModelTimeoutError: the strong model 'strong-slow' gave no {what} within "
                                   "timeout=0.05 s"}]
    with pytest.raises(ModelTimeoutError, match="strong-slow"):
        _call(llm.model_copy(update={"fallback": False}), entry, HARD_Q)


@pytest.mark.parametrize("entry", ["invoke", "ainvoke", "stream", "astream"])
@pytest.mark.parametrize("cls", WRAPPERS)
def test_timeout_per_call(cls, entry):
    llm = _make(cls, strong=FakeToolChatModel(model_name="strong-slow", delay=0.5))
    with pytest.raises(ModelTimeoutError, match="timeout=0.05 s"):
        _call(llm, entry, HARD_Q, timeout=0.05)
    with pytest.raises(ConfigError, match="timeout must be a positive number"):
        _call(llm, entry, EASY_Q, timeout=0)
    assert _call(llm, entry, EASY_Q, timeout=5).content == f"[weak-fake] {EASY_Q}"  # the timeout is not passed on


def test_runnable_timeout_is_recorded_in_the_fallback_child_run():
    import time

    slow = RunnableLambda(lambda x: time.sleep(1.0) or "rag", name="rag")
    llm = RouteLLMRunnable(strong=slow, weak=RunnableLambda(lambda x: "direct", name="direct"),
                           router=KeywordRouter(), threshold=0.5, fallback=True, timeout=0.05)
    handler = ChainMeta()
    assert llm.invoke(HARD_Q, {"callbacks": [handler]}) == "direct"
    assert handler.records[-1]["fallback"]["error"].startswith("ModelTimeoutError: the strong model 'rag'")


@pytest.mark.slow  # loads the shipped default router
def test_pickles_with_the_shipped_router_passed_as_an_object():
    from shared_core.engine import resolve_router

    llm = _make(RouteLLMChat, router=resolve_router(None))
    clone = pickle.loads(pickle.dumps(llm))
    assert clone.route(EASY_Q).score == pytest.approx(llm.route(EASY_Q).score, abs=1e-6)
