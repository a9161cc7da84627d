"""Training recipes: the one way the shipped routers and the evaluation train routers.

A recipe turns the project's data directory into a trained router. The data the
evaluation protocol allows for training:

* the MMLU *training half* (prompts whose SHA-256 hex digest starts with 8-f, see
  :func:`shared_core.datasets.mmlu_split`): per-model correctness of the strong
  and the weak model, as battles;
* arena-bench-v1: 300 prompts x 15 models graded 1-10, as battles between every
  pair of models (higher grade wins, equal grades tie, missing grades skipped),
  minus the questions the evaluation holds out (``exclude_arena_questions``).

GSM8K and MT-Bench are never trained on. Prompts are embedded through a
:class:`~shared_core.embeddings.CachedEmbedder`, so refitting (5-fold CV) does not
re-embed.

    >>> from shared_core.training.recipes import train_recipe  # doctest: +SKIP
    >>> router = train_recipe("mf", data_dir="../shared/data")  # doctest: +SKIP

New routers add recipes from their own module with :func:`register_recipe`; a
recipe named ``x`` not yet registered is looked up by importing
``shared_core.training.x``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from shared_core.errors import ConfigError, DataError
from shared_core.routers import Router
from shared_core.training.data import outcomes_to_battles

RecipeFn = Callable[["RecipeData"], Router]
RECIPES: dict[str, RecipeFn] = {}

MMLU_SPLIT_RULE = "MMLU train half: SHA-256 hex digest of the UTF-8 prompt starts with 8-f"


def register_recipe(name: str) -> Callable[[RecipeFn], RecipeFn]:
    """Decorator: register ``fn(data: RecipeData) -> Router`` as recipe ``name``."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"recipe name must be a non-empty string, got {name!r}")

    def decorate(fn: RecipeFn) -> RecipeFn:
        RECIPES[name] = fn
        return fn

    return decorate


