"""LlamaCppChat: SmolLM2-135M-Instruct in-process (the demo's weak model)."""

from __future__ import annotations

import pytest
from langchain_core.callbacks import get_usage_metadata_callback

from langchain_routellm import DECISION_KEY, RouteLLMChat
from langchain_routellm.examples.local import LlamaCppChat, smollm2_gguf_path

pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local():
    return LlamaCppChat(max_tokens=8)


def test_gguf_ships_in_the_package():
    path = smollm2_gguf_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000


def test_invoke_stream_and_tokens(local):
    message = local.invoke("What is the capital of France?")
    assert message.text.strip() and message.usage_metadata["output_tokens"] <= 8
    streamed = "".join(c.text for c in local.stream("What is the capital of France?"))
    assert streamed == message.text  # greedy decoding: the same answer on both paths
    assert local.get_num_tokens("hello world") == 2
    assert local.profile["max_input_tokens"] == 2048 and local.profile["tool_calling"] is False


def test_through_routellmchat_usage_once(local):
    llm = RouteLLMChat(strong=local.model_copy(update={"model_name": "as-strong"}), weak=local,
                       router="random", threshold=0.5)
    with get_usage_metadata_callback() as usage:
        message = llm.invoke("Say hello to a new colleague in one sentence.")  # random score 0.209: weak
    assert message.response_metadata[DECISION_KEY]["model"] == "smollm2-135m-instruct"
    assert usage.usage_metadata == {"smollm2-135m-instruct": message.usage_metadata}


def test_tools_are_refused_clearly(local):
    from shared_core.errors import ConfigError

    with pytest.raises(ConfigError, match="does not support tool calling"):
        local._generate([], tools=[{"type": "function"}])
