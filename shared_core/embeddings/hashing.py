"""A deterministic bag-of-words embedder for tests and quick experiments."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from shared_core.embeddings.base import Embedder, l2_normalize
from shared_core.errors import ConfigError


class HashEmbedder(Embedder):
    """A deterministic bag-of-words embedder for tests and quick experiments.

    Each lower-cased word is hashed to a fixed random unit vector; a text's vector
    is the normalised sum. No model, no network, microseconds per text. Texts that
    share words get similar vectors, which is enough to train and test routers.
    Its :meth:`embed_layers` fakes inner layers the same way, one seed per layer.
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

    def _embed_layers(self, texts: list[str], layers: tuple[int, ...], show_progress: bool) -> tuple[Any, Any]:
        """Fake layer states for tests: each layer is the hash embedding under a seed of its own."""
        states = [HashEmbedder(self._dim, seed=f"{self.seed}/layer{n}")._embed(texts, False) for n in layers]
        return self._embed(texts, show_progress), np.hstack(states)

    def to_config(self) -> dict[str, Any]:
        return {"type": "hash", "name": self.name, "dim": self._dim, "seed": self.seed}
