"""Parity: the LangChain and the LlamaIndex wrappers make the same decision for the
same conversation and configuration (both go through shared_core.engine)."""

from __future__ import annotations

import base64

import pytest

pytest.importorskip("langchain_core")
try:
    from langchain_routellm import RouteLLMChat
    from langchain_routellm.testing import FakeToolChatModel
except ImportError as exc:  # the LangChain wrapper is built in parallel (issue 4)
    pytest.skip(f"langchain_routellm.RouteLLMChat is not importable: {exc}", allow_module_level=True)

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage  # noqa: E402
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, TextBlock  # noqa: E402

from li_support import HARD, KeywordRouter, NamedMockLLM  # noqa: E402
from llamaindex_routellm import DECISION_KEY, RouteLLM  # noqa: E402
from shared_core.engine import shipped_router_names  # noqa: E402

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n fake image").decode()

# Conversations in a neutral form: (role, content), content a string or a list of
# ("text", str) / ("image", None) blocks.
CONVERSATIONS = {
    "one question": [("user", "What is the capital of France?")],
    "hard question": [("user", f"{HARD} that sqrt(2) is irrational")],
    "system and history": [
        ("system", f"You {HARD} theorems."),
        ("user", f"{HARD} Fermat's little theorem."),
        ("assistant", "Here is a proof."),
        ("user", "Thanks! And what time is it in Paris?"),
    ],
    "tool loop": [
        ("user", "Multiply 6 by 7 with the tool."),
        ("assistant", "calling multiply"),
        ("tool", "42"),
    ],
    "text and image blocks": [("user", [("text", "Describe this chart"), ("image", None), ("text", "briefly.")])],
    "image only": [("user", [("image", None)])],
    "no user message": [("system", "You are terse.")],
    "empty text": [("user", "   ")],
    "non-ascii": [("user", "¿Cuál es la raíz cuadrada de 2? 数学")],
}


def to_langchain(conversation):
    out = []
    for role, content in conversation:
        if isinstance(content, list):
            content = [
                {"type": "text", "text": value} if kind == "text"
                else {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
                for kind, value in content
            ]
        if role == "user":
            out.append(HumanMessage(content=content))
        elif role == "assistant":
            out.append(AIMessage(content=content))
        elif role == "system":
            out.append(SystemMessage(content=content))
        else:
            out.append(ToolMessage(content=content, tool_call_id="call-1"))
    return out


def to_llamaindex(conversation):
    out = []
    for role, content in conversation:
        if isinstance(content, list):
            blocks = [TextBlock(text=value) if kind == "text"
                      else ImageBlock(image=base64.b64decode(PNG), image_mimetype="image/png")
                      for kind, value in content]
            out.append(ChatMessage(role=role, blocks=blocks))
        else:
            out.append(ChatMessage(role=role, content=content))
    return out


CALIBRATION = [f"calibration prompt {i}: {'prove' if i % 3 == 0 else 'say'} something" for i in range(60)]
SETTINGS = {
    "random, threshold": dict(router="random", threshold=0.5),
    "random, strong fraction on prompts": dict(router="random", strong_fraction=0.3, calibration_prompts=CALIBRATION),
    "model string": dict(router="router-random-0.42"),
    "router object, weak on no text": dict(router=KeywordRouter(), threshold=0.5, on_no_text="weak"),
}
DEFAULT = "shipped default, strong fraction"
if "default" in shipped_router_names():
    SETTINGS[DEFAULT] = dict(strong_fraction=0.5)
# The shipped router embeds every prompt with MiniLM: ~20 s for these cases on 2 cores.
CASES = [pytest.param(name, marks=pytest.mark.slow) if name == DEFAULT else name for name in SETTINGS]


def _pair(settings):
    lc = RouteLLMChat(strong=FakeToolChatModel(model_name="big"), weak=FakeToolChatModel(model_name="small"),
                      **settings)
    li = RouteLLM(strong=NamedMockLLM(name="big", is_chat_model=True),
                  weak=NamedMockLLM(name="small", is_chat_model=True), **settings)
    return lc, li


@pytest.mark.parametrize("setting", CASES)
def test_same_decision_for_every_conversation(setting):
    lc, li = _pair(SETTINGS[setting])
    assert lc.engine.threshold == pytest.approx(li.engine.threshold, abs=0)
    roles = set()
    for name, conversation in CONVERSATIONS.items():
        lc_decision = lc.route(to_langchain(conversation))
        li_decision = li.route(to_llamaindex(conversation))
        assert li_decision == lc_decision, name
        roles.add(li_decision.role.value)
    assert roles == {"strong", "weak"}  # the cases exercise both sides


@pytest.mark.parametrize("setting", CASES)
def test_same_record_on_real_calls(setting):
    lc, li = _pair(SETTINGS[setting])
    keys = ("role", "score", "threshold", "router", "reason", "fallback")
    for name, conversation in CONVERSATIONS.items():
        if name in ("image only", "text and image blocks"):
            continue  # the text-only mock LLM cannot take images; route() covers them above
        lc_record = lc.invoke(to_langchain(conversation)).response_metadata[DECISION_KEY]
        li_record = li.chat(to_llamaindex(conversation)).additional_kwargs[DECISION_KEY]
        assert {k: li_record[k] for k in keys} == {k: lc_record[k] for k in keys}, name
        assert li_record["model"] == lc_record["model"]  # "big" or "small" on both sides
    # A plain question: LangChain's invoke(str) and LlamaIndex's complete(str).
    question = f"Can you {HARD} the four colour theorem?"
    lc_record = lc.invoke(question).response_metadata[DECISION_KEY]
    li_record = li.complete(question).additional_kwargs[DECISION_KEY]
    assert {k: li_record[k] for k in keys} == {k: lc_record[k] for k in keys}
