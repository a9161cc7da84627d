"""Labels from per-model outcomes, and the training recipes of ``knn`` and ``ensemble``.

A label is the strong model's chance of a better answer than the weak model's on
one training prompt, in [0, 1]:

* **correctness outcomes** (MMLU: both models right or wrong per question):
  ``0.5 + 0.5 * (strong - weak)``, i.e. 1 strong right and weak wrong, 0.5 equal,
  0 the reverse (:func:`correctness_labels`);
* **graded outcomes of many models** (arena-bench: 15 models graded 1-10): the
  strong-vs-weak comparison on one prompt is noisy (on arena-bench it predicts
  nothing: 5-fold CV APGR 0.48 as a kNN label), but how hard a prompt is for
  *all* models is not. The label is ``P(strong better | difficulty)`` from a
  one-variable logistic regression of the strong-vs-weak outcome (ties half) on
  the prompt's difficulty, minus the mean grade of every model that answered
  (:func:`difficulty_labels`; 5-fold CV APGR 0.55).

Numbers behind these choices: docs/quality.md.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared_core.errors import DataError
from shared_core.routers import Router
from shared_core.routers._models import model_key
from shared_core.training.data import outcome_models
from shared_core.training.recipes import RecipeData, register_recipe

#: Fewer graded prompts than this and the difficulty calibration is not fitted.
MIN_CALIBRATION_PROMPTS = 20


def _column(df: pd.DataFrame, model: str) -> str:
    matches = [c for c in outcome_models(df) if model_key(c) == model_key(model)]
    if not matches:
        raise DataError(f"outcomes have no column for model {model!r}; model columns: {outcome_models(df)}")
    return matches[0]


def correctness_labels(outcomes: pd.DataFrame, strong: str, weak: str) -> np.ndarray:
    """``0.5 + 0.5 * (strong correct - weak correct)``; rows missing either are NaN."""
    s = pd.to_numeric(outcomes[_column(outcomes, strong)], errors="coerce").to_numpy(dtype=float)
    w = pd.to_numeric(outcomes[_column(outcomes, weak)], errors="coerce").to_numpy(dtype=float)
    return 0.5 + 0.5 * (s - w)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def fit_logistic_1d(x: np.ndarray, y: np.ndarray, ridge: float = 1e-2, steps: int = 50) -> tuple[float, float]:
    """``(a, b)`` maximising the likelihood of soft labels ``y`` under ``sigmoid(a + b x)`` (Newton)."""
    theta = np.zeros(2)
    design = np.stack([np.ones_like(x), x], axis=1)
    for _ in range(steps):
        p = _sigmoid(design @ theta)
        grad = design.T @ (y - p) - ridge * theta
        hess = (design * (p * (1 - p))[:, None]).T @ design + ridge * np.eye(2)
        step = np.linalg.solve(hess, grad)
        theta += step
        if np.abs(step).max() < 1e-10:
            break
    return float(theta[0]), float(theta[1])


def difficulty_labels(outcomes: pd.DataFrame, strong: str, weak: str) -> tuple[np.ndarray, dict]:
    """Labels ``P(strong better | difficulty)`` for graded outcomes of many models, and the fit.

    Difficulty is minus the mean grade over all model columns (missing grades
    skipped), standardised. The calibration is fitted on the prompts graded for
    both models of the pair; a prompt missing one of them still gets a label.
    """
    models = outcome_models(outcomes)
    grades = outcomes[models].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    graded = np.isfinite(grades).any(axis=1)
    if not graded.all():
        raise DataError(f"outcomes row {int(np.flatnonzero(~graded)[0])} has no grade for any model")
    difficulty = -np.nanmean(grades, axis=1)
    z = (difficulty - difficulty.mean()) / max(float(difficulty.std()), 1e-9)
    s = grades[:, models.index(_column(outcomes, strong))]
    w = grades[:, models.index(_column(outcomes, weak))]
    win = np.where(np.isfinite(s) & np.isfinite(w), 0.5 + 0.5 * np.sign(s - w), np.nan)
    both = np.isfinite(win)
    if both.sum() < MIN_CALIBRATION_PROMPTS:
        raise DataError(
            f"difficulty labels need at least {MIN_CALIBRATION_PROMPTS} prompts graded for both {strong!r} "
            f"and {weak!r}, got {int(both.sum())}"
        )
    a, b = fit_logistic_1d(z[both], win[both])
    labels = _sigmoid(a + b * z)
    return labels, {"intercept": round(a, 6), "slope": round(b, 6), "prompts": int(both.sum())}


def labelled_prompts(data: RecipeData, strong: str, weak: str) -> tuple[pd.DataFrame, dict]:
    """The recipe's training data as labelled prompts (``prompt``, ``label``, ``source``)."""
    frames, info = [], {}
    if data.include_mmlu_train:
        mmlu = data.mmlu_train()
        labels = correctness_labels(mmlu, strong, weak)
        keep = np.isfinite(labels)
        frames.append(pd.DataFrame({"prompt": mmlu["prompt"][keep], "label": labels[keep], "source": "mmlu"}))
    if data.include_arena:
        arena = data.arena()
        if len(arena) >= MIN_CALIBRATION_PROMPTS:
            labels, fit = difficulty_labels(arena.drop(columns=["question_id"], errors="ignore"), strong, weak)
            frames.append(pd.DataFrame({"prompt": arena["prompt"], "label": labels, "source": "arena"}))
            info["arena_difficulty_calibration"] = fit
        else:
            info["arena_skipped"] = f"{len(arena)} prompts, fewer than {MIN_CALIBRATION_PROMPTS} to calibrate labels on"
    if not frames:
        raise DataError("the recipe has no training data: include_mmlu_train and include_arena are both off")
    df = pd.concat(frames, ignore_index=True)
    # The same prompt twice in one source would count twice; keep its mean label.
    df = df.groupby(["source", "prompt"], as_index=False, sort=False)["label"].mean()
    return df[["prompt", "label", "source"]], info


def _train(cls, data: RecipeData) -> Router:
    """Label the recipe's data for the scoring pair and fit ``cls``; ``data.options`` go to ``cls``."""
    from shared_core.datasets import STRONG_MODEL, WEAK_MODEL

    settings = {"strong": STRONG_MODEL, "weak": WEAK_MODEL, "progress": data.progress,
                **(getattr(data, "options", None) or {})}
    settings.pop("seed", None)  # deterministic: nothing to seed
    labelled, info = labelled_prompts(data, settings["strong"], settings["weak"])
    router = cls(data.embedder, **settings).fit(labelled)
    router.training_.update(info)
    return router


@register_recipe("knn")
def train_knn(data: RecipeData) -> Router:
    """Gated kNN over the MMLU training half (correctness labels) and arena-bench (difficulty labels)."""
    from shared_core.routers.knn import KNNRouter

    return _train(KNNRouter, data)


@register_recipe("ensemble")
def train_ensemble(data: RecipeData) -> Router:
    """``knn`` plus a linear head on embedding + prompt features, on the same labels."""
    from shared_core.routers.ensemble import EnsembleRouter

    return _train(EnsembleRouter, data)


__all__ = ["correctness_labels", "difficulty_labels", "labelled_prompts", "train_ensemble", "train_knn"]
