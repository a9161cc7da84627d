"""Training recipe of ``adaptive_ensemble``: the ``knn``/``ensemble`` labels, plus MMLU subjects as groups.

Labels are those of :func:`shared_core.training.knn.labelled_prompts` (MMLU
correctness, arena-bench difficulty); each MMLU prompt also carries its subject
as ``group``, which the router's subject classifier learns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared_core.routers import Router
from shared_core.training.knn import labelled_prompts
from shared_core.training.recipes import RecipeData, register_recipe


def mmlu_pro_labelled(data: RecipeData, weak: str) -> pd.DataFrame:
    """MMLU-Pro as labelled prompts: ``0.5 + 0.5 * (gpt-4o right - weak right)``.

    gpt-4-1106-preview was not evaluated on MMLU-Pro; gpt-4o-2024-05-13 stands in for
    the strong model (the closest strong model there, and the mmlu-pro benchmark's).
    """
    from shared_core.datasets import MMLU_PRO_STRONG_MODEL
    from shared_core.training.knn import correctness_labels

    pro = data.drop_held_out_texts(data.mmlu_pro())
    labels = correctness_labels(pro, MMLU_PRO_STRONG_MODEL, weak)
    keep = np.isfinite(labels)
    return pd.DataFrame({"prompt": pro["prompt"][keep], "label": labels[keep], "source": "mmlu_pro"})


def _train(data: RecipeData, with_mmlu_pro: bool) -> Router:
    from shared_core.datasets import STRONG_MODEL, WEAK_MODEL
    from shared_core.routers.adaptive_ensemble import AdaptiveEnsembleRouter

    settings = {"strong": STRONG_MODEL, "weak": WEAK_MODEL, "progress": data.progress, **(data.options or {})}
    settings.pop("seed", None)  # deterministic: nothing to seed
    labelled, info = labelled_prompts(data, settings["strong"], settings["weak"])
    if with_mmlu_pro:
        labelled = pd.concat([data.drop_held_out_texts(labelled), mmlu_pro_labelled(data, settings["weak"])],
                             ignore_index=True)
        info["data"] = (data.description()["data"] + " + MMLU-Pro right/wrong of gpt-4o-2024-05-13 (standing in "
                        "for the strong model) and the weak model, as correctness labels")
    if data.include_mmlu_train:
        mmlu = data.mmlu_train()
        subject = dict(zip(mmlu["prompt"], mmlu["subject"]))
        mmlu_rows = labelled["source"] == "mmlu"
        labelled["group"] = labelled["prompt"].map(subject).where(mmlu_rows)
    router = AdaptiveEnsembleRouter(data.embedder, **settings).fit(labelled)
    router.training_.update(info)
    return router


@register_recipe("adaptive_ensemble")
def train_adaptive_ensemble(data: RecipeData) -> Router:
    """Gated kNN (+ subject classifier) and a linear head, mixed by the similarity of the nearest training prompts."""
    return _train(data, with_mmlu_pro=False)


@register_recipe("adaptive_ensemble_pro")
def train_adaptive_ensemble_pro(data: RecipeData) -> Router:
    """``adaptive_ensemble`` with MMLU-Pro as a third neighbour bank and in the linear head."""
    return _train(data, with_mmlu_pro=True)


__all__ = ["mmlu_pro_labelled", "train_adaptive_ensemble", "train_adaptive_ensemble_pro"]
