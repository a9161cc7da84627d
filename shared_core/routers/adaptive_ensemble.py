"""``ensemble`` whose neighbour weight follows how close the nearest training prompts are (``adaptive_ensemble``).

The ``ensemble`` router (:mod:`shared_core.routers.ensemble`) averages gated
neighbours and a linear head with a fixed weight (0.3 / 0.7). The neighbours
are the better predictor *inside* a training source and a poor one outside it
(trained on MMLU, scored on arena-bench: APGR 0.51; the reverse 0.48), while
the head transfers (0.57 / 0.55). So here the neighbours' weight depends on the
prompt's mean cosine similarity ``s`` to its ``sim_k`` nearest training prompts:

    w = knn_weight * clip((s - sim_low) / (sim_high - sim_low), 0, 1)
    score = w * knn_score + (1 - w) * linear_score

A prompt with close neighbours (most MMLU questions: median ``s`` 0.48) gets up to
weight ``knn_weight`` (0.7) on the neighbours; a prompt unlike anything trained on
(median 0.21 for MMLU questions against the arena-bench bank) the head alone.

Because far-away prompts no longer see the neighbours, the neighbour part can be
made more source-specific without hurting transfer: a softmax classifier from
embedding to MMLU subject (``group``) predicts each prompt's expected subject
label, mixed 50/50 into the MMLU bank's neighbour score (on its own this lifted
MMLU but lowered transfer in ``ensemble``; docs/quality.md #22).

The head also gets two prompt features more than ``ensemble``'s (count of
arithmetic-quantity words such as *total, each, per, percent, cost*, and of
programming words such as *python, function, implement*); of ten candidate
features these were the ones whose correlation with the label had the same
sign on MMLU and on arena-bench.

Dev numbers (MMLU-train 5-fold CV / arena-bench 5-fold CV / MMLU->arena /
arena->MMLU; docs/quality.md, second round): ``ensemble`` 0.671 / 0.561 /
0.556 / 0.530 (mean 0.580); this router 0.678 / 0.570 / 0.569 / 0.539 (mean 0.589).

Optionally (:meth:`AdaptiveEnsembleRouter.fit_difficulty`) a **difficulty head**
adds what every model's outcome says, not only the pair's: a ridge from the
embedding to a prompt's multi-model difficulty (1 - the mean outcome of all the
models that answered it), blended in with weight ``blend`` on the reference
set's standardised scale::

    score = clip(s + blend / (1 - blend) * sd(s) / sd(d) * (d - mean(d)), 0, 1)

(``s`` the score above, ``d`` the difficulty; ``sd`` and ``mean`` on the
reference prompts). It orders prompts as ``(1 - blend) z(s) + blend z(d)``.
The head reads the sentence embedding, or (``layers``) the mean token states of
inner layers of the same embedder, taken from the same forward pass
(:meth:`~shared_core.embeddings.Embedder.embed_layers`): MiniLM's third layer
predicts difficulty better than its pooled last one (docs/quality.md, seventh round).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from shared_core.artifacts import config_number, require_tensor
from shared_core.embeddings.base import check_layers
from shared_core.errors import ArtifactError, ConfigError
from shared_core.routers import register_router
from shared_core.routers.ensemble import FEATURE_NAMES as BASE_FEATURE_NAMES
from shared_core.routers.ensemble import EnsembleRouter, fit_weighted_ridge, prompt_features
from shared_core.routers.knn import KNNRouter, _number, validate_labelled

if TYPE_CHECKING:  # pandas is needed to fit, not to route
    import pandas as pd

#: Version of :func:`adaptive_features`; a saved head needs the same features.
FEATURES_VERSION = 1
FEATURE_NAMES = (*BASE_FEATURE_NAMES, "log_quantity_words", "log_code_words")
_QUANTITY = re.compile(
    r"\b(total|each|per|times|twice|half|double|triple|percent|more than|less than|fewer|left|remain\w*|"
    r"spend|spent|cost\w*|pay\w*|earn\w*|buy\w*|bought|sell\w*|sold|save\w*|split|share|every|average|"
    r"rate|profit|discount|hours?|minutes?|days?|weeks?|miles?|dollars?|cents?)\b",
    re.I,
)
_CODE_WORDS = re.compile(
    r"\b(python|javascript|java|c\+\+|sql|code|function|program|script|algorithm|implement)\b", re.I
)


def adaptive_features(prompts: Sequence[str]) -> np.ndarray:
    """``ensemble``'s prompt features plus the two of :data:`FEATURE_NAMES` it lacks, ``(n, 12)``."""
    extra = np.array([[np.log1p(len(_QUANTITY.findall(p))), np.log1p(len(_CODE_WORDS.findall(p)))] for p in prompts])
    return np.hstack([prompt_features(prompts), extra.reshape(len(prompts), 2)])


