"""LangChain integration: ``RouteLLMChat`` (a chat model that routes every call
to a strong or a weak chat model) and ``RouteLLMRunnable`` (the same routing
between any two runnables). Routing logic, the shared settings and the attempt
loop live in :mod:`shared_core`.

Not part of the integration: :mod:`langchain_routellm.testing` holds test doubles
(an offline fake chat model); :mod:`langchain_routellm.examples` the llama.cpp chat
model and ``routellm demo`` (the ``local`` extra)."""

from langchain_routellm._routing import DECISION_KEY, to_conversation
from langchain_routellm.chat_models import RouteLLMChat
from langchain_routellm.ledger import LedgerCallbackHandler
from langchain_routellm.runnables import RouteLLMRunnable

__all__ = ["DECISION_KEY", "LedgerCallbackHandler", "RouteLLMChat", "RouteLLMRunnable", "to_conversation"]
