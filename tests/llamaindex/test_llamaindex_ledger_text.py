"""The LlamaIndex ledger for calls that return plain text or objects: ``predict``, ``apredict``,
``stream``, ``astream`` (a query engine's calls) and the structured predictions. They have no
response to carry the decision; RouteLLM watches their attempts while a LedgerHandler is attached
and dispatches a RoutedCallEvent, which the handler records with the answering model's usage."""

from __future__ import annotations

import asyncio
import inspect
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.llms.types import ChatMessage, ChatResponse
from llama_index.core.llms.callbacks import llm_chat_callback
from llama_index.core.prompts import PromptTemplate
from pydantic import BaseModel

from li_support import (
    HARD,
    FailingMockLLM,
    KeywordRouter,
    NamedMockFunctionCallingLLM,
    NamedMockLLM,
    StreamsWithUsage,
    UsageMockLLM,
    WithUsage,
    mock_answer,
)
from llamaindex_routellm import LedgerHandler, LocalEmbedding, RouteLLM
from shared_core.embeddings import HashEmbedder
from shared_core.ledger import UsageError

PRICES = {"strong-m": (10.0, 30.0), "weak-m": (0.5, 1.5)}
PROMPT = PromptTemplate("Context: we {context_str} here.\nQuestion: {query_str}")
EASY, HARD_Q = "what is one plus one?", f"how do we {HARD} it?"
TEXT = ["predict", "apredict", "stream", "astream"]
STRUCTURED = ["structured_predict", "astructured_predict", "stream_structured_predict", "astream_structured_predict"]


def consume(result: Any) -> Any:
    """Run an entry point's result to the end: await it, join or collect its stream."""

    async def run(value):
        value = await value
        return [x async for x in value] if hasattr(value, "__aiter__") else value

    if hasattr(result, "__next__"):
        result = list(result)
    elif inspect.isawaitable(result):
        result = asyncio.run(run(result))
    return "".join(result) if isinstance(result, list) and all(isinstance(x, str) for x in result) else result


def args(question: str) -> dict[str, str]:
    return {"context_str": f"{HARD} things", "query_str": question}


def routed(strong: Any = None, weak: Any = None, chat_models: bool = True, **kwargs: Any) -> RouteLLM:
    return RouteLLM(strong=strong or UsageMockLLM(name="strong-m", is_chat_model=chat_models),
                    weak=weak or UsageMockLLM(name="weak-m", is_chat_model=chat_models),
                    router=KeywordRouter(), threshold=0.5, **kwargs)


def expected_usage(model: Any, question: str) -> tuple[int, int]:
    """What a UsageMockLLM reports for PROMPT: its own rule on what its predict sends
    (the formatted messages to a chat model, the formatted prompt to a completion one)."""
    if model.metadata.is_chat_model:
        messages = PROMPT.format_messages(llm=model, **args(question))
    else:
        messages = [ChatMessage(role="user", content=PROMPT.format(llm=model, **args(question)))]
    usage = mock_answer(model.name, messages)[1]
    return usage["prompt_tokens"], usage["completion_tokens"]


@pytest.fixture
def handler():
    with LedgerHandler(prices=PRICES, strong_model="strong-m") as h:
        yield h


# Each entry point ---------------------------------------------------------------------------
@pytest.mark.parametrize("timeout", [None, 30.0])  # with a timeout, each attempt runs in a worker thread
@pytest.mark.parametrize("chat_models", [True, False])
@pytest.mark.parametrize("method", TEXT)
@pytest.mark.parametrize("question, role", [(EASY, "weak"), (HARD_Q, "strong")])
def test_text_calls_are_recorded_with_the_answering_models_usage(method, chat_models, timeout, question, role):
    llm = routed(chat_models=chat_models, timeout=timeout)
    direct = consume(getattr(getattr(llm, role), method)(PROMPT, **args(question)))
    with LedgerHandler(prices=PRICES, strong_model="strong-m") as handler:
        answer = consume(getattr(llm, method)(PROMPT, **args(question)))
    assert answer == direct and answer.startswith(f"[{role}-m] ")  # nothing the caller gets changes
    [call] = handler.ledger.calls
    assert (call.role, call.model) == (role, f"{role}-m")
    assert (call.input_tokens, call.output_tokens) == expected_usage(getattr(llm, role), question)
    assert call.score == pytest.approx(llm.route(question).score, abs=1e-12)  # routed on the question
    assert call.rejected == () and handler.errors == []


