"""A LlamaIndex embedding model over a :mod:`shared_core.embeddings` embedder.

It lets a RAG pipeline run offline on the MiniLM model the package already
ships (the int8 ONNX graph the routers use: no torch), without
``llama-index-embeddings-huggingface``.
"""

from __future__ import annotations

import asyncio
from typing import Any, List, Optional

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import PrivateAttr

from shared_core.embeddings import Embedder
from shared_core.errors import ConfigError


class LocalEmbedding(BaseEmbedding):
    """LlamaIndex ``BaseEmbedding`` backed by a ``shared_core`` :class:`Embedder`.

    ``embedder=None`` is the packaged int8 all-MiniLM-L6-v2 on ONNX Runtime
    (:class:`shared_core.embeddings.OnnxEmbedder`; no torch needed), loaded on the
    first embedding, never downloaded; pass
    ``SentenceTransformerEmbedder()`` for the fp32 model under torch. Queries and texts share one space, as
    MiniLM has no query prefix. Vectors are L2-normalised float32, returned as
    lists of floats.

    >>> from shared_core.embeddings import HashEmbedder
    >>> emb = LocalEmbedding(HashEmbedder(dim=8))
    >>> len(emb.get_text_embedding("hello world"))
    8
    """

    _embedder: Embedder = PrivateAttr()

    def __init__(
        self, embedder: Optional[Embedder] = None, embed_batch_size: int = 16, **kwargs: Any
    ) -> None:
        model_name = kwargs.pop("model_name", None)  # written by to_dict: the embedder's name
        if embedder is None:
            from shared_core.embeddings import OnnxEmbedder

            embedder = OnnxEmbedder(quantize="int8")
        if not isinstance(embedder, Embedder):
            raise ConfigError(
                f"embedder must be a shared_core.embeddings.Embedder or None, got {type(embedder).__name__}"
            )
        if model_name is not None and model_name != embedder.name:
            raise ConfigError(
                f"model_name {model_name!r} is not the embedder's name {embedder.name!r}: LocalEmbedding embeds "
                f"with its embedder; pass embedder= (a shared_core.embeddings.Embedder) to choose the model"
            )
        super().__init__(model_name=embedder.name, embed_batch_size=embed_batch_size, **kwargs)
        self._embedder = embedder

    @classmethod
    def class_name(cls) -> str:
        return "LocalEmbedding"

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    def _get_text_embeddings(self, texts: List[str]) -> List[Embedding]:
        return self._embedder.embed(texts).tolist()

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embeddings([text])[0]

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._get_text_embedding(query)

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: List[str]) -> List[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)
