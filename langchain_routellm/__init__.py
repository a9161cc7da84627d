"""LangChain integration: ``RouteLLMChat`` (a chat model that routes every call
to a strong or a weak chat model) and ``RouteLLMRunnable`` (the same routing
between any two runnables). Routing logic lives in :mod:`shared_core`."""

from langchain_routellm._routing import DECISION_KEY, to_conversation
from langchain_routellm.chat_models import RouteLLMChat
from langchain_routellm.runnables import RouteLLMRunnable

__all__ = ["DECISION_KEY", "RouteLLMChat", "RouteLLMRunnable", "to_conversation"]
