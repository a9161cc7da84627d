"""Helpers shared by the LangChain tests (a name no other test directory uses)."""

from __future__ import annotations

from typing import Any

import numpy as np
from langchain_core.callbacks import BaseCallbackHandler

from shared_core.routers import Router

#: Texts containing this word score 0.9 (strong), others 0.1 (weak).
HARD = "prove"


class KeywordRouter(Router):
    """Win rate 0.9 for texts containing ``HARD``, else 0.1; counts its calls."""

    name = "keyword"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def _score(self, prompts: list[str]) -> np.ndarray:
        self.calls.append(list(prompts))
        return np.array([0.9 if HARD in p.lower() else 0.1 for p in prompts])


class ChainMeta(BaseCallbackHandler):
    """Records the decision each chain run's metadata carries (``metadata["routellm"]``)."""

    def __init__(self) -> None:
        self.records: list[dict] = []

    def on_chain_start(self, serialized, inputs, *, metadata=None, **kwargs) -> None:
        if metadata and "routellm" in metadata:
            self.records.append(metadata["routellm"])


class Recorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.starts = 0
        self.ends: list[Any] = []
        self.tokens: list[str] = []

    def on_chat_model_start(self, serialized, messages, **kwargs) -> None:
        self.starts += 1

    def on_llm_new_token(self, token, **kwargs) -> None:
        self.tokens.append(token)

    def on_llm_end(self, response, **kwargs) -> None:
        self.ends.append(response)


def merge_chunks(chunks):
    full = None
    for c in chunks:
        full = c if full is None else full + c
    return full
