"""LlamaIndex integration: a routing LLM (see issue 5)."""
