"""The embedder contract and its implementations.

An :class:`Embedder` turns texts into float32 vectors, one row per text, rows
L2-normalised. ``name`` identifies the embedding space (a router trained on one
embedder cannot use another) and ``to_config()`` / :func:`embedder_from_config`
round-trip it through a router's ``config.json``.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from typing import Any, Sequence

import numpy as np

from shared_core.errors import ConfigError, EmbeddingError


class Embedder(ABC):
    """Texts to L2-normalised float32 vectors of a fixed dimension."""

    #: Stable identity of the embedding space, recorded in router artifacts.
    name: str

    @property
    @abstractmethod
    def dim(self) -> int:
        """Vector dimension."""

    @abstractmethod
    def _embed(self, texts: list[str], show_progress: bool) -> np.ndarray:
        """Embed a validated list of texts; returns ``(len(texts), dim)``."""

    @abstractmethod
    def to_config(self) -> dict[str, Any]:
        """JSON-serialisable settings; must include ``type``, ``name`` and ``dim``."""

    def embed(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        items = list(texts)
        for i, t in enumerate(items):
            if not isinstance(t, str):
                raise ConfigError(f"texts[{i}] must be a string, got {type(t).__name__}: {t!r}")
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = np.asarray(self._embed(items, show_progress), dtype=np.float32)
        if out.shape != (len(items), self.dim):
            raise EmbeddingError(
                f"embedder {self.name!r} returned shape {out.shape}, expected {(len(items), self.dim)}"
            )
        return out


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class HashEmbedder(Embedder):
    """A deterministic bag-of-words embedder for tests and quick experiments.

    Each lower-cased word is hashed to a fixed random unit vector; a text's vector
    is the normalised sum. No model, no network, microseconds per text. Texts that
    share words get similar vectors, which is enough to train and test routers.
    """

    def __init__(self, dim: int = 32, seed: int = 0) -> None:
        if not isinstance(dim, int) or dim < 1:
            raise ConfigError(f"dim must be a positive integer, got {dim!r}")
        self._dim = dim
        self.seed = seed
        self.name = f"hash-{dim}-{seed}"

    @property
    def dim(self) -> int:
        return self._dim

    def _word_vector(self, word: str) -> np.ndarray:
        digest = hashlib.sha256(f"{self.seed}\x00{word}".encode("utf-8")).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        return rng.standard_normal(self._dim)

    def _embed(self, texts: list[str], show_progress: bool) -> np.ndarray:
        out = np.zeros((len(texts), self._dim))
        for i, text in enumerate(texts):
            for word in text.lower().split() or [""]:
                out[i] += self._word_vector(word)
        return l2_normalize(out)

    def to_config(self) -> dict[str, Any]:
        return {"type": "hash", "name": self.name, "dim": self._dim, "seed": self.seed}
