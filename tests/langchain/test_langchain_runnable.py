"""RouteLLMRunnable: the same routers and metadata between two arbitrary runnables."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableLambda

from lc_support import HARD, ChainMeta
from langchain_routellm import DECISION_KEY, RouteLLMChat, RouteLLMRunnable
from shared_core.errors import ConfigError

EASY = "What is 2 + 2?"
HARD_Q = f"{HARD} Fermat's little theorem"


@pytest.fixture
def chain(keyword_router):
    return RouteLLMRunnable(
        strong=RunnableLambda(lambda x: f"rag: {x['question']}", name="rag"),
        weak=RunnableLambda(lambda x: f"direct: {x['question']}", name="direct"),
        router=keyword_router, threshold=0.5, input_key="question",
    )


def test_routes_and_records_in_the_child_run(chain):
    handler = ChainMeta()
    assert chain.invoke({"question": EASY}, {"callbacks": [handler]}) == f"direct: {EASY}"
    assert chain.invoke({"question": HARD_Q}, {"callbacks": [handler]}) == f"rag: {HARD_Q}"
    assert [(r["role"], r["model"]) for r in handler.records] == [("weak", "direct"), ("strong", "rag")]
    assert handler.records[1]["score"] == pytest.approx(0.9) and handler.records[1]["router"] == "keyword"


def test_every_entry_point_routes_the_same(chain):
    inputs = [{"question": EASY}, {"question": HARD_Q}]
    expected = [f"direct: {EASY}", f"rag: {HARD_Q}"]

    async def astream_all():
        return ["".join([c async for c in chain.astream(x)]) for x in inputs]

    assert [chain.invoke(x) for x in inputs] == expected
    assert [asyncio.run(chain.ainvoke(x)) for x in inputs] == expected
    assert ["".join(chain.stream(x)) for x in inputs] == expected
    assert asyncio.run(astream_all()) == expected
    assert chain.batch(inputs) == expected
    assert asyncio.run(chain.abatch(inputs)) == expected
    assert [chain.route(x).role.value for x in inputs] == ["weak", "strong"]


def test_batch_is_one_router_call(chain, keyword_router):
    chain.batch([{"question": q} for q in (EASY, HARD_Q, "x")])
    assert keyword_router.calls == [[EASY, HARD_Q, "x"]]


def test_message_outputs_carry_the_decision(strong, weak, keyword_router):
    router_chain = RouteLLMRunnable(strong=strong, weak=weak, router=keyword_router, threshold=0.5)
    message = router_chain.invoke([HumanMessage(HARD_Q)])
    assert isinstance(message, AIMessage) and message.response_metadata[DECISION_KEY]["model"] == "strong-fake"
    first = next(iter(router_chain.stream(EASY)))
    assert first.response_metadata[DECISION_KEY]["role"] == "weak"


def test_same_decision_as_the_chat_model(strong, weak):
    chat = RouteLLMChat(strong=strong, weak=weak, router="random", threshold=0.5)
    runnable = RouteLLMRunnable(strong=strong, weak=weak, router="random", threshold=0.5)
    for q in ("hello", "What is 2 + 2?", "Prove it", "Summarise Hamlet"):
        assert chat.route(q) == runnable.route(q)


def test_fallback(keyword_router):
    def boom(_):
        raise TimeoutError("retriever timed out")

    router_chain = RouteLLMRunnable(strong=RunnableLambda(boom, name="rag"),
                                    weak=RunnableLambda(lambda x: "direct", name="direct"),
                                    router=keyword_router, threshold=0.5, fallback=True)
    handler = ChainMeta()
    assert router_chain.invoke(HARD_Q, {"callbacks": [handler]}) == "direct"
    assert handler.records[-1]["fallback"] == {"from": "strong", "model": "rag", "error": "TimeoutError: retriever timed out"}
    no_fallback = router_chain.model_copy(update={"fallback": False})
    with pytest.raises(TimeoutError):
        no_fallback.invoke(HARD_Q)


def test_message_like_inputs_route_as_a_chat_model_reads_them(strong, weak, keyword_router):
    router_chain = RouteLLMRunnable(strong=strong, weak=weak, router=keyword_router, threshold=0.5)
    inputs = [[("system", "Be brief."), ("human", HARD_Q)], [{"role": "user", "content": EASY}], [("alien", "hi")],
              [HumanMessage(EASY), ("ai", "4"), ("human", HARD_Q)]]
    out = router_chain.batch(inputs, return_exceptions=True)
    assert [o.response_metadata[DECISION_KEY]["role"] for o in (out[0], out[1], out[3])] == ["strong", "weak", "strong"]
    assert out[0].content == f"[strong-fake] {HARD_Q}"
    assert isinstance(out[2], ConfigError) and "'alien'" in str(out[2]) and "list of messages" in str(out[2])
    assert router_chain.route([("human", HARD_Q)]) == router_chain.route([HumanMessage(HARD_Q)])


def test_input_errors(keyword_router, strong, weak):
    ambiguous = RouteLLMRunnable(strong=strong, weak=weak, router=keyword_router, threshold=0.5)
    with pytest.raises(ConfigError, match="set input_key"):
        ambiguous.route({"question": "a", "context": "b"})
    assert ambiguous.route({"question": "a", "k": 3}).role.value == "weak"  # one string value: used
    with pytest.raises(ConfigError, match="cannot route an input of type int"):
        ambiguous.invoke(3)
    keyed = ambiguous.model_copy(update={"input_key": "q"})
    with pytest.raises(ConfigError, match="no key 'q'"):
        keyed.route({"question": "a"})
    with pytest.raises(ConfigError, match="strong must be a LangChain Runnable"):
        RouteLLMRunnable(strong="rag", weak=weak, router="random", threshold=0.5)
    with pytest.raises(ValueError, match="threshold must be in"):
        RouteLLMRunnable(strong=strong, weak=weak, router="random", threshold=-1)
