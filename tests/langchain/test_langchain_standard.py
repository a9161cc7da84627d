"""langchain-tests standard suites over fake inner models that support tools.

The inner models are :class:`langchain_routellm.testing.FakeToolChatModel`
(deterministic, offline), so ``ChatModelIntegrationTests`` exercises the whole
wrapper (routing, delegation, tools, structured output, streaming, usage)
without a network. The real provider path is in test_server.py.
"""

from __future__ import annotations

from typing import Any

from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from langchain_routellm import RouteLLMChat
from langchain_routellm.testing import FakeToolChatModel


def _params() -> dict[str, Any]:
    return {
        "strong": FakeToolChatModel(model_name="strong-fake"),
        "weak": FakeToolChatModel(model_name="weak-fake"),
        "router": "random",
        "threshold": 0.5,
    }


# max_retries belongs to the inner models' clients: the router has no client of its
# own, and RouteLLMChat rejects unknown arguments instead of ignoring them. timeout
# is RouteLLMChat's own: seconds each model may take.
_STANDARD = {"temperature": 0, "max_tokens": 100, "timeout": 60, "stop": []}


class TestRouteLLMChatUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[RouteLLMChat]:
        return RouteLLMChat

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return _params()

    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        return dict(_STANDARD)


class TestRouteLLMChatIntegration(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[RouteLLMChat]:
        return RouteLLMChat

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return _params()

    @property
    def supports_model_override(self) -> bool:
        # The router picks the model on every call; a per-call ``model=`` would
        # bypass it, so the four model-override tests cannot apply (skipped).
        return False

    @property
    def supports_anthropic_inputs(self) -> bool:
        # Anthropic-style blocks (tool_use, cache_control) pass through the router
        # to the inner model; the fake inner models accept them.
        return True

    # Left at the suite's default (skipped), each because it cannot apply here:
    # - supports_image_inputs / image_tool_message / pdf_inputs / pdf_tool_message /
    #   audio_inputs: those tests download their media from the internet, and these
    #   tests run offline; image-only messages are covered by test_chat_model.py.
    # - supports_json_mode: structured output binds the schema as a tool on both
    #   models (method is ignored, as in BaseChatModel), so there is no JSON mode.
    # - enable_vcr_tests: no recorded HTTP cassettes; the inner models make no HTTP calls.
    # - init_from_env_params: RouteLLMChat reads no environment variables.
    # - test_serdes: a router object (and arbitrary inner models) cannot be serialized.
