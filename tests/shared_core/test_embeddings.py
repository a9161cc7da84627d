"""Embedders: the contract, the cache, the OpenAI-compatible client and the real MiniLM model."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import shared_core
from shared_core.cache import EmbeddingCache, check_cache_dir, default_cache_dir, space_key
from shared_core.embeddings import (
    DEFAULT_DIM,
    DEFAULT_MODEL,
    CachedEmbedder,
    Embedder,
    HashEmbedder,
    OpenAICompatibleEmbedder,
    SentenceTransformerEmbedder,
    embedder_from_config,
    get_embedder,
)
from shared_core.errors import ConfigError, EmbeddingError


class CountingEmbedder(Embedder):
    """A hash embedder that records every batch it is asked to embed."""

    def __init__(self, dim: int = 8, seed: int = 0) -> None:
        self._inner = HashEmbedder(dim, seed)
        self.name = f"counting-{dim}-{seed}"
        self.calls: list[list[str]] = []

    @property
    def dim(self) -> int:
        return self._inner.dim

    def _embed(self, texts: list[str], show_progress: bool) -> np.ndarray:
        self.calls.append(list(texts))
        return self._inner.embed(texts)

    def to_config(self) -> dict[str, Any]:
        return {"type": "counting", "name": self.name, "dim": self.dim}


# --- the cache --------------------------------------------------------------


def test_cache_hits_do_not_call_inner(tmp_path: Path) -> None:
    inner = CountingEmbedder()
    cached = CachedEmbedder(inner, tmp_path)
    first = cached.embed(["a b", "c", "a b"])
    assert inner.calls == [["a b", "c"]]  # misses only, deduplicated, one call
    again = cached.embed(["c", "a b"])
    assert len(inner.calls) == 1
    np.testing.assert_array_equal(again, first[[1, 0]])
    np.testing.assert_allclose(first, HashEmbedder(8, 0).embed(["a b", "c", "a b"]), atol=1e-6)
    cached.embed(["c", "new"])
    assert inner.calls[-1] == ["new"]


def test_cache_is_transparent(tmp_path: Path) -> None:
    inner = HashEmbedder(16, 3)
    cached = CachedEmbedder(inner, tmp_path)
    assert (cached.name, cached.dim, cached.to_config()) == (inner.name, inner.dim, inner.to_config())


def test_cache_is_keyed_by_embedder(tmp_path: Path) -> None:
    a, b = CountingEmbedder(seed=1), CountingEmbedder(seed=2)
    va = CachedEmbedder(a, tmp_path).embed(["same text"])
    vb = CachedEmbedder(b, tmp_path).embed(["same text"])
    assert len(a.calls) == len(b.calls) == 1
    assert not np.allclose(va, vb)
    assert EmbeddingCache(tmp_path).count() == 2


def test_cache_shared_between_instances(tmp_path: Path) -> None:
    CachedEmbedder(CountingEmbedder(), tmp_path).embed(["x", "y"])
    fresh = CountingEmbedder()
    CachedEmbedder(fresh, tmp_path).embed(["y", "x"])
    assert fresh.calls == []


def test_cache_concurrent_writers(tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            CachedEmbedder(HashEmbedder(8), tmp_path).embed([f"t{i}" for i in range(k, k + 50)])
        except BaseException as exc:  # noqa: BLE001 - collected and re-checked below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in (0, 25, 50, 75)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert EmbeddingCache(tmp_path).count() == 125


def test_cache_refuses_package_dir() -> None:
    package = Path(shared_core.__file__).resolve().parent
    with pytest.raises(ConfigError, match="inside the installed package"):
        CachedEmbedder(HashEmbedder(), package / "cache")
    with pytest.raises(ConfigError, match="inside the installed package"):
        check_cache_dir(package)


def test_cache_dir_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTELLM_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    CachedEmbedder(HashEmbedder()).embed(["hello"])
    assert (tmp_path / "c" / "embeddings.sqlite3").is_file()
    monkeypatch.delenv("ROUTELLM_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "routellm"


def test_space_key_depends_on_config() -> None:
    assert space_key({"a": 1, "b": 2}) == space_key({"b": 2, "a": 1})
    assert space_key(HashEmbedder(8, 0).to_config()) != space_key(HashEmbedder(8, 1).to_config())


# --- settings -----------------------------------------------------------------


def test_get_embedder_specs() -> None:
    assert get_embedder(None).name == DEFAULT_MODEL
    assert get_embedder("minilm").name == DEFAULT_MODEL
    assert get_embedder(DEFAULT_MODEL).is_default
    openai = get_embedder("openai:text-embedding-3-small")
    assert isinstance(openai, OpenAICompatibleEmbedder) and openai.dim == 1536
    assert get_embedder("hash-8-2").to_config() == HashEmbedder(8, 2).to_config()
    emb = HashEmbedder()
    assert get_embedder(emb) is emb


def test_default_embedder_is_lazy() -> None:
    emb = SentenceTransformerEmbedder()
    assert emb._model is None
    assert emb.to_config() == {"type": "sentence-transformers", "name": DEFAULT_MODEL, "dim": DEFAULT_DIM}
    assert emb._model is None


@pytest.mark.parametrize(
    "cfg",
    [
        HashEmbedder(12, 4).to_config(),
        {"type": "sentence-transformers", "name": DEFAULT_MODEL, "dim": 384},
        {"type": "openai", "name": "openai:text-embedding-3-large", "dim": 3072, "model": "text-embedding-3-large",
         "base_url": "https://api.openai.com/v1"},
    ],
)
def test_config_round_trip(cfg: dict[str, Any]) -> None:
    assert embedder_from_config(cfg).to_config() == cfg


def test_unknown_config_type_named() -> None:
    with pytest.raises(ConfigError, match="'word2vec'"):
        embedder_from_config({"type": "word2vec", "name": "x", "dim": 3})


@pytest.mark.parametrize(
    ("spec", "error", "match"),
    [
        (42, ConfigError, "42"),
        ("", ConfigError, "''"),
        ("openai:", ConfigError, "'openai:'"),
        ("./no/such/model-dir", EmbeddingError, "no/such/model-dir"),
    ],
)
def test_bad_specs_named(spec: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        get_embedder(spec)


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"batch_size": True}, {"device": ""}, {"max_seq_length": -1}])
def test_bad_sentence_transformer_settings(kwargs: dict[str, Any]) -> None:
    value = next(iter(kwargs.values()))
    with pytest.raises(ConfigError, match=repr(value)):
        SentenceTransformerEmbedder(**kwargs)


def test_unknown_model_name_fails_offline_with_name() -> None:
    emb = SentenceTransformerEmbedder("nobody/no-such-model-xyz")
    with pytest.raises(EmbeddingError, match="nobody/no-such-model-xyz"):
        emb.embed(["hello"])


def test_non_string_text_named() -> None:
    with pytest.raises(ConfigError, match=r"texts\[1\]"):
        HashEmbedder().embed(["ok", 3])