def get_recipe(name: str) -> RecipeFn:
    """Recipe ``name``, importing ``shared_core.training.<name>`` if it registers there."""
    if not isinstance(name, str):
        raise ConfigError(f"router name must be a string, got {type(name).__name__}: {name!r}")
    if name not in RECIPES and name.isidentifier() and name not in ("recipes", "data", "cli"):
        try:
            importlib.import_module(f"shared_core.training.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"shared_core.training.{name}":
                raise
    if name not in RECIPES:
        raise ConfigError(f"no training recipe for router {name!r}; expected one of: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]


def default_embedder():
    """all-MiniLM-L6-v2 (packaged, offline) on ONNX Runtime with int8 weights, behind the cache.

    Measured on this 2-core machine (benchmarks/bench_routing.py): p50 7 ms a
    prompt and 120-190 decisions/s in batches, against 16 ms and 78/s for the
    same model under torch, with embeddings at mean cosine 0.994 to fp32 and
    held-out routing quality unchanged; a router loads in 0.2 s without torch.
    """
    from shared_core.embeddings import CachedEmbedder, OnnxEmbedder

    return CachedEmbedder(OnnxEmbedder(quantize="int8"))


@dataclass
class RecipeData:
    """What a recipe may train on, read lazily from ``data_dir``."""

    data_dir: str | Path | None
    exclude_arena_questions: frozenset[str] = frozenset()
    include_mmlu_train: bool = True
    include_arena: bool = True
    embedder: Any = None
    seed: int = 0
    progress: bool = True
    #: Router constructor overrides (``strong``, ``weak``, ``epochs``, ...) from the caller.
    options: dict[str, Any] = field(default_factory=dict)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def mmlu_train(self) -> pd.DataFrame:
        """MMLU training-half outcomes: ``prompt``, ``subject`` and a bool column per model."""
        from shared_core.datasets import load_mmlu

        if "mmlu" not in self._cache:
            df = load_mmlu(self.data_dir)
            self._cache["mmlu"] = df[df["split"] == "train"].drop(columns=["split"]).reset_index(drop=True)
        return self._cache["mmlu"].copy()

    def arena(self) -> pd.DataFrame:
        """arena-bench outcomes minus the excluded questions: ``question_id``, ``prompt``, a grade column per model."""
        from shared_core.datasets import load_arena_bench

        if "arena" not in self._cache:
            df = load_arena_bench(self.data_dir)
            unknown = set(self.exclude_arena_questions) - set(df["question_id"])
            if unknown:
                raise DataError(f"exclude_arena_questions names unknown arena-bench question(s): {sorted(unknown)[:5]}")
            self._cache["arena"] = df[~df["question_id"].isin(self.exclude_arena_questions)].reset_index(drop=True)
        return self._cache["arena"].copy()

    def battles(self) -> pd.DataFrame:
        """All allowed training data as battles (``source`` column: ``mmlu`` or ``arena``)."""
        from shared_core.datasets import STRONG_MODEL, WEAK_MODEL

        frames = []
        if self.include_mmlu_train:
            b = outcomes_to_battles(self.mmlu_train()[["prompt", STRONG_MODEL, WEAK_MODEL]])
            frames.append(b.assign(source="mmlu"))
        if self.include_arena:
            arena = self.arena()
            if len(arena):
                frames.append(outcomes_to_battles(arena).assign(source="arena"))
        if not frames:
            raise DataError("the recipe has no training data: include_mmlu_train and include_arena are both off")
        return pd.concat(frames, ignore_index=True)

    def description(self) -> dict[str, Any]:
        """What was trained on, for the router's ``config.json``."""
        parts = []
        if self.include_mmlu_train:
            parts.append(MMLU_SPLIT_RULE)
        if self.include_arena:
            parts.append(
                "arena-bench-v1 GPT-4 judge grades of all 15 models (mf, sw_ranking: as pairwise battles, higher "
                "grade wins, equal grades tie; knn family: as per-prompt difficulty)"
            )
        return {
            "data": " + ".join(parts),
            "split": "MMLU test half (hex digest 0-7), GSM8K and MT-Bench are never trained on",
            "excluded_arena_questions": len(self.exclude_arena_questions),
            "seed": self.seed,
        }


def reference_prompts(data_dir: str | Path | None = None) -> list[str]:
    """The reference prompt set of shipped score quantiles: the arena-bench-v1 prompts."""
    return RecipeData(data_dir).arena()["prompt"].tolist()


def router_reference_quantiles(router: Router, data_dir: str | Path | None = None) -> np.ndarray:
    """``router``'s score quantiles on the reference set: open chat prompts (arena-bench-v1).

    The integrations route chat traffic, so the shipped quantiles describe chat
    prompts: ``strong_fraction=0.3`` then sends about 30% of chat-like calls to the
    strong model. Exam-style multiple-choice questions score lower than any chat
    prompt (GPT-4's edge over Mixtral is smaller there), so a mixed reference set
    puts its median between the two kinds and sends nearly every chat prompt to
    the strong model (measured on the shipped default: arena median 0.784, MMLU
    median 0.552). Traffic of another kind should calibrate on its own prompts.
    """
    from shared_core.artifacts import reference_quantiles

    return reference_quantiles(router.score(reference_prompts(data_dir)))


def train_recipe(
    router: str,
    *,
    data_dir: str | Path | None = None,
    exclude_arena_questions: Iterable[str] = (),
    include_mmlu_train: bool = True,
    include_arena: bool = True,
    embedder=None,
    seed: int = 0,
    progress: bool = True,
    options: dict[str, Any] | None = None,
) -> Router:
    """Train router ``router`` with its recipe on the allowed data of ``data_dir``.

    ``embedder`` defaults to the cached all-MiniLM-L6-v2 (:func:`default_embedder`).
    ``options`` override the recipe's router settings (for example ``strong``,
    ``weak``, ``epochs``). The returned router's ``training_`` records the data,
    the split and the seed.
    """
    if isinstance(exclude_arena_questions, str):
        raise ConfigError("exclude_arena_questions must be a collection of question ids, not one string")
    recipe = get_recipe(router)
    data = RecipeData(
        data_dir=data_dir,
        exclude_arena_questions=frozenset(exclude_arena_questions),
        include_mmlu_train=include_mmlu_train,
        include_arena=include_arena,
        embedder=default_embedder() if embedder is None else embedder,
        seed=seed,
        progress=progress,
        options=dict(options or {}),
    )
    trained = recipe(data)
    trained.training_ = {**data.description(), **(getattr(trained, "training_", None) or {})}
    return trained


@register_recipe("mf")
def _mf(data: RecipeData) -> Router:
    from shared_core.routers.mf import MatrixFactorizationRouter

    settings = {"seed": data.seed, "progress": data.progress, **data.options}
    return MatrixFactorizationRouter(data.embedder, **settings).fit(data.battles())


#: sw_ranking's similarity weighting in the recipe. RouteLLM uses 10; with MiniLM
#: embeddings a sharper weighting was better on a validation quarter of the MMLU
#: training half (APGR 0.555 / 0.577 / 0.600 / 0.603 for gamma 10 / 100 / 1000 / 10000).
SW_RANKING_GAMMA = 1000.0


@register_recipe("sw_ranking")
def _sw_ranking(data: RecipeData) -> Router:
    from shared_core.routers.sw_ranking import SWRankingRouter

    settings = {"progress": data.progress, "gamma": SW_RANKING_GAMMA, **data.options}
    settings.pop("seed", None)  # deterministic: nothing to seed
    return SWRankingRouter(data.embedder, **settings).fit(data.battles())


__all__ = [
    "RECIPES",
    "RecipeData",
    "default_embedder",
    "get_recipe",
    "reference_prompts",
    "router_reference_quantiles",
    "register_recipe",
    "train_recipe",
]
