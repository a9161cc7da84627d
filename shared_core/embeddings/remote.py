"""Embeddings from a server speaking OpenAI's ``POST /embeddings`` API."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from shared_core.embeddings.base import Embedder, check_positive_int, l2_normalize, progress
from shared_core.errors import ConfigError, EmbeddingError

#: OpenAI's API: the only URL that ``$OPENAI_API_KEY`` is ever sent to.
OPENAI_BASE_URL = "https://api.openai.com/v1"
#: Native dimensions of OpenAI's embedding models (others are probed once).
OPENAI_DIMS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
#: Models that accept a ``dimensions`` field to shorten their vectors.
_SHORTENABLE = ("text-embedding-3-small", "text-embedding-3-large")


class OpenAICompatibleEmbedder(Embedder):
    """Embeddings from any server speaking OpenAI's ``POST {base_url}/embeddings``.

    Works with OpenAI itself (RouteLLM's routers used ``text-embedding-3-small``)
    and with local servers such as llama.cpp or vLLM. ``api_key`` is sent only to
    ``base_url``: given, it is used as is; not given, ``$OPENAI_API_KEY`` is read at
    request time *only* when ``base_url`` is OpenAI's own (:data:`OPENAI_BASE_URL`),
    so that OpenAI's key never goes to another server; otherwise no
    ``Authorization`` header is sent.

    Prompts go to ``base_url``, so this embedder is only ever built from what the
    caller passes: a saved router whose ``config.json`` names a remote endpoint is
    not loaded with it unless the caller hands in the embedder (see
    :func:`shared_core.artifacts.resolve_embedder`). ``dim`` is known for OpenAI's models, given, or probed with one
    request on first use. Texts go out in batches of ``batch_size``; any HTTP
    failure raises :class:`EmbeddingError` naming the URL and the status.
    """

    def __init__(
        self,
        model: str,
        base_url: str = OPENAI_BASE_URL,
        api_key: str | None = None,
        dim: int | None = None,
        batch_size: int = 256,
        timeout: float = 30.0,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ConfigError(f"model must be a non-empty embedding model name, got {model!r}")
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must be an http(s) URL such as 'https://api.openai.com/v1', got {base_url!r}")
        if api_key is not None and not isinstance(api_key, str):
            raise ConfigError(f"api_key must be a string or None, got {type(api_key).__name__}")
        if dim is not None:
            check_positive_int(dim, "dim")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.model = model.strip()
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self._dim = dim if dim is not None else OPENAI_DIMS.get(self.model)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.timeout = float(timeout)
        self.name = f"openai:{self.model}"
        # A shortened text-embedding-3 vector is asked for with the ``dimensions`` field.
        self._dimensions = dim if (dim is not None and self.model in _SHORTENABLE and dim != OPENAI_DIMS[self.model]) else None

    @property
    def url(self) -> str:
        return f"{self.base_url}/embeddings"

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self._request(None, ["dimension probe"]).shape[1])
        return self._dim

    def _request(self, client: Any, batch: list[str]) -> np.ndarray:
        import httpx

        key = self.api_key
        if key is None and self.base_url == OPENAI_BASE_URL:
            key = os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        body: dict[str, Any] = {"model": self.model, "input": batch}
        if self._dimensions is not None:
            body["dimensions"] = self._dimensions
        try:
            if client is None:
                resp = httpx.post(self.url, json=body, headers=headers, timeout=self.timeout)
            else:
                resp = client.post(self.url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise EmbeddingError(f"embedding request to {self.url} failed: {type(exc).__name__}: {exc}") from exc
        if resp.status_code >= 400:
            raise EmbeddingError(
                f"embedding request to {self.url} returned HTTP {resp.status_code} for model "
                f"{self.model!r}: {resp.text[:300]}"
            )
        try:
            data = resp.json()["data"]
            rows = sorted(data, key=lambda d: d.get("index", 0))
            vectors = np.asarray([r["embedding"] for r in rows], dtype=np.float32)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise EmbeddingError(
                f"embedding response from {self.url} is not OpenAI's format "
                f"({{'data': [{{'index', 'embedding'}}]}}): {resp.text[:200]!r}"
            ) from exc
        if vectors.ndim != 2 or vectors.shape[0] != len(batch):
            raise EmbeddingError(
                f"embedding response from {self.url} has shape {vectors.shape} for {len(batch)} texts"
            )
        return vectors

    def _embed(self, texts: list[str], show_progress: bool) -> np.ndarray:
        import httpx

        parts = []
        bar = progress(len(texts), f"embedding with {self.name}") if show_progress else None
        try:
            with httpx.Client(timeout=self.timeout) as client:
                for start in range(0, len(texts), self.batch_size):
                    batch = texts[start : start + self.batch_size]
                    vectors = self._request(client, batch)
                    if self._dim is None:
                        self._dim = vectors.shape[1]
                    if vectors.shape[1] != self._dim:
                        raise EmbeddingError(
                            f"{self.url} returned {vectors.shape[1]}-dimensional vectors for {self.model!r}, "
                            f"expected {self._dim}"
                        )
                    parts.append(vectors)
                    if bar is not None:
                        bar.update(len(batch))
        finally:
            if bar is not None:
                bar.close()
        return l2_normalize(np.concatenate(parts))

    def to_config(self) -> dict[str, Any]:
        return {"type": "openai", "name": self.name, "dim": self.dim, "model": self.model, "base_url": self.base_url}
