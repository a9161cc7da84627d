"""An embedder with the on-disk cache of :mod:`shared_core.cache` in front of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Container

import numpy as np

from shared_core.embeddings.base import Embedder
from shared_core.errors import ConfigError


class CachedEmbedder(Embedder):
    """Another embedder with an on-disk cache in front of it (transparent).

    Same ``name``, ``dim`` and ``to_config()`` as ``inner``, so a router trained
    through the cache is the router of ``inner``. Vectors are keyed by the inner
    embedder's config and each text's SHA-256, stored in
    ``$ROUTELLM_CACHE_DIR`` or ``~/.cache/routellm`` (see :mod:`shared_core.cache`;
    a directory inside the installed package is refused). Several processes can
    share one cache. Only the texts not yet cached are embedded, in one call.
    :meth:`embed_layers` caches the layer states too, in a space keyed by the
    inner config and the layers. A cache that
    cannot be read or written degrades to embedding uncached with one warning, unless
    ``strict=True`` (for jobs whose point is the cache, such as ``benchmarks/warm_cache.py``).
    """

    def __init__(self, inner: Embedder, cache_dir: str | Path | None = None, *, strict: bool = False) -> None:
        from shared_core.cache import EmbeddingCache

        if not isinstance(inner, Embedder):
            raise ConfigError(f"inner must be an Embedder, got {type(inner).__name__}: {inner!r}")
        self.inner = inner
        self.cache = EmbeddingCache(cache_dir, strict=strict)
        self.name = inner.name
        self._space: str | None = None

    @property
    def dim(self) -> int:
        return self.inner.dim

    def load(self) -> "CachedEmbedder":
        self.inner.load()
        return self

    @property
    def space(self) -> str:
        """Key of the inner embedder's space in the cache."""
        from shared_core.cache import space_key

        if self._space is None:
            self._space = space_key(self.inner.to_config())
        return self._space

    def _embed(self, texts: list[str], show_progress: bool) -> np.ndarray:
        from shared_core.cache import text_key

        keys = [text_key(t) for t in texts]
        dim = self.dim
        found = self.cache.get(self.space, keys, dim)
        missing = _missing(keys, texts, found)
        if missing:
            vectors = self.inner.embed(list(missing.values()), show_progress=show_progress)
            new = dict(zip(missing, vectors))
            self.cache.put(self.space, new.items())
            found.update(new)
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)

    def _embed_layers(self, texts: list[str], layers: tuple[int, ...], show_progress: bool) -> tuple[Any, Any]:
        """Both parts cached: the embeddings in the embedder's space, the layer states in a space of their own."""
        from shared_core.cache import space_key, text_key

        keys = [text_key(t) for t in texts]
        states_space = space_key({**self.inner.to_config(), "layer_states": list(layers)})
        found = self.cache.get(self.space, keys, self.dim)
        found_states = self.cache.get(states_space, keys, len(layers) * self.dim)
        missing = _missing(keys, texts, found.keys() & found_states.keys())
        if missing:
            emb, states = self.inner.embed_layers(list(missing.values()), layers, show_progress=show_progress)
            new, new_states = dict(zip(missing, emb)), dict(zip(missing, states))
            self.cache.put(self.space, new.items())
            self.cache.put(states_space, new_states.items())
            found.update(new)
            found_states.update(new_states)
        return (np.stack([found[k] for k in keys]).astype(np.float32, copy=False),
                np.stack([found_states[k] for k in keys]).astype(np.float32, copy=False))

    def to_config(self) -> dict[str, Any]:
        return self.inner.to_config()

    def __repr__(self) -> str:
        return f"CachedEmbedder({self.inner!r}, cache_dir={str(self.cache.directory)!r})"


def _missing(keys: list[str], texts: list[str], found: Container[str]) -> dict[str, str]:
    """The texts whose keys are not in ``found``, each once, in first-seen order."""
    missing: dict[str, str] = {}
    for key, text in zip(keys, texts):
        if key not in found and key not in missing:
            missing[key] = text
    return missing
