"""In a RAG query engine RouteLLM routes on the user's question, not on the prompt
stuffed with retrieved text, on every response mode and on the stream and async paths."""

from __future__ import annotations

import asyncio

import pytest

from llama_index.core import Document, VectorStoreIndex

from li_support import HARD, KeywordRouter, NamedMockLLM
from llamaindex_routellm import LocalEmbedding, RouteLLM
from shared_core.embeddings import HashEmbedder

# Every document contains the keyword, so a prompt stuffed with any of them
# would be routed to the strong model; only the question decides.
DOCS = [
    f"Lecture 1. We {HARD} that the square root of two is irrational, by contradiction.",
    f"Lecture 2. To {HARD} Fermat's little theorem, count necklaces of p beads in a colours.",
    f"Lecture 3. Office hours are on Tuesdays at 10:00; homework asks you to {HARD} three lemmas.",
]
EASY_Q = "When are the office hours?"
HARD_Q = f"How do we {HARD} Fermat's little theorem?"


@pytest.fixture(scope="module")
def index():
    documents = [Document(text=t) for t in DOCS]
    return VectorStoreIndex.from_documents(documents, embed_model=LocalEmbedding(HashEmbedder(dim=64)))


def _routed(chat_models: bool):
    router = KeywordRouter()
    llm = RouteLLM(
        strong=NamedMockLLM(name="strong-mock", is_chat_model=chat_models),
        weak=NamedMockLLM(name="weak-mock", is_chat_model=chat_models),
        router=router,
        threshold=0.5,
    )
    return llm, router


@pytest.mark.parametrize("chat_models", [False, True])
@pytest.mark.parametrize("mode", ["compact", "refine", "tree_summarize", "simple_summarize"])
@pytest.mark.parametrize("question, role", [(EASY_Q, "weak"), (HARD_Q, "strong")])
def test_query_engine_routes_on_the_question(index, events, mode, chat_models, question, role):
    llm, router = _routed(chat_models)
    engine = index.as_query_engine(llm=llm, response_mode=mode, similarity_top_k=3)
    response = engine.query(question)

    assert router.seen and set(router.seen) == {question}
    assert set(events.models()) == {f"{role}-mock"}
    assert llm.last_decision.role.value == role
    # Not vacuous: the prompt the model received holds the retrieved text, and
    # routing on that prompt would have picked the strong model.
    assert "Lecture" in str(response)
    assert llm.route(str(response)).role.value == "strong"


@pytest.mark.parametrize("question, role", [(EASY_Q, "weak"), (HARD_Q, "strong")])
def test_streaming_and_async_query_engines_route_on_the_question(index, events, question, role):
    llm, router = _routed(chat_models=True)
    streaming = index.as_query_engine(llm=llm, streaming=True, similarity_top_k=3)
    text = "".join(streaming.query(question).response_gen)
    assert "Lecture" in text

    async def run():
        engine = index.as_query_engine(llm=llm, similarity_top_k=3)
        return await engine.aquery(question)

    assert "Lecture" in str(asyncio.run(run()))

    async def run_stream():
        engine = index.as_query_engine(llm=llm, streaming=True, similarity_top_k=3)
        response = await engine.aquery(question)
        return "".join([t async for t in response.async_response_gen()])

    assert "Lecture" in asyncio.run(run_stream())
    assert set(router.seen) == {question}
    assert len(router.seen) == 3
    assert set(events.models()) == {f"{role}-mock"}


def test_template_without_query_str_routes_on_the_formatted_prompt(events):
    from llama_index.core.prompts import PromptTemplate

    llm, router = _routed(chat_models=False)
    out = llm.predict(PromptTemplate("Summarise: {text}"), text=f"how to {HARD} it")
    assert out == f"Summarise: how to {HARD} it"
    assert router.seen == [f"Summarise: how to {HARD} it"]
    assert set(events.models()) == {"strong-mock"}


def test_predict_emits_the_chosen_models_events_once(events):
    from llama_index.core.prompts import PromptTemplate

    prompt = PromptTemplate("Context: {context_str}\nQuestion: {query_str}\nAnswer:")
    args = {"context_str": f"we {HARD} things", "query_str": "what is 1 + 1?"}
    for chat_models in (False, True):
        events.clear()
        llm, _ = _routed(chat_models)
        routed = llm.predict(prompt, **args)
        routed_counts = events.counts()
        events.clear()
        direct = llm.weak.predict(prompt, **args)
        assert routed == direct
        assert routed_counts == events.counts()
        assert routed_counts["LLMPredictStartEvent"] == 1
        assert routed_counts["LLMPredictEndEvent"] == 1


