"""Training recipes of the item-response router: every model's outcome as an observation.

* ``irt``: permissively licensed data only: the MMLU training half (2 models,
  right/wrong), arena-bench-v1 (15 models, GPT-4 judge grades) and MMLU-Pro
  (30 models, right/wrong), all Apache-2.0.
* ``irt_nc``: the same plus AlpacaEval (68 models, each judged against
  gpt-4-1106-preview). AlpacaEval's data licence is CC BY-NC 4.0, so this
  router is for non-commercial use only; its config says so (``data_license``).

Held-out questions (``exclude_questions``) never reach the router: the readers
drop them by id and :meth:`~shared_core.training.recipes.RecipeData.drop_held_out_texts`
by text.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared_core.errors import DataError
from shared_core.routers import Router
from shared_core.training.recipes import MMLU_SPLIT_RULE, RecipeData, register_recipe

#: Source shares of the loss in the recipes (see ``IRTRouter``'s ``source_weights``).
SOURCE_WEIGHTS = {"mmlu": 1.0, "arena": 1.0, "mmlu_pro": 1.0, "alpaca_eval": 1.0}


def _long(df: pd.DataFrame, models: list[str], source: str, kind: str, transform=None) -> pd.DataFrame:
    values = df[models].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    r, c = np.nonzero(np.isfinite(values))
    y = values[r, c]
    if transform is not None:
        y = transform(y)
    return pd.DataFrame({"prompt": df["prompt"].to_numpy()[r], "source": source,
                         "model": np.asarray(models, dtype=object)[c], "outcome": y, "kind": kind})


def observations(data: RecipeData, *, alpaca_eval: bool) -> tuple[pd.DataFrame, dict]:
    """The recipe's sources as per-model observations, and a description for the training record."""
    from shared_core import datasets as D

    frames, used = [], []
    if data.include_mmlu_train:
        mmlu = data.drop_held_out_texts(data.mmlu_train())
        frames.append(_long(mmlu, [D.STRONG_MODEL, D.WEAK_MODEL], "mmlu", "binary"))
        used.append(f"{MMLU_SPLIT_RULE} (gpt-4-1106-preview and Mixtral right/wrong)")
    if data.include_arena:
        arena = data.drop_held_out_texts(data.arena())
        if len(arena):
            frames.append(_long(arena, D.arena_models(arena), "arena", "grade", lambda g: np.clip((g - 1) / 9, 0, 1)))
            used.append("arena-bench-v1 GPT-4 judge grades of all 15 models (as (grade - 1) / 9)")
    if data.include_mmlu_pro:
        pro = data.drop_held_out_texts(data.mmlu_pro())
        frames.append(_long(pro, D.outcome_columns(pro), "mmlu_pro", "binary"))
        used.append("MMLU-Pro right/wrong of all 30 models")
    license_ = None
    if alpaca_eval:
        alpaca = data.drop_held_out_texts(data.alpaca_eval())
        models = [m for m in D.outcome_columns(alpaca) if m != D.ALPACA_EVAL_REFERENCE]
        obs = _long(alpaca, models, "alpaca_eval", "pref").assign(reference=D.ALPACA_EVAL_REFERENCE)
        frames.append(obs)
        used.append("AlpacaEval 2.0 judgements of 68 models against gpt-4-1106-preview (CC BY-NC 4.0)")
        license_ = D.ALPACA_EVAL_LICENSE
    if not frames:
        raise DataError("the irt recipe has no training data: every source is switched off")
    df = pd.concat(frames, ignore_index=True)
    info = {"data": " + ".join(used), "data_license": license_ or "Apache-2.0 (all sources)"}
    return df, info


def _train(data: RecipeData, alpaca_eval: bool) -> Router:
    from shared_core.datasets import STRONG_MODEL, WEAK_MODEL
    from shared_core.routers.irt import IRTRouter

    settings = {"strong": STRONG_MODEL, "weak": WEAK_MODEL, "progress": data.progress, "seed": data.seed,
                "source_weights": SOURCE_WEIGHTS, **(data.options or {})}
    obs, info = observations(data, alpaca_eval=alpaca_eval)
    router = IRTRouter(data.embedder, **settings).fit(obs)
    router.training_.update(info)
    return router


@register_recipe("irt")
def train_irt(data: RecipeData) -> Router:
    """Item-response router on MMLU-train, arena-bench and MMLU-Pro (permissive data only)."""
    return _train(data, alpaca_eval=False)


@register_recipe("irt_nc")
def train_irt_nc(data: RecipeData) -> Router:
    """``irt`` plus AlpacaEval's 68 models: non-commercial use only (CC BY-NC 4.0 data)."""
    return _train(data, alpaca_eval=True)


__all__ = ["SOURCE_WEIGHTS", "observations", "train_irt", "train_irt_nc"]
