"""An on-disk store of embeddings, shared safely by several processes.

Vectors live in one SQLite file, ``embeddings.sqlite3``, in the cache directory:
``$ROUTELLM_CACHE_DIR`` if set, else ``~/.cache/routellm``. A row is keyed by the
embedding space (a hash of the embedder's ``to_config()``) and the SHA-256 of the
text, so two embedders never share vectors and the texts themselves are not stored.

The database runs in WAL mode with a busy timeout: readers never block, and
concurrent writers (training and evaluation jobs embedding the same data) wait
for each other instead of failing. Writes are ``INSERT OR IGNORE``, so two
processes that embed the same text both succeed.

A cache is never written inside the installed package (a read-only or shared
location that a reinstall would wipe): such a directory is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sysconfig
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from shared_core.errors import ConfigError

CACHE_ENV = "ROUTELLM_CACHE_DIR"
DB_NAME = "embeddings.sqlite3"
#: Seconds a writer waits for another process's lock before giving up.
BUSY_TIMEOUT_S = 60.0
#: Host parameters per SELECT (SQLite's historical limit is 999).
_CHUNK = 900

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    space TEXT NOT NULL,
    text_sha TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (space, text_sha)
) WITHOUT ROWID
"""


def default_cache_dir() -> Path:
    """``$ROUTELLM_CACHE_DIR`` if set and non-empty, else ``~/.cache/routellm``."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "routellm"


def _package_dirs() -> list[Path]:
    """Directories a cache must not live in: this package and the interpreter's site-packages."""
    dirs = [Path(__file__).resolve().parent]
    for key in ("purelib", "platlib"):
        try:
            dirs.append(Path(sysconfig.get_paths()[key]).resolve())
        except KeyError:
            continue
    return dirs


def check_cache_dir(path: str | Path | None) -> Path:
    """Return the cache directory to use, refusing one inside the installed package."""
    if path is None:
        directory = default_cache_dir()
    elif isinstance(path, (str, Path)) and str(path).strip():
        directory = Path(path).expanduser()
    else:
        raise ConfigError(f"cache_dir must be a directory path or None, got {path!r}")
    resolved = directory.resolve()
    for forbidden in _package_dirs():
        if resolved == forbidden or forbidden in resolved.parents:
            raise ConfigError(
                f"cache directory {str(directory)!r} is inside the installed package or site-packages "
                f"({str(forbidden)!r}); use a user directory, e.g. set {CACHE_ENV}=~/.cache/routellm"
            )
    if resolved.exists() and not resolved.is_dir():
        raise ConfigError(f"cache directory {str(directory)!r} exists and is not a directory")
    return resolved


def space_key(config: dict[str, Any]) -> str:
    """Stable key of an embedding space: SHA-256 of the embedder's sorted JSON config."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class EmbeddingCache:
    """Get and put float32 vectors by (space, text) in ``<directory>/embeddings.sqlite3``.

    Each call opens its own short-lived connection, so an instance can be used
    from several threads, and forked or pickled, without sharing a handle.
    """

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = check_cache_dir(directory)
        self.path = self.directory / DB_NAME
        self._ready = False

    def _connect(self) -> sqlite3.Connection:
        if not self._ready:
            self.directory.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        if not self._ready:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(_SCHEMA)
            self._ready = True
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    def get(self, space: str, keys: Sequence[str], dim: int) -> dict[str, np.ndarray]:
        """Vectors found for ``keys`` (text hashes); rows of the wrong size count as missing."""
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(keys))
        if not unique:
            return found
        conn = self._connect()
        try:
            for start in range(0, len(unique), _CHUNK):
                chunk = unique[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT text_sha, vector FROM embeddings WHERE space = ? AND text_sha IN ({marks})",
                    [space, *chunk],
                ).fetchall()
                for key, blob in rows:
                    if len(blob) == 4 * dim:
                        found[key] = np.frombuffer(blob, dtype=np.float32)
        finally:
            conn.close()
        return found

    def put(self, space: str, items: Iterable[tuple[str, np.ndarray]]) -> None:
        """Store ``(text hash, vector)`` pairs in one transaction; existing rows are kept."""
        rows = [(space, key, np.asarray(vec, dtype=np.float32).tobytes()) for key, vec in items]
        if not rows:
            return
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT OR IGNORE INTO embeddings (space, text_sha, vector) VALUES (?, ?, ?)", rows)
            conn.execute("COMMIT")
        finally:
            conn.close()

    def count(self, space: str | None = None) -> int:
        """Number of stored vectors, in one space or in all."""
        conn = self._connect()
        try:
            if space is None:
                return int(conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])
            return int(conn.execute("SELECT COUNT(*) FROM embeddings WHERE space = ?", [space]).fetchone()[0])
        finally:
            conn.close()
