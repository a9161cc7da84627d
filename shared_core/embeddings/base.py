"""The embedder contract, and what every embedder shares.

An :class:`Embedder` turns texts into float32 vectors, one row per text, rows
L2-normalised. ``name`` identifies the embedding space (a router trained on one
embedder cannot use another) and ``to_config()`` / ``embedder_from_config``
round-trip it through a router's ``config.json``.

:meth:`Embedder.embed` checks every text before any model sees it: a non-string
or a string that is not valid Unicode (a lone surrogate, as ``surrogateescape``
makes of invalid UTF-8 bytes) raises :class:`~shared_core.errors.PromptError`
naming its index. Only the first :data:`MAX_TEXT_CHARS` characters of a text are
embedded: every local model here reads at most a few hundred tokens, and the cap
bounds the tokenizer's work on a huge input (a 10 MB prompt costs what a 16 KB
one does).

:meth:`Embedder.embed_layers` also returns, from the same forward pass, the mean
token states of inner transformer layers (a router head can read what the
sentence embedding's last layer has pooled away); the ONNX embedders give them
from the same run, sentence-transformers models from the same torch pass,
and :class:`~shared_core.embeddings.hashing.HashEmbedder` fakes them for tests.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from abc import ABC, abstractmethod
from typing import Any, Iterator, Sequence

import numpy as np

from shared_core.errors import ConfigError, EmbeddingError, PromptError

#: Characters of a text that are embedded (all-MiniLM-L6-v2 reads at most 256 word pieces,
#: which never span more than a few thousand characters of ordinary text).
MAX_TEXT_CHARS = 16_384


def check_text(text: Any, index: int) -> str:
    """``text`` if it is a string of valid Unicode, else :class:`PromptError` naming ``index``."""
    if not isinstance(text, str):
        raise PromptError(f"texts[{index}] must be a string, got {type(text).__name__}: {text!r}", index=index)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        snippet = text[max(0, exc.start - 20) : exc.start + 20]
        raise PromptError(
            f"texts[{index}] is not valid Unicode text: it holds a lone surrogate {text[exc.start]!r} at "
            f"character {exc.start} (near {snippet!r}); decode the input as UTF-8 with errors='replace'",
            index=index,
        ) from None
    return text


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
        """``(len(texts), dim)`` float32 rows, L2-normalised, in the order of ``texts``."""
        items = [check_text(t, i)[:MAX_TEXT_CHARS] for i, t in enumerate(list(texts))]
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = np.asarray(self._embed(items, show_progress), dtype=np.float32)
        if out.shape != (len(items), self.dim):
            raise EmbeddingError(
                f"embedder {self.name!r} returned shape {out.shape}, expected {(len(items), self.dim)}"
            )
        return out

    def embed_layers(
        self, texts: Sequence[str], layers: Sequence[int], *, show_progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(embed(texts), states)``: from one forward pass for the ONNX embedders.

        ``states`` holds, side by side for each of ``layers`` (1 = the output of the
        first transformer layer), the mean of a text's token states: float32 rows of
        ``len(layers) * dim`` numbers, not normalised. Embedders without inner
        layers raise :class:`~shared_core.errors.EmbeddingError`.
        """
        layers_ = check_layers(layers)
        items = [check_text(t, i)[:MAX_TEXT_CHARS] for i, t in enumerate(list(texts))]
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32), np.zeros((0, len(layers_) * self.dim), dtype=np.float32)
        emb, states = self._embed_layers(items, layers_, show_progress)
        emb, states = np.asarray(emb, dtype=np.float32), np.asarray(states, dtype=np.float32)
        for what, got, want in (("embeddings", emb, self.dim), ("layer states", states, len(layers_) * self.dim)):
            if got.shape != (len(items), want):
                raise EmbeddingError(
                    f"embedder {self.name!r} returned {what} of shape {got.shape}, expected {(len(items), want)}"
                )
        return emb, states

    def _embed_layers(self, texts: list[str], layers: tuple[int, ...], show_progress: bool) -> tuple[Any, Any]:
        """``(embeddings, layer states)`` of a validated list of texts; see :meth:`embed_layers`."""
        raise EmbeddingError(
            f"embedder {self.name!r} ({type(self).__name__}) gives no inner-layer token states; the ONNX embedders "
            "(the packaged MiniLM: embedder=None or 'minilm-onnx-int8'; '<model>:onnx-int8') and "
            "sentence-transformers models do"
        )

    def load(self) -> "Embedder":
        """Load whatever the embedder needs now rather than at the first call; returns ``self``."""
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class LazyModel:
    """A loaded model held by an embedder: loaded once under a lock, dropped on pickling.

    Embedders keep their settings in plain attributes and the loaded model (a
    torch module, an ONNX session) here, so that an embedder can be copied,
    pickled or sent to another process: the copy loads its own model on first use.
    """

    def __init__(self) -> None:
        self.value: Any = None
        self._lock = threading.Lock()

    def get(self, load: Any) -> Any:
        if self.value is None:
            with self._lock:
                if self.value is None:
                    self.value = load()
        return self.value

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()

    def __deepcopy__(self, memo: dict[int, Any]) -> "LazyModel":
        return LazyModel()


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def check_layers(layers: Any) -> tuple[int, ...]:
    """``layers`` as a tuple of distinct layer numbers (integers >= 1), at least one."""
    if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
        raise ConfigError(f"layers must be a sequence of layer numbers (1 = the first layer), got {layers!r}")
    out = tuple(layers)
    if not out or any(isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < 1 for x in out):
        raise ConfigError(f"layers must be one or more integers >= 1 (1 = the first layer), got {layers!r}")
    if len(set(out)) != len(out):
        raise ConfigError(f"layers must not repeat a layer, got {layers!r}")
    return tuple(int(x) for x in out)