def fit_softmax(x: np.ndarray, classes: np.ndarray, n_classes: int, c: float) -> tuple[np.ndarray, np.ndarray]:
    """``(coef (dim, n_classes), intercept (n_classes,))`` of an L2 multinomial logistic regression.

    Minimises ``sum cross-entropy + |coef|^2 / (2 c)`` (scikit-learn's ``LogisticRegression(C=c)``) with
    full-batch L-BFGS from zeros, so the result is deterministic.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        xt = torch.as_tensor(np.asarray(x, dtype=np.float64))
        yt = torch.as_tensor(np.asarray(classes, dtype=np.int64))
        coef = torch.zeros((x.shape[1], n_classes), dtype=torch.float64, requires_grad=True)
        bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([coef, bias], lr=1.0, max_iter=500, tolerance_grad=1e-6,
                                tolerance_change=1e-10, history_size=20, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(xt @ coef + bias, yt, reduction="sum")
            loss = (loss + (coef**2).sum() / (2.0 * c)) / len(x)
            loss.backward()
            return loss

        opt.step(closure)
        return coef.detach().numpy(), bias.detach().numpy()
    finally:
        torch.set_num_threads(threads)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


@register_router
class AdaptiveEnsembleRouter(EnsembleRouter):
    """``ensemble`` with a neighbour weight that shrinks to 0 for prompts far from the training data.

    Labelled prompts may carry a ``group`` column (MMLU: the subject). A softmax
    classifier from embedding to group then predicts each prompt's expected
    group label, which is mixed into the neighbour score of the groups' bank
    with weight ``group_mix`` (groups must all come from one source).

    >>> import pandas as pd
    >>> from shared_core.embeddings import HashEmbedder
    >>> labelled = pd.DataFrame({"prompt": ["prove the theorem 12 + 7", "say hi"] * 5,
    ...     "label": [1.0, 0.0] * 5, "source": "demo", "group": ["maths", "chat"] * 5})
    >>> router = AdaptiveEnsembleRouter(HashEmbedder(), banks={"demo": {"k": 3}}).fit(labelled)
    >>> scores = router.score(["prove the theorem 12 + 7", "say hi"])
    >>> bool(scores[0] > scores[1])
    True
    """

    name = "adaptive_ensemble"

    def __init__(
        self,
        embedder,
        *,
        knn_weight: float = 0.7,
        sim_low: float = 0.35,
        sim_high: float = 0.5,
        sim_k: int = 10,
        group_mix: float = 0.5,
        group_c: float = 10.0,
        group_prior_weight: float = 5.0,
        **ensemble_kwargs: Any,
    ) -> None:
        weight = _number(knn_weight, "knn_weight", low=0)
        mix = _number(group_mix, "group_mix", low=0)
        for value, name, given in ((weight, "knn_weight", knn_weight), (mix, "group_mix", group_mix)):
            if value > 1:
                raise ConfigError(f"{name} must be in [0, 1], got {given!r}")
        ensemble_kwargs.pop("head_weight", None)  # the weight is per prompt here
        super().__init__(embedder, head_weight=1.0 - weight, **ensemble_kwargs)
        self.knn_weight = weight
        self.sim_low = _number(sim_low, "sim_low", low=-1)
        self.sim_high = _number(sim_high, "sim_high", low=-1)
        if not self.sim_low < self.sim_high <= 1:
            raise ConfigError(f"need -1 <= sim_low < sim_high <= 1, got sim_low={sim_low!r}, sim_high={sim_high!r}")
        self.sim_k = int(_number(sim_k, "sim_k", low=1, integer=True))
        self.group_mix = mix
        self.group_c = _number(group_c, "group_c", low=0, strict=True)
        self.group_prior_weight = _number(group_prior_weight, "group_prior_weight", low=0)
        self.difficulty_coef_: np.ndarray | None = None  # fit_difficulty sets the head, if any
        self.difficulty_intercept_ = self.difficulty_scale_ = self.difficulty_center_ = 0.0
        self.difficulty_blend: float | None = None
        self.difficulty_layers_: tuple[int, ...] = ()  # () = the head reads the sentence embedding

    @property
    def embedding_layers(self) -> tuple[int, ...]:
        """The embedder's inner layers that scoring reads beside the embedding (none without a layer head)."""
        return self.difficulty_layers_ if self.difficulty_coef_ is not None else ()

    def _embed(self, prompts: Sequence[str], layers: tuple[int, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The embeddings and what the difficulty head reads: the same embeddings, or the states of
        ``layers`` (default: :attr:`embedding_layers`)."""
        layers = self.embedding_layers if layers is None else layers
        if layers:
            return self.embedder.embed_layers(list(prompts), layers)
        emb = self.embedder.embed(list(prompts))
        return emb, emb

    # Training --------------------------------------------------------------------
    def fit(self, labelled: pd.DataFrame, *, progress: bool | None = None) -> "AdaptiveEnsembleRouter":
        """Fit the kNN banks, the group classifier (if ``group`` is given) and the linear head."""
        df = validate_labelled(labelled)
        KNNRouter.fit(self, df, progress=progress)
        order = np.concatenate([np.flatnonzero(df["source"].to_numpy() == s) for s in self.sources_])
        self._fit_groups(df.iloc[order].reset_index(drop=True))
        feats = adaptive_features(list(df["prompt"].to_numpy()[order]))
        self.feature_mean_ = feats.mean(axis=0)
        self.feature_scale_ = np.maximum(feats.std(axis=0), 1e-6)
        x = np.hstack([self.embeddings_, (feats - self.feature_mean_) / self.feature_scale_])
        weights = np.array([self.source_weights.get(s, 1.0) for s in df["source"].to_numpy()[order]])
        coef, intercept = fit_weighted_ridge(x, self.labels_.astype(np.float64), weights, self.ridge_alpha)
        self.coef_ = coef.astype(np.float32)
        self.intercept_ = float(intercept)
        self.training_["head"] = {"ridge_alpha": self.ridge_alpha, "source_weights": self.source_weights}
        return self

    def _fit_groups(self, df: pd.DataFrame) -> None:
        """Classifier from embedding to group over the rows with a group; rows are in bank order."""
        self.groups_, self.group_source_ = [], None
        if "group" not in df.columns or self.group_mix == 0:
            return
        has = df["group"].notna().to_numpy() & (df["group"].astype(str).str.strip() != "").to_numpy()
        if has.sum() == 0:
            return
        sources = sorted(set(df["source"][has]))
        if len(sources) > 1:
            raise ConfigError(f"groups must all come from one source, got groups in sources {sources}")
        groups = df["group"][has].astype(str).to_numpy()
        self.groups_ = sorted(set(groups))
        if len(self.groups_) < 2:
            self.groups_ = []
            return
        self.group_source_ = sources[0]
        idx = np.searchsorted(np.array(self.groups_), groups)
        labels = self.labels_[has].astype(np.float64)
        counts = np.bincount(idx, minlength=len(self.groups_))
        sums = np.bincount(idx, weights=labels, minlength=len(self.groups_))
        self.group_value_ = (sums + self.group_prior_weight * labels.mean()) / (counts + self.group_prior_weight)
        coef, bias = fit_softmax(self.embeddings_[has], idx, len(self.groups_), self.group_c)
        self.group_coef_, self.group_intercept_ = coef.astype(np.float32), bias.astype(np.float64)
        self.training_["groups"] = {
            "source": self.group_source_, "groups": len(self.groups_), "prompts": int(has.sum())
        }

    def fit_difficulty(self, frame: "pd.DataFrame", reference: Sequence[str], *, blend: float,
                       alpha: float = 100.0, layers: Sequence[int] = ()) -> "AdaptiveEnsembleRouter":
        """Fit the difficulty head on ``frame`` (``prompt``, ``difficulty`` in [0, 1],
        ``source``; each source's rows weigh as much in all as another source's) and
        blend it in with weight ``blend`` (0 < blend < 1), scaled on ``reference``.
        With ``layers`` the head reads those inner layers' mean token states instead
        of the sentence embedding."""
        self._check_fitted()
        layers_ = () if isinstance(layers, (list, tuple)) and not layers else check_layers(layers)
        blend_ = _number(blend, "blend", low=0, strict=True)
        if blend_ >= 1:
            raise ConfigError(f"blend must be in (0, 1), got {blend!r}")
        alpha_ = _number(alpha, "alpha", low=0, strict=True)
        missing = {"prompt", "difficulty", "source"} - set(frame.columns)
        if missing:
            raise ConfigError(f"the difficulty frame needs columns {sorted(missing)}; it has {list(frame.columns)}")
        y = frame["difficulty"].to_numpy(dtype=np.float64)
        if len(y) == 0 or not np.all(np.isfinite(y)) or y.min() < 0 or y.max() > 1:
            raise ConfigError("difficulties must be numbers in [0, 1], at least one")
        reference = list(reference)
        if len(reference) < 2:
            raise ConfigError(f"the difficulty head is scaled on the reference prompts; got {len(reference)}")
        sources = frame["source"].astype(str).to_numpy()
        counts = {src: int((sources == src).sum()) for src in sorted(set(sources))}
        weights = np.array([1.0 / counts[src] for src in sources])
        weights *= len(weights) / weights.sum()
        x = np.asarray(self._embed(list(frame["prompt"]), layers_)[1], dtype=np.float64)
        mean = (weights[:, None] * x).sum(axis=0) / weights.sum()
        scale = np.maximum(np.sqrt((weights[:, None] * (x - mean) ** 2).sum(axis=0) / weights.sum()), 1e-6)
        coef_z, intercept_z = fit_weighted_ridge((x - mean) / scale, y, weights, alpha_)  # standardised columns
        self.difficulty_coef_, self.difficulty_layers_ = (coef_z / scale).astype(np.float32), layers_
        self.difficulty_intercept_ = float(intercept_z - (mean / scale) @ coef_z)
        emb, head_input = self._embed(reference)
        base, d = self._base_scores(reference, emb), self.difficulty_scores(head_input)
        self.difficulty_center_ = float(d.mean())
        self.difficulty_scale_ = float(blend_ / (1 - blend_) * base.std() / max(d.std(), 1e-12))
        self.difficulty_blend = blend_
        self.training_["difficulty"] = {"blend": blend_, "ridge_alpha": alpha_, "prompts": counts,
                                        "target": "1 - mean outcome of every model that answered the prompt",
                                        "input": (f"mean token states of the embedder's layers {list(layers_)}"
                                                  if layers_ else "the sentence embedding")}
        return self

    # Scoring ---------------------------------------------------------------------
    def difficulty_scores(self, head_input: np.ndarray) -> np.ndarray:
        """The difficulty head's prediction (about [0, 1]: 1 - every model's mean outcome) from what it
        reads: the embeddings, or the layer states of :attr:`embedding_layers`."""
        return np.asarray(head_input, dtype=np.float64) @ self.difficulty_coef_.astype(np.float64) \
            + self.difficulty_intercept_

    def group_scores(self, embeddings: np.ndarray) -> np.ndarray:
        """Expected label of each prompt's predicted group (probability-weighted group means)."""
        logits = np.asarray(embeddings, dtype=np.float64) @ self.group_coef_.astype(np.float64) + self.group_intercept_
        return _softmax(logits) @ self.group_value_

    def score_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        """The gated neighbour win rates, the groups' bank mixed with :meth:`group_scores`."""
        scores, gates = self.bank_scores(embeddings)
        return self._mix_groups(scores, gates, embeddings)

    def _mix_groups(self, scores: np.ndarray, gates: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
        if self.groups_ and self.group_source_ in self.sources_:
            j = self.sources_.index(self.group_source_)
            scores[:, j] = (1 - self.group_mix) * scores[:, j] + self.group_mix * self.group_scores(embeddings)
        return (scores * gates).sum(axis=1)

    def head_scores(self, prompts: Sequence[str], embeddings: np.ndarray) -> np.ndarray:
        """The linear head's win rates (clipped to [0, 1])."""
        feats = (adaptive_features(prompts) - self.feature_mean_) / self.feature_scale_
        x = np.hstack([np.asarray(embeddings, dtype=np.float64), feats])
        return np.clip(x @ self.coef_.astype(np.float64) + self.intercept_, 0.0, 1.0)

    def knn_weights(self, embeddings: np.ndarray) -> np.ndarray:
        """Per-prompt weight of the neighbours, from the mean similarity of the ``sim_k`` nearest training prompts."""
        return self._weights_from_nearest(self._bank_pass(embeddings, self.sim_k)[2])

    def _weights_from_nearest(self, nearest: np.ndarray) -> np.ndarray:
        closeness = (nearest.mean(axis=1) - self.sim_low) / (self.sim_high - self.sim_low)
        return self.knn_weight * np.clip(closeness, 0.0, 1.0)

    def _base_scores(self, prompts: Sequence[str], emb: np.ndarray) -> np.ndarray:
        """The neighbours and the linear head mixed by closeness (the score without the difficulty head)."""
        scores, gates, nearest = self._bank_pass(emb, self.sim_k)  # one similarity product for everything
        w = self._weights_from_nearest(nearest)
        return w * self._mix_groups(scores, gates, emb) + (1.0 - w) * self.head_scores(prompts, emb)

    def _score(self, prompts: list[str]) -> np.ndarray:
        self._check_fitted()
        emb, head_input = self._embed(prompts)
        out = self._base_scores(prompts, emb)
        if self.difficulty_coef_ is not None:
            out = np.clip(out + self.difficulty_scale_ * (self.difficulty_scores(head_input) - self.difficulty_center_),
                          0.0, 1.0)
        return out

    # Artifacts -------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        config = super().config()
        config.pop("head_weight", None)
        return {
            **config,
            "knn_weight": self.knn_weight,
            "sim_low": self.sim_low,
            "sim_high": self.sim_high,
            "sim_k": self.sim_k,
            "group_mix": self.group_mix,
            "group_c": self.group_c,
            "group_prior_weight": self.group_prior_weight,
            "group_source": self.group_source_,
            "groups": list(self.groups_),
            "features": {"version": FEATURES_VERSION, "names": list(FEATURE_NAMES)},
            **({} if self.difficulty_coef_ is None else {"difficulty": {
                "blend": self.difficulty_blend, "intercept": self.difficulty_intercept_,
                "scale": self.difficulty_scale_, "center": self.difficulty_center_,
                **({"layers": list(self.difficulty_layers_)} if self.difficulty_layers_ else {})}}),
        }

    def tensors(self) -> dict[str, np.ndarray]:
        out = super().tensors()
        if self.groups_:
            out.update(group_coef=self.group_coef_, group_intercept=self.group_intercept_,
                       group_value=self.group_value_.astype(np.float64))
        if self.difficulty_coef_ is not None:
            out["difficulty_coef"] = self.difficulty_coef_
        return out

    @classmethod
    def _init_kwargs(cls, config: dict[str, Any]) -> dict[str, Any]:
        kwargs = super()._init_kwargs(config)
        kwargs.pop("head_weight", None)
        defaults = {"knn_weight": 0.7, "sim_low": 0.35, "sim_high": 0.5, "sim_k": 10, "group_mix": 0.5,
                    "group_c": 10.0, "group_prior_weight": 5.0}
        return {**kwargs, **{k: config.get(k, v) for k, v in defaults.items()}}

    def _load_extra(self, config: dict[str, Any], tensors: dict[str, np.ndarray], path: str | Path) -> None:
        feats = config.get("features") or {}
        if feats.get("version") != FEATURES_VERSION or list(feats.get("names") or []) != list(FEATURE_NAMES):
            raise ArtifactError(
                f"{str(path)!r} was trained on prompt features {feats!r}; this version computes "
                f"version {FEATURES_VERSION} {list(FEATURE_NAMES)}"
            )
        dim, nf = self.embedder.dim, len(FEATURE_NAMES)
        self.coef_ = require_tensor(tensors, "head_coef", (dim + nf,), path).astype(np.float32)
        self.feature_mean_ = require_tensor(tensors, "feature_mean", (nf,), path).astype(np.float64)
        self.feature_scale_ = require_tensor(tensors, "feature_scale", (nf,), path).astype(np.float64)
        self.intercept_ = config_number(config, "intercept", path)
        groups, source = config.get("groups") or [], config.get("group_source")
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise ArtifactError(f"{str(path)!r}: config 'groups' must be a list of names, got {groups!r}")
        self.groups_, self.group_source_ = list(groups), source
        if groups:
            if source not in self.sources_:
                raise ArtifactError(f"{str(path)!r}: config 'group_source' {source!r} is not one of {self.sources_}")
            g = len(groups)
            self.group_coef_ = require_tensor(tensors, "group_coef", (dim, g), path).astype(np.float32)
            self.group_intercept_ = require_tensor(tensors, "group_intercept", (g,), path).astype(np.float64)
            self.group_value_ = require_tensor(tensors, "group_value", (g,), path).astype(np.float64)
        head = config.get("difficulty")
        if head is not None:
            numbers = {key: config_number(head, key, path, "difficulty") for key in ("blend", "intercept", "scale", "center")}
            try:
                layers = check_layers(head["layers"]) if "layers" in head else ()
            except ConfigError as exc:
                raise ArtifactError(f"{str(path)!r}: config 'difficulty' 'layers': {exc}") from None
            self.difficulty_layers_ = layers
            width = len(layers) * dim if layers else dim
            self.difficulty_coef_ = require_tensor(tensors, "difficulty_coef", (width,), path).astype(np.float32)
            self.difficulty_blend, self.difficulty_intercept_ = numbers["blend"], numbers["intercept"]
            self.difficulty_scale_, self.difficulty_center_ = numbers["scale"], numbers["center"]
