"""Training recipes: the one way the shipped routers and the evaluation train routers.

A recipe turns the project's data directory into a trained router. The data the
evaluation protocol allows for training:

* the MMLU *training half* (prompts whose SHA-256 hex digest starts with 8-f, see
  :func:`shared_core.datasets.mmlu_split`): per-model correctness of the strong
  and the weak model, as battles;
* arena-bench-v1: 300 prompts x 15 models graded 1-10, as battles between every
  pair of models (higher grade wins, equal grades tie, missing grades skipped),
  minus the questions the evaluation holds out (``exclude_arena_questions``);
* MMLU-Pro (``mmlu_pro``: 5,222 questions x 30 models, right or wrong) and
  AlpacaEval (``alpaca_eval``: 569 instructions x 69 models, each judged against
  gpt-4-1106-preview; data licence CC BY-NC 4.0), for the recipes that use them,
  minus the held-out questions of ``exclude_questions[source]``.

A recipe never sees a held-out question: the sources' readers drop them by id,
and :meth:`RecipeData.drop_held_out_texts` drops any training prompt whose text
equals a held-out one (the same text under another id or in another source).
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
#: Training sources whose questions an evaluation may hold out, and the id column of each.
HELD_OUT_SOURCES = {"arena": "question_id", "alpaca_eval": "prompt_id", "mmlu_pro": "question_id"}


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
    #: Held-out ids per source (``arena``, ``alpaca_eval``, ``mmlu_pro``); ``arena`` joins ``exclude_arena_questions``.
    exclude_questions: dict[str, frozenset[str]] = field(default_factory=dict)
    #: Whether the recipes that use MMLU-Pro / AlpacaEval may read them.
    include_mmlu_pro: bool = True
    include_alpaca_eval: bool = True
    seed: int = 0
    progress: bool = True
    #: Router constructor overrides (``strong``, ``weak``, ``epochs``, ...) from the caller.
    options: dict[str, Any] = field(default_factory=dict)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.exclude_questions, dict):
            raise ConfigError(f"exclude_questions must map a source to question ids, got {type(self.exclude_questions).__name__}")
        unknown = sorted(set(self.exclude_questions) - set(HELD_OUT_SOURCES))
        if unknown:
            raise ConfigError(f"exclude_questions names unknown source(s) {unknown}; expected {sorted(HELD_OUT_SOURCES)}")
        held = {}
        for source, ids in self.exclude_questions.items():
            if isinstance(ids, str):
                raise ConfigError(f"exclude_questions[{source!r}] must be a collection of ids, not one string")
            held[source] = frozenset(map(str, ids))
        arena = frozenset(map(str, self.exclude_arena_questions)) | held.get("arena", frozenset())
        self.exclude_arena_questions = arena
        held["arena"] = arena
        self.exclude_questions = {s: v for s, v in held.items() if v}

    def held_out(self, source: str) -> frozenset[str]:
        """The held-out question ids of ``source``."""
        return self.exclude_questions.get(source, frozenset())

    def _without_held_out(self, df: pd.DataFrame, source: str, what: str) -> pd.DataFrame:
        column = HELD_OUT_SOURCES[source]
        held = self.held_out(source)
        unknown = held - set(df[column].astype(str))
        if unknown:
            raise DataError(f"exclude_questions[{source!r}] names unknown {what} id(s): {sorted(unknown)[:5]}")
        return df[~df[column].astype(str).isin(held)].reset_index(drop=True)

    def held_out_texts(self) -> frozenset[str]:
        """The prompt texts of every held-out question (of every source)."""
        if "held_out_texts" not in self._cache:
            from shared_core import datasets

            texts: set[str] = set()
            readers = {"arena": datasets.load_arena_bench, "mmlu_pro": datasets.load_mmlu_pro,
                       "alpaca_eval": lambda d: datasets.load_alpaca_eval(d)[0]}
            for source, held in self.exclude_questions.items():
                df = readers[source](self.data_dir)
                texts |= set(df.loc[df[HELD_OUT_SOURCES[source]].astype(str).isin(held), "prompt"])
            self._cache["held_out_texts"] = frozenset(texts)
        return self._cache["held_out_texts"]

    def drop_held_out_texts(self, df: pd.DataFrame) -> pd.DataFrame:
        """``df`` without the rows whose ``prompt`` is the text of a held-out question."""
        texts = self.held_out_texts()
        return df[~df["prompt"].isin(texts)].reset_index(drop=True) if texts else df

    def mmlu_pro(self) -> pd.DataFrame:
        """MMLU-Pro outcomes minus the held-out questions (see :func:`shared_core.datasets.load_mmlu_pro`)."""
        from shared_core.datasets import load_mmlu_pro

        if not self.include_mmlu_pro:
            raise DataError("this recipe reads MMLU-Pro, but include_mmlu_pro is off")
        if "mmlu_pro" not in self._cache:
            self._cache["mmlu_pro"] = self._without_held_out(load_mmlu_pro(self.data_dir), "mmlu_pro", "MMLU-Pro question")
        return self._cache["mmlu_pro"].copy()

    def alpaca_eval(self) -> pd.DataFrame:
        """AlpacaEval outcomes (win rate against gpt-4-1106-preview per model) minus the held-out prompts.

        Data licence CC BY-NC 4.0: a router trained on it says so in its config.
        """
        from shared_core.datasets import load_alpaca_eval

        if not self.include_alpaca_eval:
            raise DataError("this recipe reads AlpacaEval, but include_alpaca_eval is off")
        if "alpaca_eval" not in self._cache:
            df, _ = load_alpaca_eval(self.data_dir)
            self._cache["alpaca_eval"] = self._without_held_out(df, "alpaca_eval", "AlpacaEval prompt")
        return self._cache["alpaca_eval"].copy()

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
            unknown = set(self.exclude_arena_questions) - set(df["question_id"].astype(str))
            if unknown:
                raise DataError(f"exclude_arena_questions names unknown arena-bench question(s): {sorted(unknown)[:5]}")
            self._cache["arena"] = df[~df["question_id"].astype(str).isin(self.exclude_arena_questions)].reset_index(drop=True)
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
            "excluded_questions": {s: len(v) for s, v in sorted(self.exclude_questions.items())},
            "seed": self.seed,
        }


#: How many chat-corpus openings join arena-bench-v1 in the reference prompt set.
REFERENCE_CHAT_PROMPTS = 300


def reference_prompts(data_dir: str | Path | None = None) -> list[str]:
    """The reference prompt set of shipped score quantiles: open chat, half hard and half ordinary.

    The 300 arena-bench-v1 prompts (chosen from Chatbot Arena for being hard) and
    :data:`REFERENCE_CHAT_PROMPTS` chatterbot-corpus openings (small talk, trivia,
    simple requests; a fixed seeded sample), so that ``strong_fraction=0.5`` puts
    the threshold between the two kinds. Without the chatterbot-corpus package
    (the ``train`` extra) the arena-bench prompts alone.
    """
    from shared_core.datasets import load_chat_corpus

    arena = RecipeData(data_dir).arena()["prompt"].tolist()
    try:
        chat = load_chat_corpus()["prompt"].to_numpy()
    except DataError:
        return arena
    pick = np.random.default_rng(0).choice(len(chat), size=min(REFERENCE_CHAT_PROMPTS, len(chat)), replace=False)
    return arena + [str(p) for p in chat[np.sort(pick)]]


def router_reference_quantiles(router: Router, data_dir: str | Path | None = None) -> np.ndarray:
    """``router``'s score quantiles on :func:`reference_prompts`.

    The integrations route chat traffic, so the shipped quantiles describe chat
    prompts: ``strong_fraction=0.3`` then sends about 30% of chat-like calls to the
    strong model. Exam-style multiple-choice questions are not in the set: they
    score lower than chat prompts (GPT-4's edge over Mixtral is smaller there);
    traffic of another kind should calibrate on its own prompts
    (``calibration_prompts``).
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
    exclude_questions: dict[str, Iterable[str]] | None = None,
    include_mmlu_pro: bool = True,
    include_alpaca_eval: bool = True,
) -> Router:
    """Train router ``router`` with its recipe on the allowed data of ``data_dir``.

    ``embedder`` defaults to the cached all-MiniLM-L6-v2 (:func:`default_embedder`).
    ``options`` override the recipe's router settings (for example ``strong``,
    ``weak``, ``epochs``). ``exclude_questions`` maps a source (``arena``,
    ``alpaca_eval``, ``mmlu_pro``) to the ids held out of training. The returned
    router's ``training_`` records the data, the split and the seed.
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
        exclude_questions=dict(exclude_questions or {}),
        include_mmlu_pro=include_mmlu_pro,
        include_alpaca_eval=include_alpaca_eval,
    )
    trained = recipe(data)
    trained.training_ = {**data.description(), **(getattr(trained, "training_", None) or {})}
    trained.label = router  # adaptive_ensemble_l3's decisions name it, not its kind
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
    "HELD_OUT_SOURCES",
    "RECIPES",
    "RecipeData",
    "default_embedder",
    "get_recipe",
    "reference_prompts",
    "router_reference_quantiles",
    "register_recipe",
    "train_recipe",
]