def check_positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    return value


def looks_like_path(value: str) -> bool:
    return value.startswith(("/", "./", "../", "~", ".\\", "..\\")) or os.path.isabs(value)


def progress(total: int, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="text", dynamic_ncols=True)


# BLAS threads --------------------------------------------------------------------------
class _BlasScope:
    """Cap NumPy's BLAS threads during our own calls only, and restore them after.

    Idle OpenBLAS worker threads spin after a NumPy call and compete with the
    embedder's own threads: on 2 cores that doubles single-prompt latency. The cap
    applies while at least one of our calls runs (nested and concurrent calls
    share one scope) and the host application's setting is restored when the last
    one leaves. BLAS thread pools are process-wide, so a host thread calling NumPy
    *during* one of our calls also runs with the cap.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._limiter: Any = None
        self._controller: Any = None
        self._modules = 0

    def _controller_or_none(self) -> Any:
        # Scanning the loaded libraries costs ~0.1 ms, so it is redone only when modules were
        # imported since the last scan (an import may have loaded another BLAS, e.g. scipy's).
        if self._controller is None or (self._controller and len(sys.modules) != self._modules):
            try:
                from threadpoolctl import ThreadpoolController
            except ModuleNotFoundError:  # optional: without it, BLAS threads are left alone
                self._controller = False
            else:
                self._controller = ThreadpoolController()
                self._modules = len(sys.modules)
        return self._controller or None

    @contextlib.contextmanager
    def limit(self, n: int | None = 1) -> Iterator[None]:
        if n is None:
            yield
            return
        with self._lock:
            if self._depth == 0:
                controller = self._controller_or_none()
                self._limiter = controller.limit(limits=n, user_api="blas") if controller is not None else None
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0 and self._limiter is not None:
                    self._limiter.restore_original_limits()
                    self._limiter = None


_BLAS = _BlasScope()


def blas_limit(n: int | None = 1) -> contextlib.AbstractContextManager[None]:
    """Context manager: NumPy's BLAS pools capped at ``n`` threads inside it (``None``: untouched)."""
    return _BLAS.limit(n)
