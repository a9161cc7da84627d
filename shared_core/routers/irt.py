"""A multi-model item-response router (``irt``): every model's outcome on every prompt teaches it.

RouteLLM's ``mf`` learns from battles of one pair at a time. Here each training
observation is *one model's outcome on one prompt*, from any number of models
(MMLU: 2, arena-bench: 15, MMLU-Pro: 30, AlpacaEval: 69), and the model is an
item-response model whose item parameters are predicted from the prompt text:

* a prompt ``x`` (its embedding, plus the cheap features of
  :mod:`shared_core.features`, standardised) has a **difficulty**
  ``d(x) = w_d . x + b_d`` and a **skill vector** ``v(x) = W_v^T x`` (``skills``
  dimensions: what kind of work it asks for);
* a model ``m`` has an **ability** ``theta_m`` and **skill loadings** ``u_m``;
* the logit of model ``m`` doing well on ``x`` is
  ``eta_m(x) = theta_m + u_m . v(x) - d(x)``.

Observations are fitted by their kind: ``binary`` (right/wrong: MMLU, MMLU-Pro)
and ``grade`` (a 1-10 judge grade as the soft target ``(g - 1) / 9``, with its own
offset: arena-bench) by binary cross-entropy on ``sigmoid(eta_m)``; ``pref`` (the
probability that ``m``'s answer beats a reference model's: AlpacaEval) by
cross-entropy on ``sigmoid(eta_m - eta_ref)``, a Bradley-Terry comparison in
which the difficulty cancels. Each source counts by its ``source_weights`` share,
not by its number of rows, so 300 arena prompts are not drowned by 155,000
MMLU-Pro outcomes.

The score of a prompt for the scoring pair (``strong``, ``weak``: any two models
of the table) is the expected gain, on the win-rate scale of the other routers:

    score(x) = 0.5 + 0.5 * (sigmoid(eta_strong(x)) - sigmoid(eta_weak(x)))

so a prompt both models find easy (or both find impossible) scores 0.5, and one
where only the strong model is likely to do well scores up to 1. Scoring is one
matrix product with a ``(dim + features) x (1 + skills)`` matrix: microseconds.
The fit (torch, full batch Adam, seeded) takes seconds.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from shared_core.artifacts import (
    check_router_config,
    config_number,
    read_artifact,
    require_tensor,
    resolve_embedder,
    router_config,
    save_router,
    saved_quantiles,
)
from shared_core.errors import ArtifactError, ConfigError, DataError
from shared_core.features import FEATURE_NAMES, FEATURES_VERSION, prompt_features
from shared_core.routers import Router, register_router
from shared_core.routers._models import (
    DEFAULT_STRONG,
    DEFAULT_WEAK,
    check_pair_config,
    model_index,
    model_key,
    scoring_pair,
    unique_models,
)
from shared_core.routers.knn import _number

if TYPE_CHECKING:  # pandas is needed to fit, not to route
    import pandas as pd

#: Columns of the observations :meth:`IRTRouter.fit` learns from.
OBSERVATION_COLUMNS = ("prompt", "source", "model", "outcome", "kind")
KINDS = ("binary", "grade", "pref")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def validate_observations(df: Any) -> pd.DataFrame:
    """Check a table of per-model outcomes (see :data:`OBSERVATION_COLUMNS`).

    ``outcome`` is in [0, 1] (``binary``: 1 right, 0 wrong; ``grade``: ``(g - 1) / 9``;
    ``pref``: P(``model`` beats ``reference``)); ``pref`` rows also need ``reference``.
    """
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise DataError(f"observations must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in OBSERVATION_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"observations miss column(s) {missing}; expected {list(OBSERVATION_COLUMNS)} (+ 'reference')")
    if len(df) == 0:
        raise DataError("observations have no rows")
    out = df.reset_index(drop=True)
    for column in ("prompt", "source", "model"):
        bad = [i for i, v in enumerate(out[column]) if not isinstance(v, str) or not v.strip()]
        if bad:
            raise DataError(f"observations column {column!r} row {bad[0]} must be a non-empty string, got {out[column][bad[0]]!r}")
    kinds = ~out["kind"].isin(KINDS)
    if kinds.any():
        i = int(np.flatnonzero(kinds.to_numpy())[0])
        raise DataError(f"observations row {i}: kind {out['kind'][i]!r}; expected one of {', '.join(KINDS)}")
    y = pd.to_numeric(out["outcome"], errors="coerce").to_numpy(float)
    bad = np.flatnonzero(~np.isfinite(y) | (y < 0) | (y > 1))
    if bad.size:
        raise DataError(f"observations row {bad[0]}: outcome {str(out['outcome'][bad[0]])!r} must be a number in [0, 1]")
    pref = (out["kind"] == "pref").to_numpy()
    if pref.any():
        if "reference" not in out.columns:
            raise DataError("'pref' observations need a 'reference' column naming the model compared against")
        refs = out["reference"][pref]
        bad_ref = [i for i, v in zip(np.flatnonzero(pref), refs) if not isinstance(v, str) or not v.strip()]
        if bad_ref:
            raise DataError(f"observations row {bad_ref[0]}: a 'pref' row needs a reference model name")
    return out.assign(outcome=y)


@register_router
class IRTRouter(Router):
    """Item-response router over many models; scores the configured pair's expected gain.

    >>> import pandas as pd
    >>> from shared_core.embeddings import HashEmbedder
    >>> rows = [(p, "demo", m, float(ok), "binary") for p, hard in (("prove the theorem", 1), ("say hi", 0))
    ...         for _ in range(5) for m, ok in (("big", True), ("small", not hard))]
    >>> obs = pd.DataFrame(rows, columns=["prompt", "source", "model", "outcome", "kind"])
    >>> router = IRTRouter(HashEmbedder(), strong="big", weak="small", steps=200).fit(obs)
    >>> scores = router.score(["prove the theorem", "say hi"])
    >>> bool(scores[0] > scores[1])
    True
    """

    name = "irt"

    def __init__(
        self,
        embedder,
        *,
        strong: str = DEFAULT_STRONG,
        weak: str = DEFAULT_WEAK,
        skills: int = 8,
        steps: int = 250,
        lr: float = 0.05,
        l2: float = 1e-3,
        source_weights: Mapping[str, float] | None = None,
        seed: int = 0,
        progress: bool = True,
    ) -> None:
        if embedder is None or not hasattr(embedder, "embed"):
            raise ConfigError(f"embedder must be an Embedder, got {embedder!r}")
        for role, value in (("strong", strong), ("weak", weak)):
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{role} must be a model name, got {value!r}")
        if model_key(strong) == model_key(weak):
            raise ConfigError(f"strong model {strong!r} and weak model {weak!r} are the same model")
        if source_weights is not None and not isinstance(source_weights, Mapping):
            raise ConfigError(f"source_weights must map a source to a weight, got {type(source_weights).__name__}")
        self.embedder = embedder
        self.strong = strong
        self.weak = weak
        self.skills = int(_number(skills, "skills", low=0, integer=True))
        self.steps = int(_number(steps, "steps", low=1, integer=True))
        self.lr = _number(lr, "lr", low=0, strict=True)
        self.l2 = _number(l2, "l2", low=0)
        self.source_weights = {
            str(s): _number(v, f"source_weights[{s!r}]", low=0, strict=True) for s, v in (source_weights or {}).items()
        }
        self.seed = int(_number(seed, "seed", low=0, integer=True))
        self.progress = progress

    # Training --------------------------------------------------------------------
    def fit(self, observations: pd.DataFrame, *, progress: bool | None = None) -> "IRTRouter":
        """Embed the observed prompts once and fit the item-response model (torch, full batch)."""
        import torch

        show = self.progress if progress is None else progress
        started = time.perf_counter()
        obs = validate_observations(observations)
        pref = (obs["kind"] == "pref").to_numpy()
        names = [*obs["model"], *(obs["reference"][pref] if pref.any() else [])]
        self.models_ = unique_models(names)
        scoring_pair(self.models_, self.strong, self.weak)  # the pair must be among the observed models
        prompts = list(dict.fromkeys(obs["prompt"]))
        row = {p: i for i, p in enumerate(prompts)}
        emb = np.asarray(self.embedder.embed(prompts, show_progress=show), dtype=np.float32)
        feats = prompt_features(prompts)
        self.feature_mean_ = feats.mean(axis=0)
        self.feature_scale_ = np.maximum(feats.std(axis=0), 1e-6)
        x = np.hstack([emb, (feats - self.feature_mean_) / self.feature_scale_]).astype(np.float32)

        keys = {model_key(m): i for i, m in enumerate(self.models_)}
        obs = obs.assign(row=obs["prompt"].map(row), col=[keys[model_key(m)] for m in obs["model"]])
        if pref.any():
            obs.loc[pref, "ref"] = [keys[model_key(m)] for m in obs["reference"][pref]]
        obs["ref"] = obs["ref"].fillna(-1).astype(int) if "ref" in obs.columns else -1
        counts = obs["source"].value_counts()
        per_source = obs.drop_duplicates(["source", "row", "col"])["source"].value_counts()
        weights = {s: self.source_weights.get(s, 1.0) for s in counts.index}
        total = sum(weights.values())
        # One dense (prompts x models) block per source, kind and reference: a matrix product per
        # block instead of a gather per observation; each source's loss share is its weight.
        blocks = []
        for (source, kind, ref), part in obs.groupby(["source", "kind", "ref"], sort=True):
            # the same model on the same prompt twice in one source: its mean outcome, once
            part = part.groupby(["row", "col"], as_index=False)["outcome"].mean()
            rows_, cols_ = np.unique(part["row"].to_numpy()), np.unique(part["col"].to_numpy())
            y = np.zeros((len(rows_), len(cols_)), dtype=np.float32)
            mask = np.zeros_like(y)
            ri, ci = np.searchsorted(rows_, part["row"].to_numpy()), np.searchsorted(cols_, part["col"].to_numpy())
            y[ri, ci], mask[ri, ci] = part["outcome"].to_numpy(np.float32), 1.0
            share = weights[source] / total / per_source[source]
            blocks.append((rows_, cols_, y, mask * share, kind, int(ref)))

        torch.manual_seed(self.seed)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            X = torch.as_tensor(x)
            D, M, K = x.shape[1], len(self.models_), self.skills
            wd = torch.zeros(D, requires_grad=True)
            bd = torch.zeros(1, requires_grad=True)
            wv = (0.01 * torch.randn(D, K)).requires_grad_()
            theta = torch.zeros(M, requires_grad=True)
            u = (0.01 * torch.randn(M, K)).requires_grad_()
            grade_offset = torch.zeros(1, requires_grad=True)
            params = [wd, bd, wv, theta, u, grade_offset]
            tblocks = [(torch.as_tensor(r), torch.as_tensor(c), torch.as_tensor(y), torch.as_tensor(m), kind, ref)
                       for r, c, y, m, kind, ref in blocks]
            opt = torch.optim.Adam(params, lr=self.lr)
            bce = torch.nn.functional.binary_cross_entropy_with_logits
            for _ in range(self.steps):
                opt.zero_grad()
                d = X @ wd + bd
                v = X @ wv
                loss = self.l2 * ((wv**2).sum() + (wd**2).sum() + (u**2).sum())
                for r, c, y, m, kind, ref in tblocks:
                    vr = v[r]
                    eta = theta[c][None, :] + vr @ u[c].T - d[r][:, None]
                    if kind == "grade":
                        eta = eta + grade_offset
                    elif kind == "pref":  # against the reference model: the difficulty cancels
                        eta = eta - (theta[ref] + vr @ u[ref] - d[r])[:, None]
                    loss = loss + (m * bce(eta, y, reduction="none")).sum()
                loss.backward()
                opt.step()
        finally:
            torch.set_num_threads(threads)
        self.difficulty_ = wd.detach().numpy().astype(np.float32)
        self.difficulty_bias_ = float(bd.detach()[0])
        self.skill_proj_ = wv.detach().numpy().astype(np.float32)
        self.ability_ = theta.detach().numpy().astype(np.float32)
        self.loadings_ = u.detach().numpy().astype(np.float32)
        self.grade_offset_ = float(grade_offset.detach()[0])
        self.training_ = {
            "observations": {str(k): int(n) for k, n in counts.sort_index().items()},
            "prompts": len(prompts),
            "models": len(self.models_),
            "final_loss": round(float(loss.detach()), 6),
            "fit_seconds": round(time.perf_counter() - started, 2),
        }
        self.reference_quantiles_ = None
        return self

    # Scoring ---------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if getattr(self, "difficulty_", None) is None:
            raise ConfigError(f"this {self.name} router is not trained; call fit(...) or load one with from_pretrained(path)")

    def logits(self, prompts: Sequence[str], embeddings: np.ndarray, models: Sequence[str]) -> np.ndarray:
        """``eta_m(x)`` for each prompt and each named model, ``(n, len(models))``."""
        self._check_fitted()
        idx = [model_index(self.models_, m) for m in models]
        feats = (prompt_features(prompts) - self.feature_mean_) / self.feature_scale_
        x = np.hstack([np.asarray(embeddings, dtype=np.float64), feats])
        d = x @ self.difficulty_.astype(np.float64) + self.difficulty_bias_
        v = x @ self.skill_proj_.astype(np.float64)
        return self.ability_[idx].astype(np.float64) + v @ self.loadings_[idx].T.astype(np.float64) - d[:, None]

    def _score(self, prompts: list[str]) -> np.ndarray:
        self._check_fitted()
        eta = self.logits(prompts, self.embedder.embed(prompts), (self.strong, self.weak))
        p = _sigmoid(eta)
        return 0.5 + 0.5 * (p[:, 0] - p[:, 1])

    def with_pair(self, strong: str, weak: str) -> "IRTRouter":
        """A copy that scores another pair of the model table (``ConfigError`` naming the table if absent).

        The copy has no reference quantiles: they belong to the saved pair.
        """
        self._check_fitted()
        scoring_pair(self.models_, strong, weak)
        twin = object.__new__(type(self))
        twin.__dict__.update(self.__dict__)
        twin.strong, twin.weak = strong, weak
        twin.reference_quantiles_ = None
        return twin

    # Artifacts -------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        self._check_fitted()
        training = dict(getattr(self, "training_", None) or {})
        return router_config(
            self,
            models=list(self.models_),
            scoring_pair={"strong": self.strong, "weak": self.weak},
            skills=self.skills,
            features={"version": FEATURES_VERSION, "names": list(FEATURE_NAMES)},
            difficulty_bias=self.difficulty_bias_,
            grade_offset=self.grade_offset_,
            fit={"steps": self.steps, "lr": self.lr, "l2": self.l2, "source_weights": self.source_weights,
                 "seed": self.seed},
            data_license=training.get("data_license"),
        )

    def tensors(self) -> dict[str, np.ndarray]:
        return {
            "difficulty": self.difficulty_,
            "skill_proj": self.skill_proj_,
            "ability": self.ability_,
            "loadings": self.loadings_,
            "feature_mean": self.feature_mean_.astype(np.float64),
            "feature_scale": self.feature_scale_.astype(np.float64),
        }

    def save(self, path: str | Path) -> Path:
        return save_router(path, self.config(), self.tensors())

    @classmethod
    def from_pretrained(
        cls, path: str | Path, embedder=None, *, cache: bool = False, strong: str | None = None, weak: str | None = None
    ) -> "IRTRouter":
        """Load a router saved with :meth:`save`; ``strong``/``weak`` score another pair of its model table."""
        config, tensors = read_artifact(path)
        where = str(path)
        check_router_config(config, cls.name, path)
        models, saved_strong, saved_weak = check_pair_config(config, where)
        feats = config.get("features") or {}
        if feats.get("version") != FEATURES_VERSION or list(feats.get("names") or []) != list(FEATURE_NAMES):
            raise ArtifactError(
                f"{where!r} was trained on prompt features {feats!r}; this version computes "
                f"version {FEATURES_VERSION} {list(FEATURE_NAMES)}"
            )
        skills = config.get("skills")
        if isinstance(skills, bool) or not isinstance(skills, int) or skills < 0:
            raise ArtifactError(f"{where!r}: config 'skills' must be a non-negative integer, got {skills!r}")
        numbers = {name: config_number(config, name, where) for name in ("difficulty_bias", "grade_offset")}
        emb = resolve_embedder(config, path, embedder, cache=cache)
        fit = config.get("fit") or {}
        try:
            router = cls(emb, strong=strong or saved_strong, weak=weak or saved_weak, skills=skills, progress=False,
                         **{k: fit[k] for k in ("steps", "lr", "l2", "source_weights", "seed") if k in fit})
        except ConfigError as exc:
            raise ArtifactError(f"{where!r}: {exc}") from None
        dim, nf, m = emb.dim + len(FEATURE_NAMES), len(FEATURE_NAMES), len(models)
        router.models_ = list(models)
        router.difficulty_ = require_tensor(tensors, "difficulty", (dim,), path).astype(np.float32)
        router.skill_proj_ = require_tensor(tensors, "skill_proj", (dim, skills), path).astype(np.float32)
        router.ability_ = require_tensor(tensors, "ability", (m,), path).astype(np.float32)
        router.loadings_ = require_tensor(tensors, "loadings", (m, skills), path).astype(np.float32)
        router.feature_mean_ = require_tensor(tensors, "feature_mean", (nf,), path).astype(np.float64)
        router.feature_scale_ = require_tensor(tensors, "feature_scale", (nf,), path).astype(np.float64)
        router.difficulty_bias_ = numbers["difficulty_bias"]
        router.grade_offset_ = numbers["grade_offset"]
        scoring_pair(router.models_, router.strong, router.weak)  # an overridden pair must be in the table
        router.training_ = config.get("training") or {}
        router.reference_quantiles_ = saved_quantiles(config, path, (router.strong, router.weak), (saved_strong, saved_weak))
        return router


__all__ = ["IRTRouter", "OBSERVATION_COLUMNS", "validate_observations"]
