"""Gated nearest neighbours plus a linear head (``ensemble``).

The ``knn`` router (:mod:`shared_core.routers.knn`) knows *what a prompt is about*
from its neighbours; a linear head on the prompt embedding and a few cheap prompt
features (length, how many numbers, code and math markers, multiple-choice
shape, ...) adds *how hard it looks*. Both estimate the same quantity, the strong
model's chance of the better answer, so they are averaged on that scale:

    score = (1 - head_weight) * knn_score + head_weight * linear_score

Why both, and why ``head_weight = 0.7``: the neighbours are best inside a source
(MMLU-train 5-fold CV APGR 0.667 vs 0.660 for the head alone) but do not transfer
between sources (trained on MMLU, scored on arena-bench: 0.51; the reverse
0.48), while the head does (0.57 and 0.55). 0.7 gave the best mean of in-source
CV and cross-source transfer without losing MMLU (docs/quality.md).

The head is a weighted ridge regression of the labels on
``[embedding, standardised features]`` (sources weighted by ``source_weights``:
the 300 arena-bench prompts count 20x against 7,000 MMLU questions), solved in
closed form at training time; scoring is one matrix-vector product.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from shared_core.errors import ArtifactError, ConfigError
from shared_core.artifacts import config_number, require_tensor
from shared_core.routers import register_router
from shared_core.routers.knn import KNNRouter, _number, validate_labelled

if TYPE_CHECKING:  # pandas is needed to fit, not to route
    import pandas as pd

#: Version of :func:`prompt_features`; a saved head needs the same features.
FEATURES_VERSION = 1
FEATURE_NAMES = (
    "log_chars", "log_words", "log_numbers", "number_ratio", "log_code_markers", "log_math_markers",
    "multiple_choice", "ends_with_question_mark", "log_lines", "log_sentences",
)  # fmt: skip
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_CODE = re.compile(
    r"```|\bdef |\bclass |\bfunction\b|\breturn\b|;\s*$|\{|\}|==|=>|\bimport\b|#include|\bSELECT\b|</?\w+>", re.M
)
_MATH = re.compile(
    r"[=+\-*/^]|\bsolve\b|\bcalculate\b|\bcompute\b|\bequation\b|\bprobability\b|\bhow many\b|\bhow much\b"
    r"|\bintegral\b|\bderivative\b|\bprove\b",
    re.I,
)
_CHOICE = re.compile(r"^\s*[A-D][.)]\s", re.M)
_SENTENCE_END = re.compile(r"[.!?](\s|$)")
DEFAULT_SOURCE_WEIGHTS = {"arena": 20.0}


def prompt_features(prompts: Sequence[str]) -> np.ndarray:
    """Cheap features of each prompt, ``(n, len(FEATURE_NAMES))`` float64 (see :data:`FEATURE_NAMES`)."""
    out = np.empty((len(prompts), len(FEATURE_NAMES)))
    for i, p in enumerate(prompts):
        words = len(p.split())
        numbers = len(_NUMBER.findall(p))
        out[i] = (
            np.log1p(len(p)), np.log1p(words), np.log1p(numbers), numbers / max(words, 1),
            np.log1p(len(_CODE.findall(p))), np.log1p(len(_MATH.findall(p))),
            float(len(_CHOICE.findall(p)) >= 3), float(p.rstrip().endswith("?")),
            np.log1p(p.count("\n")), np.log1p(len(_SENTENCE_END.findall(p))),
        )  # fmt: skip
    return out


def fit_weighted_ridge(x: np.ndarray, y: np.ndarray, weights: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """``(coef, intercept)`` minimising ``sum w (y - x coef - b)^2 + alpha |coef|^2`` (scikit-learn's Ridge)."""
    w = weights / weights.sum() * len(weights)
    xm = (w[:, None] * x).sum(axis=0) / w.sum()
    ym = float((w * y).sum() / w.sum())
    xc, yc = x - xm, y - ym
    gram = (xc * w[:, None]).T @ xc + alpha * np.eye(x.shape[1])
    coef = np.linalg.solve(gram, (xc * w[:, None]).T @ yc)
    return coef, ym - float(xm @ coef)


@register_router
class EnsembleRouter(KNNRouter):
    """The ``knn`` router averaged with a linear head on embedding + prompt features.

    >>> import pandas as pd
    >>> from shared_core.embeddings import HashEmbedder
    >>> labelled = pd.DataFrame({"prompt": ["prove the theorem 12 + 7", "say hi"] * 5,
    ...     "label": [1.0, 0.0] * 5, "source": "demo"})
    >>> router = EnsembleRouter(HashEmbedder(), banks={"demo": {"k": 3}}).fit(labelled)
    >>> scores = router.score(["prove the theorem 12 + 7", "say hi"])
    >>> bool(scores[0] > scores[1])
    True
    """

    name = "ensemble"

    def __init__(
        self,
        embedder,
        *,
        head_weight: float = 0.7,
        ridge_alpha: float = 10.0,
        source_weights: Mapping[str, float] | None = None,
        **knn_kwargs: Any,
    ) -> None:
        super().__init__(embedder, **knn_kwargs)
        self.head_weight = _number(head_weight, "head_weight", low=0)
        if self.head_weight > 1:
            raise ConfigError(f"head_weight must be in [0, 1], got {head_weight!r}")
        self.ridge_alpha = _number(ridge_alpha, "ridge_alpha", low=0, strict=True)
        weights = DEFAULT_SOURCE_WEIGHTS if source_weights is None else source_weights
        if not isinstance(weights, Mapping):
            raise ConfigError(f"source_weights must map a source to a weight, got {type(weights).__name__}")
        self.source_weights = {
            str(s): _number(v, f"source_weights[{s!r}]", low=0, strict=True) for s, v in weights.items()
        }

    def fit(self, labelled: pd.DataFrame, *, progress: bool | None = None) -> "EnsembleRouter":
        """Fit the kNN banks, then the linear head on the same labelled prompts."""
        df = validate_labelled(labelled)
        super().fit(df, progress=progress)
        # The banks hold the (quantised) embeddings sorted by source; rebuild the same order.
        order = np.concatenate([np.flatnonzero(df["source"].to_numpy() == s) for s in self.sources_])
        prompts = df["prompt"].to_numpy()[order]
        feats = prompt_features(list(prompts))
        self.feature_mean_ = feats.mean(axis=0)
        self.feature_scale_ = np.maximum(feats.std(axis=0), 1e-6)
        x = np.hstack([self.embeddings_, (feats - self.feature_mean_) / self.feature_scale_])
        sources = df["source"].to_numpy()[order]
        weights = np.array([self.source_weights.get(s, 1.0) for s in sources])
        coef, intercept = fit_weighted_ridge(x, self.labels_.astype(np.float64), weights, self.ridge_alpha)
        self.coef_ = coef.astype(np.float32)
        self.intercept_ = float(intercept)
        self.training_["head"] = {"ridge_alpha": self.ridge_alpha, "source_weights": self.source_weights}
        return self

    def head_scores(self, prompts: Sequence[str], embeddings: np.ndarray) -> np.ndarray:
        """The linear head's win rates (clipped to [0, 1])."""
        feats = (prompt_features(prompts) - self.feature_mean_) / self.feature_scale_
        x = np.hstack([np.asarray(embeddings, dtype=np.float64), feats])
        return np.clip(x @ self.coef_.astype(np.float64) + self.intercept_, 0.0, 1.0)

    def _score(self, prompts: list[str]) -> np.ndarray:
        self._check_fitted()
        emb = self.embedder.embed(prompts)
        knn = self.score_embeddings(emb)
        return (1.0 - self.head_weight) * knn + self.head_weight * self.head_scores(prompts, emb)

    # Artifacts -------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "head_weight": self.head_weight,
            "ridge_alpha": self.ridge_alpha,
            "source_weights": self.source_weights,
            "features": {"version": FEATURES_VERSION, "names": list(FEATURE_NAMES)},
            "intercept": self.intercept_,
        }

    def tensors(self) -> dict[str, np.ndarray]:
        return {
            **super().tensors(),
            "head_coef": self.coef_,
            "feature_mean": self.feature_mean_.astype(np.float64),
            "feature_scale": self.feature_scale_.astype(np.float64),
        }

    @classmethod
    def _init_kwargs(cls, config: dict[str, Any]) -> dict[str, Any]:
        return {
            **super()._init_kwargs(config),
            "head_weight": config.get("head_weight", 0.7),
            "ridge_alpha": config.get("ridge_alpha", 10.0),
            "source_weights": config.get("source_weights"),
        }

    def _load_extra(self, config: dict[str, Any], tensors: dict[str, np.ndarray], path: str | Path) -> None:
        feats = config.get("features") or {}
        if feats.get("version") != FEATURES_VERSION or list(feats.get("names") or []) != list(FEATURE_NAMES):
            raise ArtifactError(
                f"{str(path)!r} was trained on prompt features {feats!r}; this version computes "
                f"version {FEATURES_VERSION} {list(FEATURE_NAMES)}"
            )
        dim = self.embedder.dim
        nf = len(FEATURE_NAMES)
        self.coef_ = require_tensor(tensors, "head_coef", (dim + nf,), path).astype(np.float32)
        self.feature_mean_ = require_tensor(tensors, "feature_mean", (nf,), path).astype(np.float64)
        self.feature_scale_ = require_tensor(tensors, "feature_scale", (nf,), path).astype(np.float64)
        self.intercept_ = config_number(config, "intercept", path)
