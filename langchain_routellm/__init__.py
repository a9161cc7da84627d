"""LangChain integration: RouteLLMChat and a routing Runnable (see issue 4)."""
