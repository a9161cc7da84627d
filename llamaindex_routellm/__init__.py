"""LlamaIndex integration: ``RouteLLM``, an LLM that routes every call to a strong or a weak LLM.

``LocalEmbedding`` adapts a ``shared_core`` embedder (the packaged MiniLM by
default) to LlamaIndex, so a RAG pipeline runs offline.
"""

from llamaindex_routellm.embeddings import LocalEmbedding
from llamaindex_routellm.ledger import LedgerHandler
from llamaindex_routellm.llm import DECISION_KEY, RejectedAnswersEvent, RouteLLM, to_conversation
from llamaindex_routellm.watching import RoutedCallEvent

__all__ = ["DECISION_KEY", "LedgerHandler", "LocalEmbedding", "RejectedAnswersEvent", "RouteLLM", "RoutedCallEvent",
           "to_conversation"]
