"""LangChain chat models as the labeller's chat models (:mod:`shared_core.labeling`).

    >>> from langchain_core.language_models.fake_chat_models import FakeListChatModel
    >>> from langchain_routellm.labeling import from_langchain
    >>> judge = from_langchain(FakeListChatModel(responses=["B is better. [[B]]"]), name="judge")
    >>> judge([{"role": "user", "content": "which?"}]).text
    'B is better. [[B]]'

Pass the results to :func:`shared_core.labeling.label_prompts` as ``strong``,
``weak`` and ``judge``; errors of the provider SDKs are retried by their status
code (:func:`shared_core.labeling.is_retryable`).
"""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from shared_core.errors import ConfigError
from shared_core.labeling.chat import ChatReply

_MESSAGE_TYPES = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}


class LangChainChat:
    """A LangChain chat model as a callable ``messages -> ChatReply`` with a ``name``."""

    def __init__(self, model: BaseChatModel, name: str) -> None:
        self.model = model
        self.name = name

    def __call__(self, messages: list[dict[str, str]]) -> ChatReply:
        converted = [_MESSAGE_TYPES[m["role"]](content=m["content"]) for m in messages]
        result = self.model.invoke(converted)
        content: Any = result.content
        text = content if isinstance(content, str) else "".join(
            part.get("text", "") if isinstance(part, dict) else str(part) for part in content
        )
        usage = getattr(result, "usage_metadata", None) or {}
        return ChatReply(text, usage.get("input_tokens"), usage.get("output_tokens"))


def from_langchain(model: BaseChatModel, name: str | None = None) -> LangChainChat:
    """Wrap ``model``; ``name`` (what the battles record) defaults to its ``model_name``/``model``."""
    if not isinstance(model, BaseChatModel):
        raise ConfigError(f"model must be a LangChain chat model (BaseChatModel), got {type(model).__name__}")
    name = name or getattr(model, "model_name", None) or getattr(model, "model", None)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"cannot tell the name of {type(model).__name__}; pass name=...")
    return LangChainChat(model, name)


__all__ = ["LangChainChat", "from_langchain"]