@pytest.mark.parametrize("question, role", [(EASY_Q, "weak"), (HARD_Q, "strong")])
def test_legacy_callback_handlers_see_one_llm_call_from_the_chosen_model(index, question, role):
    from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload, LlamaDebugHandler

    debug = LlamaDebugHandler()
    manager = CallbackManager([debug])
    llm, _ = _routed(chat_models=False)
    from llama_index.core import get_response_synthesizer
    from llama_index.core.query_engine import RetrieverQueryEngine

    # A synthesizer given a callback manager hands it to its LLM (here: RouteLLM).
    synthesizer = get_response_synthesizer(llm=llm, callback_manager=manager)
    own = {role: model.callback_manager for role, model in (("strong", llm.strong), ("weak", llm.weak))}
    engine = RetrieverQueryEngine(index.as_retriever(similarity_top_k=3), synthesizer, callback_manager=manager)
    engine.query(question)
    # The user's models keep their own callback managers (before: overwritten with the engine's).
    assert llm.strong.callback_manager is own["strong"] and llm.weak.callback_manager is own["weak"]
    assert debug not in llm.strong.callback_manager.handlers and debug not in llm.weak.callback_manager.handlers
    pairs = debug.get_event_pairs(CBEventType.LLM)
    assert len(pairs) == 1
    assert pairs[0][0].payload[EventPayload.SERIALIZED]["model_name"] == f"{role}-mock"


@pytest.mark.parametrize("mode", ["condense_question", "condense_plus_context"])
def test_condense_chat_engines_route_their_condense_call_on_the_follow_up(index, events, mode):
    # Before: the condense call routed on its prompt, which holds the chat history (here with the
    # retrieved lectures, as a mock answer echoes them), so it always went strong; the shipped
    # default router, too, sends such condense prompts strong at strong_fraction=0.5.
    # condense_question's call is predict(prompt, question=..., chat_history=...);
    # condense_plus_context formats LlamaIndex's default condense template itself and calls complete().
    llm, router = _routed(chat_models=True)
    engine = index.as_chat_engine(chat_mode=mode, llm=llm, similarity_top_k=3)
    engine.chat(EASY_Q)
    router.seen.clear()
    events.clear()
    follow_up = "And on Thursdays?"
    engine.chat(follow_up)
    assert router.seen[0] == follow_up
    assert events.models()[0] == "weak-mock"
    if mode == "condense_plus_context":  # then the answer, routed on the last user message
        assert router.seen == [follow_up, follow_up]
    # Not vacuous: the history in the condense prompt holds the keyword, so routing on it went strong.
    assert HARD in " ".join(m.content for m in engine.chat_history[:2])


def test_a_completion_prompt_of_your_own_template_is_routed_as_written():
    from llama_index.core.chat_engine.condense_plus_context import DEFAULT_CONDENSE_PROMPT_TEMPLATE

    llm, router = _routed(chat_models=True)
    own = "Chat History:\n{chat_history}\nFollow Up Input: {question}\nRewrite it:"
    prompt = own.format(chat_history=f"user: {HARD_Q}", question="And on Thursdays?")
    llm.complete(prompt)
    assert router.seen == [prompt]
    # The default template with an empty question: nothing to route on but the prompt.
    empty = DEFAULT_CONDENSE_PROMPT_TEMPLATE.format(chat_history=f"user: {HARD_Q}", question="  ")
    llm.complete(empty)
    assert router.seen[-1] == empty


@pytest.mark.parametrize("mode", ["context", "condense_question", "condense_plus_context"])
def test_streaming_chat_engines_last_decision_is_the_calls_own(index, mode):
    # These engines make the streamed model call in a thread they start (with a copy of
    # the caller's context); before, the caller's last_decision showed the previous call's.
    llm, router = _routed(chat_models=True)
    engine = index.as_chat_engine(chat_mode=mode, llm=llm, similarity_top_k=1)
    made = []
    decide = llm.engine.decide_one

    def recorded(*args, **kwargs):
        made.append(decide(*args, **kwargs))
        return made[-1]

    llm.engine.decide_one = recorded
    for question in (EASY_Q, HARD_Q, EASY_Q):
        response = engine.stream_chat(question)
        for _ in response.response_gen:
            pass
        assert llm.last_decision is made[-1]

    async def ask(question):
        response = await engine.astream_chat(question)
        async for _ in response.async_response_gen():
            pass
        return llm.last_decision

    assert asyncio.run(ask(HARD_Q)) is made[-1]
    assert llm.last_decision is made[-1]
