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

The cache only saves time, so a cache that cannot be used never stops embedding
or routing: a directory that cannot be created, a read-only or corrupt database
makes :class:`EmbeddingCache` warn once (a :class:`CacheWarning` naming the file
and the cause) and work uncached from then on. A read-only database still serves
the vectors it holds. Where writing the cache is the point (warming it for a
benchmark), ``EmbeddingCache(..., strict=True)`` raises
:class:`~shared_core.errors.CacheError` instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sysconfig
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from shared_core.errors import CacheError, ConfigError

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


def trained_router_dir(name: str) -> Path:
    """Where a router trained for this user is found by name: ``<cache dir>/routers/<name>``
    (``routellm train <name> --recipe`` saves there by default)."""
    return default_cache_dir() / "routers" / name


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
    """Return the cache directory to use, refusing one inside the installed package
    and a path that exists and is not a directory."""
    resolved = _cache_location(path)
    if resolved.exists() and not resolved.is_dir():
        raise ConfigError(f"cache directory {str(resolved)!r} exists and is not a directory")
    return resolved


def _cache_location(path: str | Path | None) -> Path:
    """The resolved cache directory, refusing one inside the installed package (never written there)."""
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
    return resolved


def space_key(config: dict[str, Any]) -> str:
    """Stable key of an embedding space: SHA-256 of the embedder's sorted JSON config."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class CacheWarning(RuntimeWarning):
    """The embedding cache cannot be read or written; work goes on without it."""


_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


def _warn_once(path: Path, kind: str, message: str) -> None:
    """Warn about ``path`` once per process for each ``kind`` of problem ("read", "written")."""
    with _warned_lock:
        if (str(path), kind) in _warned:
            return
        _warned.add((str(path), kind))
    warnings.warn(message, CacheWarning, stacklevel=4)


def _initialise(conn: sqlite3.Connection) -> None:
    """Switch a new database to WAL and create the table, retrying while another connection does the same.

    Before WAL is on, the file is in rollback-journal mode, where SQLite answers
    "database is locked" at once, without waiting for the busy timeout, when two
    connections would otherwise deadlock (each holds a read lock and asks to write):
    several processes opening an empty cache at once can meet that. So the first
    setup is retried for up to :data:`BUSY_TIMEOUT_S`.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    pause = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(_SCHEMA)
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.2)


class EmbeddingCache:
    """Get and put float32 vectors by (space, text) in ``<directory>/embeddings.sqlite3``.

    Each call opens its own short-lived connection, so an instance can be used
    from several threads, and forked or pickled, without sharing a handle.

    A cache that cannot be used does not fail the call (see the module docstring):
    reads that fail make the instance uncached, writes that fail make it read-only,
    each with one :class:`CacheWarning`. With ``strict=True`` both raise
    :class:`~shared_core.errors.CacheError` naming the file, for callers whose job
    is to fill the cache.
    """

    def __init__(self, directory: str | Path | None = None, *, strict: bool = False) -> None:
        self.directory = _cache_location(directory)
        self.path = self.directory / DB_NAME
        self.strict = bool(strict)
        self._ready = False
        #: Why the cache is not used at all / not written any more (``None``: it is).
        self._unreadable: str | None = None
        self._unwritable: str | None = None
        if self.directory.exists() and not self.directory.is_dir():
            self._fail("read", f"{str(self.directory)!r} exists and is not a directory")

    @property
    def usable(self) -> bool:
        """False once the cache could not be read: every get then misses."""
        return self._unreadable is None

    def _fail(self, kind: str, cause: str) -> None:
        """Record that reading (and so writing) or only writing failed; raise if strict, else warn once."""
        if kind == "read":
            self._unreadable = self._unwritable = cause
            then = "embedding without the cache"
        else:
            self._unwritable = cause
            then = "new vectors are not cached"
        hint = " (delete it to start a new cache)" if "not a database" in cause or "malformed" in cause else ""
        message = f"embedding cache {str(self.path)!r} cannot be {kind}: {cause}{hint}"
        if self.strict:
            raise CacheError(message)
        _warn_once(self.path, kind, f"{message}; {then}")

    def _connect(self) -> sqlite3.Connection:
        if not self._ready:
            self.directory.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            if not self._ready:
                _initialise(conn)
                self._ready = True
            conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            conn.close()
            raise
        return conn

    def get(self, space: str, keys: Sequence[str], dim: int) -> dict[str, np.ndarray]:
        """Vectors found for ``keys`` (text hashes); rows of the wrong size count as missing."""
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(keys))
        if not unique or self._unreadable is not None:
            return found
        try:
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
        except (sqlite3.Error, OSError) as exc:
            self._fail("read", f"{type(exc).__name__}: {exc}")
            return {}
        return found

    def put(self, space: str, items: Iterable[tuple[str, np.ndarray]]) -> None:
        """Store ``(text hash, vector)`` pairs in one transaction; existing rows are kept."""
        rows = [(space, key, np.asarray(vec, dtype=np.float32).tobytes()) for key, vec in items]
        if not rows or self._unwritable is not None:
            if rows and self.strict:
                raise CacheError(f"embedding cache {str(self.path)!r} cannot be written: {self._unwritable}")
            return
        try:
            conn = self._connect()
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(
                    "INSERT OR IGNORE INTO embeddings (space, text_sha, vector) VALUES (?, ?, ?)", rows
                )
                conn.execute("COMMIT")
            finally:
                conn.close()
        except (sqlite3.Error, OSError) as exc:
            self._fail("written", f"{type(exc).__name__}: {exc}")

    def count(self, space: str | None = None) -> int:
        """Number of stored vectors, in one space or in all.

        Only asked for on purpose (it is not on the embedding path), so a cache
        that cannot be read raises :class:`~shared_core.errors.CacheError`.
        """
        if self._unreadable is not None:
            raise CacheError(f"embedding cache {str(self.path)!r} cannot be read: {self._unreadable}")
        try:
            conn = self._connect()
            try:
                if space is None:
                    return int(conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])
                return int(conn.execute("SELECT COUNT(*) FROM embeddings WHERE space = ?", [space]).fetchone()[0])
            finally:
                conn.close()
        except (sqlite3.Error, OSError) as exc:
            raise CacheError(f"embedding cache {str(self.path)!r} cannot be read: {type(exc).__name__}: {exc}") from None
