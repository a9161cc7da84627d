"""RouteLLM's similarity-weighted Bradley-Terry ranking router (``sw_ranking``), vectorised.

RouteLLM (``routellm/routers/routers.py`` ``SWRankingRouter``; Ong et al. 2024,
section 4.2) scores a prompt by refitting a Bradley-Terry (Elo) model on every
training battle, each weighted by how similar the battle's prompt is to the new
prompt, and reports the strong model's win probability over the weak one:

* models are grouped into ``num_tiers`` tiers by their overall rating, and the
  per-prompt fit is over tiers;
* the weight of a battle with similarity ``sim`` (cosine of the prompt
  embeddings) is ``gamma ** (1 + sim / max_sim)``, ``max_sim`` the largest
  similarity of the new prompt to any training prompt and ``gamma = 10``
  (RouteLLM's ``10 * 10 ** (sim / max_sim)``): most similar battles count up to
  10x more than unrelated ones (the project's recipe uses ``gamma=1000``, chosen
  on validation data, see :mod:`shared_core.training.recipes`);
* ties count as half a win for each side.

RouteLLM runs a scikit-learn logistic regression over all battles for every
prompt (about 3 prompts/s). Here the fit is the same maximum-likelihood problem
solved in a way that does not grow with the number of battles per prompt:

1. The likelihood only depends on, for every training prompt and every pair of
   tiers, the number of battles and the (tie-halved) wins of one side. These
   counts are computed once at training time (``(prompts, tier pairs)``).
2. For a batch of new prompts, one matrix product gives the similarities
   (``batch x training prompts``) and a second the weighted counts
   (``batch x tier pairs``).
3. A few Newton steps of the weighted Bradley-Terry fit run for the whole batch
   at once (``batch x tiers x tiers`` systems), started from the unweighted fit.

All tiers are fitted, not only the two tiers of the scoring pair: the other
battles connect the two through common opponents, so dropping them would change
the answer. A tiny ridge (``ridge``, default 1e-3 against weights of 10-100 per
battle) keeps the fit finite when a tier never loses; otherwise the results match
the unregularised fit (see the reference test).

The artifact stores the training prompts' embeddings (int8 with a per-row scale,
so that the shipped file stays small; the quantised vectors are used from
training on, so a saved and reloaded router scores identically) and the battles
at model level; tiers are in ``config.json``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from shared_core.artifacts import (
    STORAGE,
    check_router_config,
    dequantize_rows,
    quantize_rows,
    read_artifact,
    require_tensor,
    resolve_embedder,
    router_config,
    save_router,
    saved_quantiles,
)
from shared_core.errors import ArtifactError, ConfigError
from shared_core.routers import Router, register_router
from shared_core.routers._models import (
    DEFAULT_STRONG,
    DEFAULT_WEAK,
    check_pair_config,
    model_key,
    scoring_pair,
    unique_models,
)

#: Prompts scored together; larger batches are split so memory stays bounded.
_CHUNK = 256


# Bradley-Terry -------------------------------------------------------------------------
def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def fit_bradley_terry(
    wins: np.ndarray,
    totals: np.ndarray,
    pairs: np.ndarray,
    n_items: int,
    *,
    ridge: float = 1e-3,
    init: np.ndarray | None = None,
    max_iter: int = 50,
    tol: float = 1e-8,
) -> np.ndarray:
    """Weighted Bradley-Terry strengths by Newton's method, for a batch of problems.

    ``pairs`` is ``(K, 2)`` item indices; ``wins[..., k]`` is the weighted number of
    wins of ``pairs[k, 0]`` over ``pairs[k, 1]`` (ties count 1/2) and
    ``totals[..., k]`` the weighted number of their battles. Leading dimensions are
    a batch of independent problems. Returns strengths ``theta`` (``batch x n_items``,
    natural-log odds: ``P(i beats j) = sigmoid(theta_i - theta_j)``) maximising the
    log-likelihood minus ``ridge / 2 * |theta|^2``.
    """
    wins = np.atleast_2d(np.asarray(wins, dtype=np.float64))
    totals = np.atleast_2d(np.asarray(totals, dtype=np.float64))
    batch = wins.shape[0]
    incidence = np.zeros((len(pairs), n_items))
    incidence[np.arange(len(pairs)), pairs[:, 0]] = 1.0
    incidence[np.arange(len(pairs)), pairs[:, 1]] = -1.0
    outer = np.einsum("ki,kj->kij", incidence, incidence).reshape(len(pairs), n_items * n_items)
    theta = np.zeros((batch, n_items)) if init is None else np.array(np.broadcast_to(init, (batch, n_items)), float)
    eye = ridge * np.eye(n_items)
    for _ in range(max_iter):
        p = _sigmoid(theta @ incidence.T)  # (batch, K)
        grad = (wins - totals * p) @ incidence - ridge * theta
        hess = ((totals * p * (1.0 - p)) @ outer).reshape(batch, n_items, n_items) + eye
        step = np.linalg.solve(hess, grad[..., None])[..., 0]
        theta = theta + step
        if np.abs(step).max() < tol:
            break
    return theta


def compute_tiers(ratings: np.ndarray, num_tiers: int) -> np.ndarray:
    """Split ratings into ``num_tiers`` groups of consecutive ratings (optimal 1-D clustering).

    Minimises the within-tier sum of squared deviations (RouteLLM's tiers use a
    similar dynamic program). Tier 0 holds the best models. With no more models
    than tiers, every model is its own tier.
    """
    r = np.asarray(ratings, dtype=np.float64)
    n = len(r)
    order = np.argsort(-r, kind="stable")
    tiers = np.empty(n, dtype=np.int64)
    if n <= num_tiers:
        tiers[order] = np.arange(n)
        return tiers
    x = r[order]
    csum, csq = np.concatenate([[0], np.cumsum(x)]), np.concatenate([[0], np.cumsum(x * x)])

    def sse(i: int, j: int) -> float:  # items i..j-1
        s, q, m = csum[j] - csum[i], csq[j] - csq[i], j - i
        return q - s * s / m

    cost = np.full((num_tiers + 1, n + 1), np.inf)
    cut = np.zeros((num_tiers + 1, n + 1), dtype=np.int64)
    cost[0, 0] = 0.0
    for t in range(1, num_tiers + 1):
        for j in range(t, n + 1):
            for i in range(t - 1, j):
                c = cost[t - 1, i] + sse(i, j)
                if c < cost[t, j]:
                    cost[t, j], cut[t, j] = c, i
    j = n
    for t in range(num_tiers, 0, -1):
        i = cut[t, j]
        tiers[order[i:j]] = t - 1
        j = i
    return tiers


@register_router
class SWRankingRouter(Router):
    """Similarity-weighted Bradley-Terry ranking (RouteLLM's ``sw_ranking``), scored in batches.

    >>> import pandas as pd
    >>> from shared_core.embeddings import HashEmbedder
    >>> battles = pd.DataFrame({"prompt": ["prove the theorem", "say hi"] * 5,
    ...     "model_a": "big", "model_b": "small", "winner": ["model_a", "model_b"] * 5})
    >>> router = SWRankingRouter(HashEmbedder(), strong="big", weak="small").fit(battles)
    >>> scores = router.score(["prove the theorem", "say hi"])
    >>> bool(scores[0] > scores[1])
    True
    """

    name = "sw_ranking"

    def __init__(
        self,
        embedder,
        *,
        strong: str = DEFAULT_STRONG,
        weak: str = DEFAULT_WEAK,
        num_tiers: int = 10,
        gamma: float = 10.0,
        ridge: float = 1e-3,
        newton_steps: int = 20,
        storage: str = "int8",
        progress: bool = True,
    ) -> None:
        if embedder is None or not hasattr(embedder, "embed"):
            raise ConfigError(f"embedder must be an Embedder, got {embedder!r}")
        if model_key(strong) == model_key(weak):
            raise ConfigError(f"strong model {strong!r} and weak model {weak!r} are the same model")
        if isinstance(num_tiers, bool) or not isinstance(num_tiers, int) or num_tiers < 2:
            raise ConfigError(f"num_tiers must be an integer >= 2, got {num_tiers!r}")
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma >= 1:
            raise ConfigError(f"gamma must be a number >= 1 (1 = no similarity weighting), got {gamma!r}")
        if isinstance(ridge, bool) or not isinstance(ridge, (int, float)) or not ridge > 0:
            raise ConfigError(f"ridge must be a positive number, got {ridge!r}")
        if isinstance(newton_steps, bool) or not isinstance(newton_steps, int) or newton_steps < 1:
            raise ConfigError(f"newton_steps must be a positive integer, got {newton_steps!r}")
        if storage not in STORAGE:
            raise ConfigError(f"storage must be one of {', '.join(STORAGE)}, got {storage!r}")
        self.embedder = embedder
        self.strong = strong
        self.weak = weak
        self.num_tiers = num_tiers
        self.gamma = float(gamma)
        self.ridge = float(ridge)
        self.newton_steps = newton_steps
        self.storage = storage
        self.progress = progress

    # Training --------------------------------------------------------------------
    def fit(self, battles, *, progress: bool | None = None) -> "SWRankingRouter":
        """Embed the battles' prompts, rate the models, group them into tiers."""
        from shared_core.training.data import validate_battles

        show = self.progress if progress is None else progress
        started = time.perf_counter()
        df = validate_battles(battles)
        models = sorted(unique_models([*df["model_a"], *df["model_b"]]), key=model_key)
        scoring_pair(models, self.strong, self.weak)
        index = {model_key(m): i for i, m in enumerate(models)}
        unique_prompts, prompt_idx = np.unique(df["prompt"].to_numpy(), return_inverse=True)
        emb = self.embedder.embed(list(unique_prompts), show_progress=show)
        stored, scales = quantize_rows(emb, self.storage)
        winner = df["winner"].to_numpy()
        self.models_ = models
        self._set_data(
            stored,
            scales,
            prompt_idx.astype(np.int32),
            np.array([index[model_key(m)] for m in df["model_a"]], dtype=np.int32),
            np.array([index[model_key(m)] for m in df["model_b"]], dtype=np.int32),
            np.where(winner == "model_a", 1.0, np.where(winner == "model_b", 0.0, 0.5)).astype(np.float32),
        )
        self.ratings_ = self._global_ratings()
        self.tiers_ = compute_tiers(self.ratings_, self.num_tiers)
        self._build_cells()
        self.training_ = {
            "battles": int(len(df)),
            "prompts": int(len(unique_prompts)),
            "models": len(models),
            "num_tiers": self.num_tiers,
            "gamma": self.gamma,
            "storage": self.storage,
            "fit_seconds": round(time.perf_counter() - started, 2),
        }
        self.reference_quantiles_ = None
        return self

    def _set_data(self, stored, scales, prompt, model_a, model_b, outcome) -> None:
        self.stored_embeddings_ = stored
        self.embedding_scales_ = scales
        self.embeddings_ = dequantize_rows(stored, scales)
        self.battle_prompt_ = prompt
        self.battle_a_ = model_a
        self.battle_b_ = model_b
        self.battle_outcome_ = outcome

    def _global_ratings(self) -> np.ndarray:
        n = len(self.models_)
        lo, hi = np.minimum(self.battle_a_, self.battle_b_), np.maximum(self.battle_a_, self.battle_b_)
        lo_wins = np.where(self.battle_a_ == lo, self.battle_outcome_, 1.0 - self.battle_outcome_)
        cell = lo * n + hi
        wins = np.bincount(cell, weights=lo_wins, minlength=n * n)
        totals = np.bincount(cell, minlength=n * n).astype(float)
        used = np.flatnonzero(totals > 0)
        pairs = np.stack([used // n, used % n], axis=1)
        return fit_bradley_terry(wins[used], totals[used], pairs, n, ridge=self.ridge)[0]

    def _build_cells(self) -> None:
        """Per training prompt and tier pair: battles and (tie-halved) wins of the better tier."""
        t = int(self.tiers_.max()) + 1
        ta, tb = self.tiers_[self.battle_a_], self.tiers_[self.battle_b_]
        keep = ta != tb  # a battle inside one tier says nothing about tiers
        lo, hi = np.minimum(ta, tb)[keep], np.maximum(ta, tb)[keep]
        lo_wins = np.where(ta[keep] == lo, self.battle_outcome_[keep], 1.0 - self.battle_outcome_[keep])
        pair_ids = {(i, j): k for k, (i, j) in enumerate((i, j) for i in range(t) for j in range(i + 1, t))}
        self.tier_pairs_ = np.array(list(pair_ids), dtype=np.int64).reshape(-1, 2)
        k = np.array([pair_ids[(i, j)] for i, j in zip(lo.tolist(), hi.tolist())], dtype=np.int64)
        n_prompts, n_cells = len(self.embeddings_), len(pair_ids)
        flat = self.battle_prompt_[keep].astype(np.int64) * n_cells + k
        self.cell_wins_ = np.bincount(flat, weights=lo_wins, minlength=n_prompts * n_cells).reshape(n_prompts, n_cells)
        self.cell_totals_ = np.bincount(flat, minlength=n_prompts * n_cells).reshape(n_prompts, n_cells).astype(float)
        self.n_tiers_ = t
        self.tier_init_ = fit_bradley_terry(
            self.cell_wins_.sum(0), self.cell_totals_.sum(0), self.tier_pairs_, t, ridge=self.ridge
        )[0]

    # Scoring ---------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if getattr(self, "embeddings_", None) is None:
            raise ConfigError(
                "this sw_ranking router is not trained; call fit(battles) or load one with from_pretrained(path)"
            )

    def weights(self, embeddings: np.ndarray) -> np.ndarray:
        """Battle-prompt weights ``gamma ** (1 + sim / max_sim)``, shape ``(batch, training prompts)``."""
        sims = np.asarray(embeddings, dtype=np.float32) @ self.embeddings_.T
        max_sim = sims.max(axis=1, keepdims=True)
        # With no positive similarity at all the prompt is unrelated to every battle: weigh them equally.
        ratio = np.where(max_sim > 0, sims / np.where(max_sim > 0, max_sim, 1.0), 0.0)
        return self.gamma ** (1.0 + ratio.astype(np.float64))

    def score_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        """Win rates for prompt embeddings ``(n, dim)``, all fitted at once."""
        self._check_fitted()
        e = np.asarray(embeddings, dtype=np.float32)
        if e.ndim != 2 or e.shape[1] != self.embeddings_.shape[1]:
            raise ConfigError(f"embeddings must have shape (n, {self.embeddings_.shape[1]}), got {e.shape}")
        s, w = scoring_pair(self.models_, self.strong, self.weak)
        ts, tw = int(self.tiers_[s]), int(self.tiers_[w])
        if ts == tw:
            return np.full(len(e), 0.5)
        out = np.empty(len(e))
        for start in range(0, len(e), _CHUNK):  # bounds the (chunk x training prompts) weights in memory
            weights = self.weights(e[start : start + _CHUNK])
            theta = fit_bradley_terry(
                weights @ self.cell_wins_,
                weights @ self.cell_totals_,
                self.tier_pairs_,
                self.n_tiers_,
                ridge=self.ridge,
                init=self.tier_init_,
                max_iter=self.newton_steps,
            )
            out[start : start + _CHUNK] = _sigmoid(theta[:, ts] - theta[:, tw])
        return out

    def _score(self, prompts: list[str]) -> np.ndarray:
        self._check_fitted()
        return self.score_embeddings(self.embedder.embed(prompts))

    # Artifacts -------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        self._check_fitted()
        return router_config(
            self,
            models=list(self.models_),
            scoring_pair={"strong": self.strong, "weak": self.weak},
            num_tiers=self.num_tiers,
            tiers={m: int(t) for m, t in zip(self.models_, self.tiers_)},
            ratings={m: round(float(r), 6) for m, r in zip(self.models_, self.ratings_)},
            gamma=self.gamma,
            ridge=self.ridge,
            newton_steps=self.newton_steps,
            storage=self.storage,
        )

    def save(self, path: str | Path) -> Path:
        tensors = {
            "prompt_embeddings": self.stored_embeddings_,
            "prompt_embedding_scales": self.embedding_scales_,
            "battle_prompt": self.battle_prompt_,
            "battle_model_a": self.battle_a_,
            "battle_model_b": self.battle_b_,
            "battle_outcome": self.battle_outcome_,
        }
        return save_router(path, self.config(), tensors)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        embedder=None,
        *,
        cache: bool = False,
        strong: str | None = None,
        weak: str | None = None,
    ) -> "SWRankingRouter":
        """Load a router saved with :meth:`save`; ``strong``/``weak`` override the scoring pair."""
        config, tensors = read_artifact(path)
        where = str(path)
        check_router_config(config, cls.name, path)
        models, saved_strong, saved_weak = check_pair_config(config, where)
        emb = resolve_embedder(config, path, embedder, cache=cache)
        try:
            router = cls(
                emb,
                strong=strong or saved_strong,
                weak=weak or saved_weak,
                num_tiers=config.get("num_tiers", 10),
                gamma=config.get("gamma", 10.0),
                ridge=config.get("ridge", 1e-3),
                newton_steps=config.get("newton_steps", 20),
                storage=config.get("storage", "int8"),
                progress=False,
            )
        except ConfigError as exc:
            raise ArtifactError(f"{where!r}: {exc}") from None
        scoring_pair(models, router.strong, router.weak)
        stored = require_tensor(tensors, "prompt_embeddings", (None, emb.dim), path)
        n_prompts = stored.shape[0]
        scales = require_tensor(tensors, "prompt_embedding_scales", (n_prompts,), path)
        prompt = require_tensor(tensors, "battle_prompt", (None,), path)
        n = prompt.shape[0]
        a = require_tensor(tensors, "battle_model_a", (n,), path)
        b = require_tensor(tensors, "battle_model_b", (n,), path)
        outcome = require_tensor(tensors, "battle_outcome", (n,), path)
        for name, value, hi in (("battle_prompt", prompt, n_prompts), ("battle_model_a", a, len(models)),
                                ("battle_model_b", b, len(models))):
            if n and (value.min() < 0 or value.max() >= hi):
                raise ArtifactError(f"tensor {name!r} in {where!r} holds indices outside [0, {hi})")
        tiers = config.get("tiers")
        if not isinstance(tiers, dict) or sorted(map(model_key, tiers)) != sorted(map(model_key, models)):
            raise ArtifactError(f"{where!r}: config 'tiers' must map every model of the table to a tier, got {tiers!r}")
        by_key = {model_key(m): t for m, t in tiers.items()}
        ratings = config.get("ratings") or {}
        router.models_ = models
        router._set_data(stored, scales, prompt.astype(np.int32), a.astype(np.int32), b.astype(np.int32),
                         outcome.astype(np.float32))
        router.tiers_ = np.array([int(by_key[model_key(m)]) for m in models], dtype=np.int64)
        router.ratings_ = np.array([float(ratings.get(m, np.nan)) for m in models])
        router._build_cells()
        router.training_ = config.get("training") or {}
        router.reference_quantiles_ = saved_quantiles(config, path, (router.strong, router.weak), (saved_strong, saved_weak))
        return router