class Answer(BaseModel):
    answer: str = "forty-two"  # MockFunctionCallingLLM fills a tool call with defaults


def _fc_usage(name: str, messages: Sequence[ChatMessage]) -> dict[str, int]:
    return {"prompt_tokens": sum(len((m.content or "").split()) for m in messages), "completion_tokens": len(name)}


class UsageFCLLM(NamedMockFunctionCallingLLM):
    """A function-calling mock whose responses report usage; each of its calls makes a nested
    call to MockFunctionCallingLLM's own (instrumented, no usage): only the outer one counts."""

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        inner = super().chat(messages, **kwargs)
        return ChatResponse(message=inner.message, raw={"usage": _fc_usage(self.name, messages)})

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any):
        inner = super().stream_chat(messages, **kwargs)

        def gen():
            chunks = list(inner)
            for i, c in enumerate(chunks):
                last = i == len(chunks) - 1
                yield ChatResponse(message=c.message, delta=c.delta,
                                   raw={"usage": _fc_usage(self.name, messages)} if last else None)

        return gen()

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any):
        inner = await super().astream_chat(messages, **kwargs)

        async def gen():
            chunks = [c async for c in inner]
            for i, c in enumerate(chunks):
                last = i == len(chunks) - 1
                yield ChatResponse(message=c.message, delta=c.delta,
                                   raw={"usage": _fc_usage(self.name, messages)} if last else None)

        return gen()


