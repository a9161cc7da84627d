"""The embedding cache degrades: a corrupt, read-only or uncreatable cache never stops embedding.

Tests run as root, which ignores file permissions, so "read-only" is simulated the
way SQLite itself sees it: every connection opened with the ``mode=ro`` URI.
"""

from __future__ import annotations

import sqlite3
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shared_core import cache as cache_module
from shared_core.cache import DB_NAME, CacheWarning, EmbeddingCache
from shared_core.embeddings import CachedEmbedder, Embedder, HashEmbedder
from shared_core.errors import CacheError, ConfigError

TEXTS = ["first text", "second text"]


class CountingEmbedder(Embedder):
    """A hash embedder that records every batch it is asked to embed."""

    name = "counting-8"

    def __init__(self) -> None:
        self.inner = HashEmbedder(8)
        self.calls: list[list[str]] = []

    @property
    def dim(self) -> int:
        return 8

    def _embed(self, texts: list[str], show_progress: bool) -> np.ndarray:
        self.calls.append(list(texts))
        return self.inner.embed(texts)

    def to_config(self) -> dict[str, Any]:
        return {"type": "counting", "name": self.name, "dim": 8}


def embed_warning_once(cached: CachedEmbedder, match: str) -> None:
    """Embedding works and is right; the first call warns (naming ``match``), the second not."""
    expected = HashEmbedder(8).embed(TEXTS)
    with pytest.warns(CacheWarning, match=match):
        np.testing.assert_allclose(cached.embed(TEXTS), expected, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        np.testing.assert_allclose(cached.embed(TEXTS[::-1]), expected[::-1], atol=1e-6)


def test_corrupt_database_warns_once_and_embeds_uncached(tmp_path: Path) -> None:
    (tmp_path / DB_NAME).write_bytes(b"this is not an sqlite file" * 100)
    inner = CountingEmbedder()
    cached = CachedEmbedder(inner, tmp_path)
    embed_warning_once(cached, rf"{tmp_path / DB_NAME}'.*not a database.*delete it")
    assert inner.calls == [TEXTS, TEXTS[::-1]]  # uncached: every call embeds
    assert not cached.cache.usable
    with pytest.raises(CacheError, match=f"{tmp_path / DB_NAME}' cannot be read"):
        cached.cache.count()  # asked for on purpose: a clear error, not a silent 0
    assert (tmp_path / DB_NAME).read_bytes().startswith(b"this is not")  # the user's file is left alone


def test_uncreatable_cache_directory_warns_once_and_embeds_uncached(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache's parent directory should be")
    embed_warning_once(CachedEmbedder(CountingEmbedder(), blocker / "cache"), str(blocker / "cache" / DB_NAME))


def test_cache_directory_that_is_a_file_warns_and_embeds_uncached(tmp_path: Path) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("not a directory")
    with pytest.warns(CacheWarning, match="exists and is not a directory"):
        cached = CachedEmbedder(CountingEmbedder(), blocker)
    np.testing.assert_allclose(cached.embed(TEXTS), HashEmbedder(8).embed(TEXTS), atol=1e-6)


def read_only_connect(connect):
    """``sqlite3.connect`` opening every database read-only, as SQLite does for a file it may not write."""

    def read_only(path, *args, **kwargs):
        return connect(f"file:{Path(path).resolve()}?mode=ro", *args, uri=True, **kwargs)

    return read_only


@pytest.fixture
def read_only_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_module.sqlite3, "connect", read_only_connect(sqlite3.connect))


def test_read_only_cache_serves_its_vectors_and_warns_once_about_writing(tmp_path: Path, monkeypatch) -> None:
    CachedEmbedder(CountingEmbedder(), tmp_path).embed([TEXTS[0]])  # a cache holding the first text
    monkeypatch.setattr(cache_module.sqlite3, "connect", read_only_connect(sqlite3.connect))
    inner = CountingEmbedder()
    cached = CachedEmbedder(inner, tmp_path)
    embed_warning_once(cached, rf"{tmp_path / DB_NAME}' cannot be written: .*readonly")
    assert inner.calls == [[TEXTS[1]], [TEXTS[1]]]  # the cached text is a hit; the new one is not stored
    assert cached.cache.usable and cached.cache.count() == 1


def test_strict_cache_raises_a_clear_error(tmp_path: Path, read_only_sqlite) -> None:
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / DB_NAME).write_bytes(b"\x00garbage" * 64)
    with pytest.raises(CacheError, match=f"{corrupt / DB_NAME}' cannot be read"):
        EmbeddingCache(corrupt, strict=True).get("space", ["key"], 8)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    with pytest.raises(CacheError, match=f"{fresh / DB_NAME}' cannot be"):
        EmbeddingCache(fresh, strict=True).put("space", [("key", np.ones(8))])
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CacheError, match="exists and is not a directory"):
        EmbeddingCache(blocker, strict=True)
    assert isinstance(CacheError("x"), OSError)


def test_package_directory_is_still_refused() -> None:
    import shared_core

    with pytest.raises(ConfigError, match="inside the installed package"):
        EmbeddingCache(Path(shared_core.__file__).parent / "cache")


class _Flaky:
    """A connection whose first ``fails`` statements raise ``error`` (as SQLite's deadlock-avoiding BUSY does)."""

    def __init__(self, fails: int, error: str) -> None:
        self.fails, self.error, self.statements = fails, error, []

    def execute(self, sql: str, *args: Any) -> None:
        self.statements.append(sql)
        if self.fails:
            self.fails -= 1
            raise sqlite3.OperationalError(self.error)


def test_first_setup_retries_while_another_connection_holds_the_new_file():
    conn = _Flaky(3, "database is locked")
    cache_module._initialise(conn)  # three "locked" answers, then the setup goes through
    assert conn.statements.count("PRAGMA journal_mode = WAL") == 4 and conn.fails == 0
    broken = _Flaky(1, "file is not a database")
    with pytest.raises(sqlite3.OperationalError, match="not a database"):
        cache_module._initialise(broken)  # other errors are not retried
    assert len(broken.statements) == 1
