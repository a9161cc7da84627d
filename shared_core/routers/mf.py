"""RouteLLM's matrix-factorization router (``mf``), batch-first.

The model (RouteLLM ``routellm/routers/matrix_factorization/model.py``; Ong et al.
2024, section 4.2): every model ``m`` has a learned vector ``P[m]`` (``dim``); a
prompt's embedding ``e`` is projected by ``text_proj`` (``dim x text_dim``, no
bias); the quality of ``m`` on the prompt is the logit

    ``s(m, e) = classifier . (normalize(P[m]) * (text_proj @ e))``

and the strong model's win rate over the weak one is
``sigmoid(s(strong, e) - s(weak, e))``. Everything after the embedding is linear,
so scoring a batch is one matrix-vector product: ``sigmoid(E @ u)`` with
``u = text_proj.T @ (classifier * (normalize(P[strong]) - normalize(P[weak])))``.
Scoring needs numpy only; torch is imported by :meth:`fit`.

The model table (which row of ``P`` is which model) belongs to the trained router
and is saved in its ``config.json``; the scoring pair (``strong``, ``weak``) is
any two models of that table.

Training (:meth:`fit`) follows RouteLLM's trainer: Adam with weight decay, binary
cross-entropy on the logit difference of each battle, Gaussian noise added to the
prompt embeddings; batches of 1024 at lr 3e-3 for 40 epochs (RouteLLM: 64, 3e-4,
100 epochs, about 40x more steps), so a fit on the recipe's 38k battles takes
7-20 s on 2 CPU cores. Ties: RouteLLM drops them (``ties="drop"``); here
``ties="half"`` (the default) keeps them with target 0.5, the two models being
equally good on that prompt. Most MMLU battles are ties, and keeping them did as well or slightly better (validation APGR 0.573 vs 0.570 on a quarter of the
MMLU training half held out, with MiniLM embeddings). The noise default 0.1 is
RouteLLM's training-script value; on the same validation split 0.0 / 0.05 / 0.1 /
0.3 gave APGR 0.533 / 0.573 / 0.583 / 0.589 (seed-to-seed spread about 0.01).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from shared_core.artifacts import (
    check_router_config,
    read_artifact,
    require_tensor,
    resolve_embedder,
    router_config,
    save_router,
    saved_quantiles,
)
from shared_core.errors import ArtifactError, ConfigError, DataError
from shared_core.routers import Router, register_router
from shared_core.routers._models import (
    DEFAULT_STRONG,
    DEFAULT_WEAK,
    ROUTELLM_MF_MODELS,
    check_pair_config,
    model_key,
    scoring_pair,
    unique_models,
)

#: The embedding model RouteLLM's published mf checkpoints were trained on.
ROUTELLM_EMBEDDING_MODEL = "text-embedding-3-small"
TIES = ("half", "drop")


def _positive(value: Any, what: str, kind: type = int) -> Any:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    if kind is int:
        ok = ok and isinstance(value, int)
    if not ok:
        raise ConfigError(f"{what} must be a positive {'integer' if kind is int else 'number'}, got {value!r}")
    return value


def _normalize_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class _Adam:
    """Adam with L2 weight decay, the update of ``torch.optim.Adam`` with its defaults.

    Written out because importing ``torch.optim`` pulls in ``torch._dynamo``,
    which takes 3-10 s on a small shared machine: longer than training itself.
    """

    def __init__(self, params, lr: float, weight_decay: float, betas=(0.9, 0.999), eps: float = 1e-8) -> None:
        import torch

        self.params = list(params)
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, eps
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        import torch

        self.t += 1
        b1, b2 = self.betas
        with torch.no_grad():
            for p, m, v in zip(self.params, self.m, self.v):
                if p.grad is None:
                    continue
                g = p.grad + self.weight_decay * p if self.weight_decay else p.grad
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (v / (1 - b2**self.t)).sqrt_().add_(self.eps)
                p.addcdiv_(m, denom, value=-self.lr / (1 - b1**self.t))


@register_router
class MatrixFactorizationRouter(Router):
    """Win rate of ``strong`` over ``weak`` from learned model vectors and a projected prompt embedding.

    Build one with :meth:`fit` on battles (see :mod:`shared_core.training.data`) or
    load one with :meth:`from_pretrained` (our artifacts and RouteLLM's published
    checkpoints).

    >>> import pandas as pd
    >>> from shared_core.embeddings import HashEmbedder
    >>> battles = pd.DataFrame({"prompt": ["prove the theorem", "say hi"] * 20,
    ...     "model_a": "big", "model_b": "small", "winner": ["model_a", "tie"] * 20})
    >>> router = MatrixFactorizationRouter(HashEmbedder(), strong="big", weak="small",
    ...     epochs=30, progress=False).fit(battles)
    >>> scores = router.score(["prove the theorem", "say hi"])
    >>> bool(scores[0] > scores[1])
    True
    """

    name = "mf"

    def __init__(
        self,
        embedder,
        *,
        strong: str = DEFAULT_STRONG,
        weak: str = DEFAULT_WEAK,
        dim: int = 128,
        epochs: int = 40,
        batch_size: int = 1024,
        lr: float = 3e-3,
        weight_decay: float = 1e-5,
        noise: float = 0.1,
        ties: str = "half",
        seed: int = 0,
        progress: bool = True,
    ) -> None:
        if embedder is None or not hasattr(embedder, "embed"):
            raise ConfigError(f"embedder must be an Embedder, got {embedder!r}")
        model_key(strong), model_key(weak)  # non-empty strings
        if model_key(strong) == model_key(weak):
            raise ConfigError(f"strong model {strong!r} and weak model {weak!r} are the same model")
        if ties not in TIES:
            raise ConfigError(f"ties must be one of {', '.join(TIES)}, got {ties!r}")
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise < 0:
            raise ConfigError(f"noise must be a number >= 0, got {noise!r}")
        if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or weight_decay < 0:
            raise ConfigError(f"weight_decay must be a number >= 0, got {weight_decay!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"seed must be an integer, got {seed!r}")
        self.embedder = embedder
        self.strong = strong
        self.weak = weak
        self.dim = _positive(dim, "dim")
        self.epochs = _positive(epochs, "epochs")
        self.batch_size = _positive(batch_size, "batch_size")
        self.lr = _positive(lr, "lr", float)
        self.weight_decay = float(weight_decay)
        self.noise = float(noise)
        self.ties = ties
        self.seed = seed
        self.progress = progress

    # Scoring ---------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if getattr(self, "P_", None) is None:
            raise ConfigError("this mf router is not trained; call fit(battles) or load one with from_pretrained(path)")

    def direction(self) -> np.ndarray:
        """``u`` with ``score = sigmoid(embedding @ u)`` for the current scoring pair, shape ``(text_dim,)``."""
        self._check_fitted()
        s, w = scoring_pair(self.models_, self.strong, self.weak)
        p = _normalize_rows(self.P_[[s, w]].astype(np.float64))
        v = self.classifier_.astype(np.float64)[0] * (p[0] - p[1])
        return v if self.text_proj_ is None else self.text_proj_.astype(np.float64).T @ v

    def score_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        """Win rates for prompt embeddings ``(n, text_dim)`` (for callers that cache embeddings)."""
        e = np.asarray(embeddings, dtype=np.float64)
        u = self.direction()
        if e.ndim != 2 or e.shape[1] != u.shape[0]:
            raise ConfigError(f"embeddings must have shape (n, {u.shape[0]}), got {e.shape}")
        return 1.0 / (1.0 + np.exp(-(e @ u)))

    def _score(self, prompts: list[str]) -> np.ndarray:
        self._check_fitted()
        return self.score_embeddings(self.embedder.embed(prompts))

    # Training --------------------------------------------------------------------
    def fit(self, battles, *, progress: bool | None = None) -> "MatrixFactorizationRouter":
        """Learn the model vectors and the projection from a battles DataFrame."""
        import torch

        from shared_core.training.data import validate_battles

        show = self.progress if progress is None else progress
        started = time.perf_counter()
        df = validate_battles(battles)
        models = sorted(unique_models([*df["model_a"], *df["model_b"]]), key=model_key)
        scoring_pair(models, self.strong, self.weak)  # both must be in the data
        index = {model_key(m): i for i, m in enumerate(models)}
        a = np.array([index[model_key(m)] for m in df["model_a"]])
        b = np.array([index[model_key(m)] for m in df["model_b"]])
        winner = df["winner"].to_numpy()
        if self.ties == "drop":
            keep = winner != "tie"
            if not keep.any():
                raise DataError("every battle is a tie; with ties='drop' nothing is left to train on")
            a, b, winner, prompts_col = a[keep], b[keep], winner[keep], df["prompt"].to_numpy()[keep]
        else:
            prompts_col = df["prompt"].to_numpy()
        target = np.where(winner == "model_a", 1.0, np.where(winner == "model_b", 0.0, 0.5))
        unique_prompts, prompt_idx = np.unique(prompts_col, return_inverse=True)
        emb = np.asarray(self.embedder.embed(list(unique_prompts), show_progress=show), dtype=np.float32)

        # The model is tiny: extra torch threads only add synchronisation (10x slower
        # on a busy 2-core machine), so train on one and restore the setting after.
        # fork_rng: seeding here must not change the caller's global torch RNG.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.random.fork_rng(devices=[]):
                P, proj, classifier, epoch_loss = self._train(torch, emb, a, b, prompt_idx, target, len(models), show)
        finally:
            torch.set_num_threads(threads)
        n = len(target)

        self.models_ = models
        self.P_ = P.weight.detach().numpy().astype(np.float32).copy()
        self.text_proj_ = proj.weight.detach().numpy().astype(np.float32).copy()
        self.classifier_ = classifier.weight.detach().numpy().astype(np.float32).copy()
        self.training_ = {
            "battles": int(len(df)),
            "battles_used": int(n),
            "ties": self.ties,
            "prompts": int(len(unique_prompts)),
            "models": len(models),
            "seed": self.seed,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "noise": self.noise,
            "final_train_loss": round(epoch_loss, 6),
            "fit_seconds": round(time.perf_counter() - started, 2),
        }
        self.reference_quantiles_ = None
        return self

    def _train(self, torch, emb, a, b, prompt_idx, target, n_models: int, show: bool):
        """RouteLLM's objective: BCE on ``s(model_a) - s(model_b)`` with noisy prompt embeddings."""
        from tqdm.auto import tqdm

        torch.manual_seed(self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        P = torch.nn.Embedding(n_models, self.dim)
        proj = torch.nn.Linear(emb.shape[1], self.dim, bias=False)
        classifier = torch.nn.Linear(self.dim, 1, bias=False)
        params = [*P.parameters(), *proj.parameters(), *classifier.parameters()]
        optimizer = _Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        E = torch.from_numpy(emb)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        tq = torch.from_numpy(prompt_idx.astype(np.int64))
        ty = torch.from_numpy(target.astype(np.float32))
        n = len(ty)
        bar = tqdm(range(self.epochs), desc="training mf", disable=not show, unit="epoch")
        epoch_loss = float("nan")
        for _ in bar:
            order = torch.randperm(n, generator=gen)
            total = 0.0
            for start in range(0, n, self.batch_size):
                idx = order[start : start + self.batch_size]
                q = E[tq[idx]]
                if self.noise > 0:
                    q = q + torch.randn(q.shape, generator=gen) * self.noise
                pa = torch.nn.functional.normalize(P(ta[idx]), p=2, dim=1)
                pb = torch.nn.functional.normalize(P(tb[idx]), p=2, dim=1)
                logits = classifier((pa - pb) * proj(q)).squeeze(1)
                loss = loss_fn(logits, ty[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(idx)
            epoch_loss = total / n
            bar.set_postfix(loss=f"{epoch_loss:.4f}")
        bar.close()

        return P, proj, classifier, epoch_loss

    # Artifacts -------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        self._check_fitted()
        return router_config(
            self,
            models=list(self.models_),
            scoring_pair={"strong": self.strong, "weak": self.weak},
            num_models=len(self.models_),
            dim=int(self.P_.shape[1]),
            text_dim=int(self.text_proj_.shape[1]) if self.text_proj_ is not None else int(self.P_.shape[1]),
            use_proj=self.text_proj_ is not None,
        )

    def save(self, path: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (RouteLLM's tensor names)."""
        tensors = {"P.weight": self.P_, "classifier.0.weight": self.classifier_}
        if self.text_proj_ is not None:
            tensors["text_proj.0.weight"] = self.text_proj_
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
    ) -> "MatrixFactorizationRouter":
        """Load a router saved with :meth:`save`, or a RouteLLM mf checkpoint directory.

        A RouteLLM checkpoint (``config.json`` with ``num_models``, ``text_dim`` and
        ``dim``/``hidden_size``, no ``router`` key) uses RouteLLM's 64-model table
        and OpenAI's ``text-embedding-3-small``; pass ``embedder`` to use an
        OpenAI-compatible server of your own (its dimension must be ``text_dim``).
        ``strong``/``weak`` override the saved scoring pair (the shipped reference
        quantiles are then dropped: they belong to the saved pair).
        """
        config, tensors = read_artifact(path)
        where = str(path)
        if "router" not in config and {"num_models", "text_dim"} <= set(config):
            return cls._from_routellm(path, config, tensors, embedder, cache=cache, strong=strong, weak=weak)
        check_router_config(config, cls.name, path)
        models, saved_strong, saved_weak = check_pair_config(config, where)
        dim, text_dim = config.get("dim"), config.get("text_dim")
        if not isinstance(dim, int) or not isinstance(text_dim, int):
            raise ArtifactError(f"{where!r}: config 'dim' and 'text_dim' must be integers, got {dim!r}, {text_dim!r}")
        emb = resolve_embedder(config, path, embedder, cache=cache)
        if emb.dim != text_dim:
            raise ArtifactError(f"{where!r}: embedder dimension {emb.dim} differs from text_dim {text_dim}")
        router = cls(emb, strong=strong or saved_strong, weak=weak or saved_weak, dim=dim, progress=False)
        router._set_weights(path, tensors, models, text_dim, bool(config.get("use_proj", True)))
        scoring_pair(router.models_, router.strong, router.weak)  # an overridden pair must be in the table
        router.training_ = config.get("training") or {}
        router.reference_quantiles_ = saved_quantiles(config, path, (router.strong, router.weak), (saved_strong, saved_weak))
        return router

    @classmethod
    def _from_routellm(cls, path, config, tensors, embedder, *, cache, strong, weak) -> "MatrixFactorizationRouter":
        where = str(path)
        dim = config.get("dim", config.get("hidden_size"))
        num_models, text_dim = config.get("num_models"), config.get("text_dim")
        for key, value in (("dim (or hidden_size)", dim), ("num_models", num_models), ("text_dim", text_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ArtifactError(f"{where!r}: RouteLLM config {key!r} must be a positive integer, got {value!r}")
        if config.get("num_classes", 1) != 1:
            raise ArtifactError(f"{where!r}: RouteLLM config num_classes must be 1, got {config.get('num_classes')!r}")
        if num_models != len(ROUTELLM_MF_MODELS):
            raise ArtifactError(
                f"{where!r}: RouteLLM checkpoint has num_models={num_models}, but RouteLLM's model table has "
                f"{len(ROUTELLM_MF_MODELS)} models"
            )
        if embedder is None:
            # The checkpoint was trained on OpenAI's embeddings, but loading a file never decides
            # where prompts go: the caller names the embedder (and so the URL) explicitly.
            raise ConfigError(
                f"RouteLLM checkpoint {where!r} scores OpenAI {ROUTELLM_EMBEDDING_MODEL!r} embeddings "
                f"(text_dim={text_dim}); pass the embedder that sends prompts there yourself, e.g. "
                f"load_router(path, embedder=OpenAICompatibleEmbedder({ROUTELLM_EMBEDDING_MODEL!r}, dim={text_dim}))"
            )
        if embedder.dim != text_dim:
            raise ArtifactError(
                f"embedder {embedder.name!r} has dimension {embedder.dim}, but RouteLLM checkpoint {where!r} "
                f"needs text_dim={text_dim} ({ROUTELLM_EMBEDDING_MODEL})"
            )
        if cache:
            from shared_core.embeddings import CachedEmbedder

            embedder = embedder if isinstance(embedder, CachedEmbedder) else CachedEmbedder(embedder)
        router = cls(embedder, strong=strong or DEFAULT_STRONG, weak=weak or DEFAULT_WEAK, dim=dim, progress=False)
        router._set_weights(path, tensors, list(ROUTELLM_MF_MODELS), text_dim, bool(config.get("use_proj", True)))
        try:
            scoring_pair(router.models_, router.strong, router.weak)
        except ConfigError as exc:
            raise ArtifactError(f"{where!r}: {exc}") from None
        router.training_ = {"source": "RouteLLM checkpoint", "path": where}
        router.reference_quantiles_ = None
        return router

    def _set_weights(self, path, tensors, models: list[str], text_dim: int, use_proj: bool) -> None:
        dim = self.dim
        self.P_ = require_tensor(tensors, "P.weight", (len(models), dim), path).astype(np.float32)
        self.classifier_ = require_tensor(tensors, "classifier.0.weight", (1, dim), path).astype(np.float32)
        if use_proj:
            self.text_proj_ = require_tensor(tensors, "text_proj.0.weight", (dim, text_dim), path).astype(np.float32)
        else:
            if text_dim != dim:
                raise ArtifactError(f"{str(path)!r}: use_proj is false, so text_dim ({text_dim}) must be dim ({dim})")
            self.text_proj_ = None
        for name, value in (("P.weight", self.P_), ("classifier.0.weight", self.classifier_)):
            if not np.isfinite(value).all():
                raise ArtifactError(f"tensor {name!r} in {str(path)!r} holds NaN or infinite values")
        self.models_ = models