@pytest.mark.parametrize("method", STRUCTURED)
@pytest.mark.parametrize("question, role", [(EASY, "weak"), (HARD_Q, "strong")])
def test_structured_predictions_are_recorded(handler, events, method, question, role):
    llm = routed(UsageFCLLM(name="strong-m", parsed=[]), UsageFCLLM(name="weak-m", parsed=[]))
    result = consume(getattr(llm, method)(Answer, PROMPT, **args(question)))
    assert (result[-1] if isinstance(result, list) else result) == Answer()
    [call] = handler.ledger.calls
    assert (call.role, call.model) == (role, f"{role}-m")
    # The messages the chosen model's outer call got (its first chat start event; the nested one
    # gets the same), priced by its own rule:
    sent = next(e.messages for e in events.events if e.class_name() == "LLMChatStartEvent")
    usage = _fc_usage(f"{role}-m", sent)
    assert (call.input_tokens, call.output_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert handler.errors == []


# A query engine ---------------------------------------------------------------------------
DOCS = ["Office hours are on Tuesdays at 10:00 in room 4.", f"In lecture 2 we {HARD} Fermat's little theorem."]


@pytest.fixture(scope="module")
def index():
    return VectorStoreIndex.from_documents([Document(text=t) for t in DOCS],
                                           embed_model=LocalEmbedding(HashEmbedder(dim=64)))


def _sent_usage(events: Any) -> list[tuple[str, int, int]]:
    """(model, input, output) a UsageMockLLM reports for each chat it answered, by its own rule on
    the messages of that chat's start event. Its async forms hand the sync ones' answer on (two
    end events, one response): one chat."""
    starts = {e.span_id: e for e in events.events if e.class_name() == "LLMChatStartEvent"}
    answered = {id(e.response): starts[e.span_id] for e in events.events if e.class_name() == "LLMChatEndEvent"}
    sent = []
    for start in answered.values():
        name = start.model_dict.get("model_name")
        if name in PRICES:
            usage = mock_answer(name, start.messages)[1]
            sent.append((name, usage["prompt_tokens"], usage["completion_tokens"]))
    return sent


@pytest.mark.parametrize("mode", ["query", "aquery", "stream", "astream"])
@pytest.mark.parametrize("response_mode", ["compact", "refine"])
@pytest.mark.parametrize("question, role", [("When are the office hours?", "weak"),
                                            (f"How do we {HARD} the theorem?", "strong")])
def test_query_engine_answers_are_recorded(index, events, handler, mode, response_mode, question, role):
    llm = routed()
    engine = index.as_query_engine(llm=llm, similarity_top_k=2, response_mode=response_mode,
                                   streaming=mode in ("stream", "astream"))

    async def aquery():
        response = await engine.aquery(question)
        if mode == "astream":
            return "".join([t async for t in response.async_response_gen()])
        return str(response)

    if mode == "query":
        answer = str(engine.query(question))
    elif mode == "stream":
        answer = "".join(engine.query(question).response_gen)
    else:
        answer = asyncio.run(aquery())
    assert answer.startswith(f"[{role}-m] ")
    sent = _sent_usage(events)
    # One routed call a chat the chosen model was sent (refine: one a retrieved chunk), its own usage.
    calls = handler.ledger.calls
    assert len(calls) >= 1 and {(c.role, c.model) for c in calls} == {(role, f"{role}-m")}
    assert Counter((c.model, c.input_tokens, c.output_tokens) for c in calls) == Counter(sent)
    assert handler.errors == []


# Escalation -------------------------------------------------------------------------------
WEAK_PRICE = (5 * 0.5 + 2 * 1.5) / 1e6  # the rejected weak answer, at the weak model's prices


@pytest.mark.parametrize("method", TEXT)
def test_a_rejected_weak_answer_is_priced_once_with_the_strongmock_answer(handler, method):
    strong = UsageMockLLM(name="strong-m")
    llm = routed(strong, StreamsWithUsage(name="weak-m", answer=""), escalate_on=["empty"])
    answer = consume(getattr(llm, method)(PROMPT, **args(EASY)))
    assert answer.startswith("[strong-m] ")
    [call] = handler.ledger.calls
    assert (call.role, call.rejected) == ("strong", ("weak-m",))
    n_in, n_out = expected_usage(strong, EASY)
    assert (call.input_tokens, call.output_tokens) == (n_in, n_out)
    assert call.rejected_cost == pytest.approx(WEAK_PRICE, abs=1e-15)
    assert call.strong_cost == pytest.approx((n_in * 10.0 + n_out * 30.0) / 1e6, abs=1e-15)
    assert call.cost == pytest.approx(call.strong_cost + WEAK_PRICE, abs=1e-15)
    assert handler.ledger.unanswered == [] and handler.errors == []


@pytest.mark.parametrize("method", TEXT)
def test_when_the_escalation_fails_the_rejected_answer_is_priced(handler, method):
    llm = routed(FailingMockLLM(name="strong-m"), StreamsWithUsage(name="weak-m", answer=""), escalate_on=["empty"])
    with pytest.raises(ConnectionError, match="strong-m is down"):
        consume(getattr(llm, method)(PROMPT, **args(EASY)))
    assert handler.ledger.calls == []
    [lost] = handler.ledger.unanswered
    assert (lost.rejected, lost.input_tokens, lost.output_tokens) == (("weak-m",), 5, 2)
    assert handler.totals()["cost"] == pytest.approx(WEAK_PRICE, abs=1e-15)


class AnswerInt(BaseModel):
    answer: int


def test_when_no_structured_answer_parses_the_rejected_one_is_priced(handler):
    """The weak answer does not parse (rejected), nor does the strong one: the call raises the
    strong model's parse error, and the rejected weak answer is priced as unanswered."""
    llm = routed(WithUsage(name="strong-m", answer="five"), WithUsage(name="weak-m", answer="four"),
                 escalate_on=["structured"])
    with pytest.raises(ValueError):
        llm.structured_predict(AnswerInt, PromptTemplate("What is {q}? Reply as JSON."), q="2 + 2")
    assert handler.ledger.calls == []
    [lost] = handler.ledger.unanswered
    assert (lost.rejected, lost.input_tokens, lost.output_tokens) == (("weak-m",), 5, 2)
    assert lost.reason.startswith("structured") and handler.errors == []


# Missing usage, concurrency, what is left alone -----------------------------------------------
@pytest.mark.parametrize("method", TEXT)
def test_an_answer_without_usage_is_an_error_not_a_zero(handler, method):
    llm = routed(NamedMockLLM(name="strong-m"), NamedMockLLM(name="weak-m"))  # MockLLM reports no usage
    consume(getattr(llm, method)(PROMPT, **args(EASY)))
    assert handler.ledger.calls == []
    with pytest.raises(UsageError, match="'weak-m' \\(weak\\) reported no token usage"):
        handler.totals()


def test_a_structured_answer_without_usage_is_an_error(handler):
    llm = routed(NamedMockFunctionCallingLLM(name="strong-m", parsed=[]),
                 NamedMockFunctionCallingLLM(name="weak-m", parsed=[]))
    assert llm.structured_predict(Answer, PROMPT, **args(HARD_Q)) == Answer()
    [error] = handler.errors
    assert isinstance(error, UsageError) and "'strong-m' (strong) reported no token usage" in str(error)


def test_concurrent_calls_get_their_own_usage(handler):
    """Questions of different lengths, so that any mixing of two calls' events shows."""
    llm = routed()
    questions = [("prove " if i % 3 == 0 else "") + "word " * (i + 1) + "?" for i in range(24)]

    def expected(question):
        role = "strong" if "prove" in question else "weak"
        return (f"{role}-m", *expected_usage(getattr(llm, role), question))

    async def gather():
        return await asyncio.gather(*(llm.apredict(PROMPT, **args(q)) for q in questions))

    asyncio.run(gather())
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda q: llm.predict(PROMPT, **args(q)), questions))
    recorded = Counter((c.model, c.input_tokens, c.output_tokens) for c in handler.ledger.calls)
    assert recorded == Counter(expected(q) for q in questions * 2)
    assert handler.errors == []


