"""Gated nearest-neighbour win rates (``knn``).

A training prompt carries a *label*: the strong model's chance of a better answer
than the weak model's on it (1 = strong better, 0.5 = equal, 0 = weak better, or a
smoothed estimate in between; see :mod:`shared_core.training.knn` for how labels
are made from per-model outcomes). Training prompts are kept in *banks*, one per
data source (``mmlu``, ``arena``, ...), because the sources label different things
and cover different kinds of prompts.

A new prompt is scored in three steps, for a whole batch at once:

1. per bank ``b``: the similarity-weighted mean label of its ``k`` nearest
   prompts, weights ``exp((sim - max_sim) / temperature)``, smoothed toward the
   bank's mean label with ``prior_weight`` pseudo-neighbours;
2. a *gate* weighs the banks by how close the prompt is to each: softmax over
   banks of ``(mean similarity of the gate_k nearest + gate_bias_b) / gate_temperature``;
3. the score is the gated mean of the bank scores.

Without the gate a prompt's neighbours would mix sources by raw similarity, and
arena-bench's 300 chat prompts would be swamped by thousands of MMLU questions
(measured in docs/quality.md: arena-bench APGR 0.51 mixed, 0.54 gated).

The artifact stores the banks' embeddings (int8 with a per-row scale, as
``sw_ranking`` does; the quantised vectors are used from training on, so a saved
and reloaded router scores identically) and their labels.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from shared_core.artifacts import (
    STORAGE,
    check_router_config,
    dequantize_rows,
    quantiles_from_config,
    quantize_rows,
    read_artifact,
    require_tensor,
    resolve_embedder,
    router_config,
    save_router,
)
from shared_core.errors import ArtifactError, ConfigError, DataError
from shared_core.routers import Router, register_router
from shared_core.routers._models import DEFAULT_STRONG, DEFAULT_WEAK

if TYPE_CHECKING:  # pandas is needed to fit, not to route
    import pandas as pd

LABELLED_COLUMNS = ("prompt", "label", "source")

#: Bank settings chosen by cross-validation on the MMLU training half and arena-bench
#: (docs/quality.md); a source without an entry uses ``"*"``.
DEFAULT_BANKS: dict[str, dict[str, float]] = {
    "mmlu": {"k": 100, "temperature": 0.2, "prior_weight": 1.0, "gate_bias": 0.0},
    "arena": {"k": 30, "temperature": 0.05, "prior_weight": 1.0, "gate_bias": 0.05},
    "*": {"k": 50, "temperature": 0.1, "prior_weight": 1.0, "gate_bias": 0.0},
}
BANK_KEYS = ("k", "temperature", "prior_weight", "gate_bias")


def _number(value: Any, name: str, *, low: float, strict: bool = False, integer: bool = False) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
    if ok:
        v = float(value)
        ok = math.isfinite(v) and (v > low if strict else v >= low) and (not integer or v == int(v))
    if not ok:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{name} must be {kind} {'>' if strict else '>='} {low:g}, got {value!r}")
    return float(value)


def bank_settings(source: str, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, float]:
    """The settings of bank ``source``: defaults, then ``overrides[source]`` (checked)."""
    base = dict(DEFAULT_BANKS.get(source, DEFAULT_BANKS["*"]))
    extra = (overrides or {}).get(source, (overrides or {}).get("*", {}))
    unknown = set(extra) - set(BANK_KEYS)
    if unknown:
        raise ConfigError(f"bank {source!r} settings {sorted(unknown)} unknown; expected keys {list(BANK_KEYS)}")
    base.update(extra)
    base["k"] = int(_number(base["k"], f"bank {source!r} k", low=1, integer=True))
    base["temperature"] = _number(base["temperature"], f"bank {source!r} temperature", low=0, strict=True)
    base["prior_weight"] = _number(base["prior_weight"], f"bank {source!r} prior_weight", low=0)
    base["gate_bias"] = _number(base["gate_bias"], f"bank {source!r} gate_bias", low=-1)
    return base


def validate_labelled(df: Any) -> pd.DataFrame:
    """Check a table of labelled prompts (``prompt``, ``label`` in [0, 1], ``source``)."""
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise DataError(f"labelled prompts must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in LABELLED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"labelled prompts miss column(s) {missing}; expected {list(LABELLED_COLUMNS)}")
    if len(df) == 0:
        raise DataError("labelled prompts have no rows")
    out = df.reset_index(drop=True)
    for column in ("prompt", "source"):
        bad = [i for i, v in enumerate(out[column]) if not isinstance(v, str) or not v.strip()]
        if bad:
            raise DataError(f"column {column!r} row {bad[0]} must be a non-empty string, got {out[column][bad[0]]!r}")
    labels = pd.to_numeric(out["label"], errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(labels) | (labels < 0) | (labels > 1))
    if bad.size:
        raise DataError(f"column 'label' row {bad[0]} must be a number in [0, 1], got {out['label'][bad[0]]!r}")
    return out.assign(label=labels)


def top_k(sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, similarities)`` of the ``k`` most similar columns per row, most similar first."""
    k = min(k, sims.shape[1])
    idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    top = np.take_along_axis(sims, idx, axis=1)
    order = np.argsort(-top, axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1), np.take_along_axis(top, order, axis=1)


