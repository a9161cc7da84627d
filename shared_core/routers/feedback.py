"""A router that learns from feedback on top of any embedding router (``feedback``).

Shipped routers are shared, read-only objects (one per process, read by every
wrapper), so feedback never changes them: :class:`FeedbackRouter` wraps a
*base* router and keeps what it learns beside it, in a bank of the feedback
prompts' embeddings and labels (:mod:`shared_core.feedback`). A prompt ``x`` is
scored as

    score(x) = (prior_weight * h(x) + sum_i w_i y_i) / (prior_weight + sum_i w_i),
    w_i = exp((sim(x, x_i) - 1) / temperature)   over the k most similar feedback prompts,

where ``h(x)`` is the base router's score (plus, with ``head_alpha`` set, a ridge
regression of the feedback's residuals ``y - base`` on the embedding). The base
score counts as ``prior_weight`` pseudo-neighbours at similarity 1: a prompt
near much feedback follows its labels, a prompt far from all of it keeps about
the base score (at the default temperature 0.2 a neighbour at similarity 0.5
weighs ``exp(-2.5) = 0.08``, at 0.2 ``exp(-4) = 0.02``; the base weighs 2).

The defaults (``k=20, temperature=0.2, prior_weight=2``, no head) were chosen on
MMLU-Pro *physics* (``python benchmarks/feedback_curve.py --domain physics --grid``),
not on the domains the learning curve reports (docs/feedback.md).

Both parts update online (:meth:`FeedbackRouter.add`: one embedding, one base
score and a rank-one update of the head's sums per prompt); :meth:`refit`
rebuilds them from the store (after another process appended to it, or on a
new base router). This works with any router that has an ``embedder``
attribute (or with an embedder passed in) and, by scoring the base through a
shallow copy that reuses the embeddings, embeds each prompt once.

A saved ``FeedbackRouter`` is a directory: ``config.json`` + ``model.safetensors``
(the feedback bank) and ``base/``, the base router saved as it saves itself.
"""

from __future__ import annotations

import copy
import math
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from shared_core.artifacts import check_router_config, read_artifact, require_tensor, save_router
from shared_core.errors import ArtifactError, ConfigError
from shared_core.feedback import FeedbackRecord, FeedbackStore, append_feedback, outcome_label
from shared_core.routers import Router, check_prompts, load_router, register_router
from shared_core.routers.base import MAX_PROMPT_CHARS

BASE_DIR = "base"


def _positive(value: Any, name: str, *, integer: bool = False, allow_zero: bool = False) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
    if ok:
        v = float(value)
        ok = math.isfinite(v) and (v >= 0 if allow_zero else v > 0) and (not integer or v == int(v))
    if not ok:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{name} must be {kind} {'>=' if allow_zero else '>'} 0, got {value!r}")
    return float(value)