def test_tagged_and_text_calls_are_each_recorded_once(handler):
    llm = routed()
    llm.chat([ChatMessage(role="user", content=EASY)])
    list(llm.stream_chat([ChatMessage(role="user", content=HARD_Q)]))
    llm.predict(PROMPT, **args(EASY))
    assert [(c.role, c.model) for c in handler.ledger.calls] == [("weak", "weak-m"), ("strong", "strong-m"),
                                                                 ("weak", "weak-m")]


def test_a_stream_is_recorded_when_it_ends():
    llm = routed()
    with LedgerHandler(prices=PRICES, strong_model="strong-m") as handler:
        stream = llm.stream(PROMPT, **args(EASY))
        next(stream)
        assert handler.ledger.calls == []
        list(stream)
        assert len(handler.ledger.calls) == 1
        abandoned = llm.stream(PROMPT, **args(EASY))
        next(abandoned)
        abandoned.close()  # as a chat stream that never ends: no end event, no usage, not recorded
    assert len(handler.ledger.calls) == 1 and handler.errors == []


@pytest.mark.parametrize("method", ["stream", "astream"])
def test_a_plain_text_stream_makes_no_record_without_a_handler(method, monkeypatch):
    # Its chunks are strings, which carry no record; the thread is still pinned at the first chunk.
    llm = routed()
    made = []
    original = RouteLLM._record
    monkeypatch.setattr(RouteLLM, "_record", lambda self, *a, **k: made.append(1) or original(self, *a, **k))
    answer = consume(getattr(llm, method)(PROMPT, **args(HARD_Q)))
    assert answer.startswith("[strong-m] ") and made == []
    consume(llm.stream_chat([ChatMessage(role="user", content=HARD_Q)]))  # a chat stream's chunks carry one
    assert made


def test_a_routellm_as_the_model_of_another_is_recorded_once(handler):
    inner = routed()
    outer = RouteLLM(strong=inner, weak=UsageMockLLM(name="weak-m", is_chat_model=True), router=KeywordRouter(),
                     threshold=0.5)
    outer.predict(PROMPT, **args(HARD_Q))  # outer: strong (the inner RouteLLM), inner: strong
    [call] = handler.ledger.calls
    assert (call.model, call.input_tokens) == ("strong-m", expected_usage(inner.strong, HARD_Q)[0])
    assert handler.errors == []


def test_without_a_handler_the_calls_are_unchanged(events):
    llm = routed()

    def run():
        events.clear()
        answer = llm.predict(PROMPT, **args(EASY))
        return answer, [e.class_name() for e in events.events]

    before, before_events = run()
    with LedgerHandler(prices=PRICES, strong_model="strong-m") as handler:
        during, during_events = run()
    after, after_events = run()
    assert before == during == after
    assert before_events == after_events and "RouteLLMRoutedCallEvent" not in before_events
    # With a handler: the chosen model's events, as before, then the one RouteLLM adds.
    assert during_events == before_events + ["RouteLLMRoutedCallEvent"]
    assert handler.totals()["calls"] == 1