def neighbour_mean(
    sims: np.ndarray, labels: np.ndarray, *, k: int, temperature: float, prior: float, prior_weight: float
) -> np.ndarray:
    """Similarity-weighted mean label of the ``k`` most similar rows, smoothed toward ``prior``."""
    idx, top = top_k(sims, k)
    return _weighted_mean(idx, top, labels, temperature, prior, prior_weight)


def _weighted_mean(idx, top, labels, temperature, prior, prior_weight) -> np.ndarray:
    w = np.exp((top - top[:, :1]) / temperature)
    return ((w * labels[idx]).sum(axis=1) + prior_weight * prior) / (w.sum(axis=1) + prior_weight)


def top_mean(sims: np.ndarray, k: int) -> np.ndarray:
    """Mean of the ``k`` largest similarities per row."""
    return top_k(sims, k)[1].mean(axis=1)


@register_router
class KNNRouter(Router):
    """Nearest-neighbour win rates over per-source banks of labelled prompts, gated by similarity.

    >>> import pandas as pd
    >>> from shared_core.embeddings import HashEmbedder
    >>> labelled = pd.DataFrame({"prompt": ["prove the theorem", "say hi"] * 5,
    ...     "label": [1.0, 0.0] * 5, "source": "demo"})
    >>> router = KNNRouter(HashEmbedder(), banks={"demo": {"k": 3}}).fit(labelled)
    >>> scores = router.score(["prove the theorem", "say hi"])
    >>> bool(scores[0] > scores[1])
    True
    """

    name = "knn"

    def __init__(
        self,
        embedder,
        *,
        banks: Mapping[str, Mapping[str, Any]] | None = None,
        gate_temperature: float = 0.01,
        gate_k: int = 10,
        storage: str = "int8",
        strong: str = DEFAULT_STRONG,
        weak: str = DEFAULT_WEAK,
        progress: bool = True,
    ) -> None:
        if embedder is None or not hasattr(embedder, "embed"):
            raise ConfigError(f"embedder must be an Embedder, got {embedder!r}")
        if banks is not None and not isinstance(banks, Mapping):
            raise ConfigError(f"banks must map a source name to its settings, got {type(banks).__name__}")
        for source in banks or {}:
            bank_settings(source, banks)  # raises early on a bad setting
        if storage not in STORAGE:
            raise ConfigError(f"storage must be one of {', '.join(STORAGE)}, got {storage!r}")
        self.embedder = embedder
        self.banks = {str(k): dict(v) for k, v in (banks or {}).items()}
        self.gate_temperature = _number(gate_temperature, "gate_temperature", low=0, strict=True)
        self.gate_k = int(_number(gate_k, "gate_k", low=1, integer=True))
        self.storage = storage
        self.strong = strong
        self.weak = weak
        self.progress = progress

    # Training --------------------------------------------------------------------
    def fit(self, labelled: pd.DataFrame, *, progress: bool | None = None) -> "KNNRouter":
        """Embed the labelled prompts and file them into one bank per ``source``."""
        show = self.progress if progress is None else progress
        started = time.perf_counter()
        df = validate_labelled(labelled)
        emb = self.embedder.embed(list(df["prompt"]), show_progress=show)
        self._set_banks(df["source"].to_numpy(), emb, df["label"].to_numpy())
        self.training_ = {
            "prompts": {s: int(n) for s, n in zip(self.sources_, self.bank_sizes_)},
            "mean_label": {s: round(float(p), 6) for s, p in zip(self.sources_, self.priors_)},
            "fit_seconds": round(time.perf_counter() - started, 2),
        }
        self.reference_quantiles_ = None
        return self

    def _set_banks(self, sources: np.ndarray, emb: np.ndarray, labels: np.ndarray) -> None:
        self.sources_ = sorted(set(map(str, sources)))
        order = np.concatenate([np.flatnonzero(sources == s) for s in self.sources_])
        self.stored_embeddings_, self.embedding_scales_ = quantize_rows(np.asarray(emb)[order], self.storage)
        self.labels_ = np.asarray(labels, dtype=np.float32)[order]
        self.bank_sizes_ = np.array([(sources == s).sum() for s in self.sources_], dtype=np.int64)
        self._prepare()

    def _prepare(self) -> None:
        self.embeddings_ = dequantize_rows(self.stored_embeddings_, self.embedding_scales_)
        self.offsets_ = np.concatenate([[0], np.cumsum(self.bank_sizes_)])
        self.priors_ = np.array(
            [self.labels_[a:b].mean() for a, b in zip(self.offsets_[:-1], self.offsets_[1:])], dtype=np.float64
        )
        self.settings_ = [bank_settings(s, self.banks) for s in self.sources_]

    # Scoring ---------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if getattr(self, "embeddings_", None) is None:
            raise ConfigError(
                f"this {self.name} router is not trained; call fit(...) or load one with from_pretrained(path)"
            )

    def bank_scores(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, gates)``, both ``(n, banks)``: each bank's win rate and its gate weight."""
        scores, gates, _ = self._bank_pass(embeddings, 0)
        return scores, gates

    def _bank_pass(self, embeddings: np.ndarray, top_n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`bank_scores` plus the ``top_n`` largest similarities to any training prompt, ``(n, top_n)``,
        from the same similarity product and partial sorts (no second pass over the banks)."""
        self._check_fitted()
        e = np.asarray(embeddings, dtype=np.float32)
        if e.ndim != 2 or e.shape[1] != self.embeddings_.shape[1]:
            raise ConfigError(f"embeddings must have shape (n, {self.embeddings_.shape[1]}), got {e.shape}")
        sims = e @ self.embeddings_.T
        scores = np.empty((len(e), len(self.sources_)))
        logits = np.empty_like(scores)
        tops = []
        for j, cfg in enumerate(self.settings_):
            # one partial sort per bank serves the neighbours, the gate and the overall nearest
            idx, top = top_k(sims[:, self.offsets_[j] : self.offsets_[j + 1]], max(cfg["k"], self.gate_k, top_n))
            tops.append(top[:, :top_n])
            kk = min(cfg["k"], idx.shape[1])
            scores[:, j] = _weighted_mean(
                idx[:, :kk], top[:, :kk], self.labels_[self.offsets_[j] : self.offsets_[j + 1]],
                cfg["temperature"], self.priors_[j], cfg["prior_weight"],
            )
            logits[:, j] = (top[:, : self.gate_k].mean(axis=1) + cfg["gate_bias"]) / self.gate_temperature
        gates = np.exp(logits - logits.max(axis=1, keepdims=True))
        nearest = -np.sort(-np.concatenate(tops, axis=1), axis=1)[:, :top_n]
        return scores, gates / gates.sum(axis=1, keepdims=True), nearest

    def score_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        """Win rates for prompt embeddings ``(n, dim)``."""
        scores, gates = self.bank_scores(embeddings)
        return (scores * gates).sum(axis=1)

    def _score(self, prompts: list[str]) -> np.ndarray:
        self._check_fitted()
        return self.score_embeddings(self.embedder.embed(prompts))

    # Artifacts -------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        self._check_fitted()
        return router_config(
            self,
            scoring_pair={"strong": self.strong, "weak": self.weak},
            sources=list(self.sources_),
            bank_sizes=[int(n) for n in self.bank_sizes_],
            banks={s: cfg for s, cfg in zip(self.sources_, self.settings_)},
            gate_temperature=self.gate_temperature,
            gate_k=self.gate_k,
            storage=self.storage,
        )

    def tensors(self) -> dict[str, np.ndarray]:
        return {
            "prompt_embeddings": self.stored_embeddings_,
            "prompt_embedding_scales": self.embedding_scales_,
            "labels": self.labels_,
        }

    def save(self, path: str | Path) -> Path:
        return save_router(path, self.config(), self.tensors())

    @classmethod
    def _init_kwargs(cls, config: dict[str, Any]) -> dict[str, Any]:
        pair = config.get("scoring_pair") or {}
        return {
            "banks": config.get("banks"),
            "gate_temperature": config.get("gate_temperature", 0.01),
            "gate_k": config.get("gate_k", 10),
            "storage": config.get("storage", "int8"),
            "strong": pair.get("strong", DEFAULT_STRONG),
            "weak": pair.get("weak", DEFAULT_WEAK),
        }

    @classmethod
    def from_pretrained(cls, path: str | Path, embedder=None, *, cache: bool = False) -> "KNNRouter":
        """Load a router saved with :meth:`save`."""
        config, tensors = read_artifact(path)
        where = str(path)
        check_router_config(config, cls.name, path)
        emb = resolve_embedder(config, path, embedder, cache=cache)
        try:
            router = cls(emb, progress=False, **cls._init_kwargs(config))
        except ConfigError as exc:
            raise ArtifactError(f"{where!r}: {exc}") from None
        sources, sizes = config.get("sources"), config.get("bank_sizes")
        if (
            not isinstance(sources, list) or not isinstance(sizes, list) or len(sources) != len(sizes)
            or not sources or not all(isinstance(s, str) for s in sources)
            or not all(isinstance(n, int) and n > 0 for n in sizes)
        ):
            raise ArtifactError(f"{where!r}: config 'sources' and 'bank_sizes' must be equal-length lists, "
                                f"got {sources!r} and {sizes!r}")
        n = int(sum(sizes))
        router.stored_embeddings_ = require_tensor(tensors, "prompt_embeddings", (n, emb.dim), path)
        router.embedding_scales_ = require_tensor(tensors, "prompt_embedding_scales", (n,), path)
        labels = require_tensor(tensors, "labels", (n,), path)
        if not np.isfinite(labels).all() or labels.min() < 0 or labels.max() > 1:
            raise ArtifactError(f"tensor 'labels' in {where!r} must hold numbers in [0, 1]")
        router.labels_ = labels.astype(np.float32)
        router.sources_ = list(sources)
        router.bank_sizes_ = np.array(sizes, dtype=np.int64)
        router._prepare()
        router._load_extra(config, tensors, path)
        router.training_ = config.get("training") or {}
        router.reference_quantiles_ = quantiles_from_config(config, path)
        return router

    def _load_extra(self, config: dict[str, Any], tensors: dict[str, np.ndarray], path: str | Path) -> None:
        """Hook for subclasses that store more than the banks."""