class _ReusedEmbeddings:
    """An embedder that returns the vectors the feedback router just computed for the same texts."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.local = threading.local()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def embed(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        pending = getattr(self.local, "pending", None)
        if pending is not None and pending[0] == list(texts):
            return pending[1]
        return self.inner.embed(texts, show_progress=show_progress)

    def embed_layers(self, texts: Sequence[str], layers: Sequence[int], *,
                     show_progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        pending = getattr(self.local, "pending", None)
        if pending is not None and pending[0] == list(texts) and pending[2] == tuple(layers):
            return pending[1], pending[3]
        return self.inner.embed_layers(texts, layers, show_progress=show_progress)


class _Bank:
    """The feedback learned so far (replaced, never changed, so readers need no lock)."""

    def __init__(self, dim: int) -> None:
        self.embeddings = np.zeros((0, dim), dtype=np.float32)
        self.labels = np.zeros(0, dtype=np.float32)
        self.base_scores = np.zeros(0, dtype=np.float32)
        self.xtx = np.zeros((dim + 1, dim + 1))
        self.xtr = np.zeros(dim + 1)
        self.coef: np.ndarray | None = None

    def extended(self, emb: np.ndarray, labels: np.ndarray, base: np.ndarray, alpha: float | None) -> "_Bank":
        new = _Bank.__new__(_Bank)
        new.embeddings = np.vstack([self.embeddings, emb.astype(np.float32)])
        new.labels = np.concatenate([self.labels, labels.astype(np.float32)])
        new.base_scores = np.concatenate([self.base_scores, base.astype(np.float32)])
        x = np.hstack([emb.astype(np.float64), np.ones((len(emb), 1))])
        new.xtx = self.xtx + x.T @ x
        new.xtr = self.xtr + x.T @ (labels - base).astype(np.float64)
        new.coef = None if alpha is None else np.linalg.solve(new.xtx + alpha * np.eye(len(new.xtr)), new.xtr)
        return new


@register_router
class FeedbackRouter(Router):
    """A base router plus what feedback taught it; the base router is never changed.

    >>> import tempfile
    >>> from shared_core.embeddings import HashEmbedder
    >>> from shared_core.routers.knn import KNNRouter
    >>> import pandas as pd
    >>> base = KNNRouter(HashEmbedder(), banks={"demo": {"k": 3}}).fit(pd.DataFrame(
    ...     {"prompt": ["prove the theorem", "say hi"] * 5, "label": [1.0, 0.0] * 5, "source": "demo"}))
    >>> router = FeedbackRouter(base, FeedbackStore(tempfile.mkdtemp()))
    >>> before = router.score(["say hi"])[0]
    >>> _ = router.record("say hi", "weak_failed")  # persisted and learned at once
    >>> bool(router.score(["say hi"])[0] > before), bool(base.score(["say hi"])[0] == before)
    (True, True)
    """

    name = "feedback"

    def __init__(
        self,
        base: Router,
        store: FeedbackStore | None = None,
        *,
        embedder: Any = None,
        k: int = 20,
        temperature: float = 0.2,
        prior_weight: float = 2.0,
        head_alpha: float | None = None,
    ) -> None:
        if not isinstance(base, Router):
            raise ConfigError(f"base must be a Router, got {type(base).__name__}: {base!r}")
        if isinstance(base, FeedbackRouter):
            raise ConfigError("base is already a FeedbackRouter; give it the feedback instead of wrapping it again")
        if store is not None and not isinstance(store, FeedbackStore):
            raise ConfigError(f"store must be a FeedbackStore or None, got {type(store).__name__}")
        embedder = getattr(base, "embedder", None) if embedder is None else embedder
        if embedder is None or not hasattr(embedder, "embed"):
            raise ConfigError(
                f"router {base.name!r} has no embedder to place feedback prompts with; pass embedder=..."
            )
        self.base = base
        self.store = store
        self.embedder = embedder
        self.k = int(_positive(k, "k", integer=True))
        self.temperature = _positive(temperature, "temperature")
        self.prior_weight = _positive(prior_weight, "prior_weight")
        self.head_alpha = None if head_alpha is None else _positive(head_alpha, "head_alpha")
        self._lock = threading.Lock()
        self._bank = _Bank(int(embedder.dim))
        self._scorer: tuple[Router, _ReusedEmbeddings | None] | None = None

    @classmethod
    def from_store(cls, base: Router | str | Path | None, store: FeedbackStore | str | Path | None = None,
                   **kwargs: Any) -> "FeedbackRouter":
        """A feedback router over ``base`` (a router, a shipped name or a path) that has learned ``store``."""
        from shared_core.engine import resolve_router

        if not isinstance(store, FeedbackStore):
            store = FeedbackStore(store)
        return cls(resolve_router(base), store, **kwargs).refit()

    # Learning ----------------------------------------------------------------------
    @property
    def n_feedback(self) -> int:
        """How many feedback prompts the router has learned."""
        return len(self._bank.labels)

    def add(self, prompts: Sequence[str], labels: Sequence[float]) -> "FeedbackRouter":
        """Learn labelled prompts now (not persisted: :meth:`record` or the store does that)."""
        items = [p[:MAX_PROMPT_CHARS] for p in check_prompts(prompts)]
        y = np.array([outcome_label(v) for v in _as_list(labels, "labels")], dtype=np.float64)
        if len(y) != len(items):
            raise ConfigError(f"got {len(items)} prompts but {len(y)} labels")
        emb, base = self._embed_and_score(items)
        with self._lock:
            self._bank = self._bank.extended(emb, y, base, self.head_alpha)
        return self

    def record(self, prompt: str, outcome: Any, *, decision_id: str | None = None,
               score: float | None = None) -> FeedbackRecord:
        """Persist the feedback in :attr:`store`, then learn it; returns the record."""
        if self.store is None:
            raise ConfigError("this FeedbackRouter has no store to record to; build it with a FeedbackStore")
        record = append_feedback(self.store, prompt, outcome, decision_id=decision_id, router=self.name, score=score)
        self.add([record.prompt], [record.label])
        return record

    def refit(self) -> "FeedbackRouter":
        """Forget what was learned and learn the store's records again, in one batch."""
        if self.store is None:
            raise ConfigError("this FeedbackRouter has no store to refit from; build it with a FeedbackStore")
        records = self.store.read()
        bank = _Bank(int(self.embedder.dim))
        if records:
            emb, base = self._embed_and_score([r.prompt for r in records])
            bank = bank.extended(emb, np.array([r.label for r in records]), base, self.head_alpha)
        with self._lock:
            self._bank = bank
        return self

    # Scoring -----------------------------------------------------------------------
    def _base_scorer(self) -> tuple[Router, _ReusedEmbeddings | None]:
        if self._scorer is None:
            scorer, reuse = self.base, None
            if getattr(self.base, "embedder", None) is self.embedder:
                # a shallow copy shares the (read-only) weights; only its embedder differs
                scorer, reuse = copy.copy(self.base), _ReusedEmbeddings(self.embedder)
                scorer.embedder = reuse
            self._scorer = (scorer, reuse)
        return self._scorer

    def _embed_and_score(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        scorer, reuse = self._base_scorer()
        layers = tuple(getattr(self.base, "embedding_layers", ()) or ())  # what the base reads beside the embedding
        if reuse is not None and layers:
            emb, states = self.embedder.embed_layers(prompts, layers)  # one forward pass serves both routers
        else:
            emb, states = np.asarray(self.embedder.embed(prompts), dtype=np.float32), None
        if reuse is not None:
            reuse.local.pending = (prompts, emb, layers, states)
        try:
            base = scorer.score(prompts)
        finally:
            if reuse is not None:
                reuse.local.pending = None
        return emb, base

    def base_scores(self, prompts: Sequence[str]) -> np.ndarray:
        """The base router's scores (what the router says with no feedback)."""
        return self._embed_and_score([p[:MAX_PROMPT_CHARS] for p in check_prompts(prompts)])[1]

    def _score(self, prompts: list[str]) -> np.ndarray:
        bank = self._bank
        emb, base = self._embed_and_score(prompts)
        prior = base.astype(np.float64)
        if bank.coef is not None:
            x = np.hstack([emb.astype(np.float64), np.ones((len(emb), 1))])
            prior = np.clip(prior + x @ bank.coef, 0.0, 1.0)
        if not len(bank.labels):
            return prior
        sims = emb @ bank.embeddings.T
        k = min(self.k, sims.shape[1])
        idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        w = np.exp((np.take_along_axis(sims, idx, axis=1).astype(np.float64) - 1.0) / self.temperature)
        num = self.prior_weight * prior + (w * bank.labels[idx]).sum(axis=1)
        return num / (self.prior_weight + w.sum(axis=1))

    @property
    def reference_quantiles(self) -> np.ndarray | None:
        """The base router's reference quantiles (feedback moves only the scores of prompts near it)."""
        return self.base.reference_quantiles

    # Artifacts ---------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the feedback bank and the base router (into ``base/``) to directory ``path``."""
        bank = self._bank
        directory = Path(path)
        self.base.save(directory / BASE_DIR)
        config = {
            "router": self.name,
            "format_version": 1,
            "embedder": self.embedder.to_config(),
            "base": {"router": self.base.name, "path": BASE_DIR},
            "k": self.k,
            "temperature": self.temperature,
            "prior_weight": self.prior_weight,
            "head_alpha": self.head_alpha,
            "feedback_prompts": int(len(bank.labels)),
        }
        tensors = {"embeddings": bank.embeddings, "labels": bank.labels, "base_scores": bank.base_scores}
        return save_router(directory, config, tensors)

    @classmethod
    def from_pretrained(cls, path: str | Path, embedder: Any = None, *, store: FeedbackStore | None = None,
                        **kwargs: Any) -> "FeedbackRouter":
        """Load a router saved with :meth:`save`; ``store`` is where new feedback goes."""
        config, tensors = read_artifact(path)
        check_router_config(config, cls.name, path)
        base_info = config.get("base")
        if not isinstance(base_info, dict) or base_info.get("path") != BASE_DIR:
            raise ArtifactError(f"{str(path)!r}: config 'base' must be {{'path': {BASE_DIR!r}, ...}}, got {base_info!r}")
        base = load_router(Path(path) / BASE_DIR, embedder=embedder, **kwargs)
        try:
            router = cls(base, store, embedder=embedder, k=config.get("k"), temperature=config.get("temperature"),
                         prior_weight=config.get("prior_weight"), head_alpha=config.get("head_alpha"))
        except ConfigError as exc:
            raise ArtifactError(f"{str(path)!r}: {exc}") from None
        spec = config.get("embedder") or {}
        if not isinstance(spec, dict) or (spec.get("name"), spec.get("dim")) != (router.embedder.name, router.embedder.dim):
            raise ArtifactError(f"{str(path)!r}: the feedback bank was embedded with {spec!r}, not with "
                                f"{router.embedder.name!r} (dim {router.embedder.dim}); pass embedder=...")
        n = config.get("feedback_prompts")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ArtifactError(f"{str(path)!r}: config 'feedback_prompts' must be a count, got {n!r}")
        emb = require_tensor(tensors, "embeddings", (n, router.embedder.dim), path)
        labels = require_tensor(tensors, "labels", (n,), path).astype(np.float64)
        base_scores = require_tensor(tensors, "base_scores", (n,), path).astype(np.float64)
        if n and (labels.min() < 0 or labels.max() > 1):
            raise ArtifactError(f"tensor 'labels' in {str(path)!r} must hold numbers in [0, 1]")
        router._bank = _Bank(router.embedder.dim).extended(emb, labels, base_scores, router.head_alpha)
        return router


def _as_list(values: Any, name: str) -> list:
    if isinstance(values, (str, bytes)):
        raise ConfigError(f"{name} must be a list, got a single string {values!r}")
    try:
        return list(values)
    except TypeError:
        raise ConfigError(f"{name} must be a list, got {type(values).__name__}") from None
