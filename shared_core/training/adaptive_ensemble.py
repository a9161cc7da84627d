"""Training recipe of ``adaptive_ensemble``: the ``knn``/``ensemble`` labels, plus MMLU subjects as groups.

Labels are those of :func:`shared_core.training.knn.labelled_prompts` (MMLU
correctness, arena-bench difficulty); each MMLU prompt also carries its subject
as ``group``, which the router's subject classifier learns.
"""

from __future__ import annotations

from shared_core.routers import Router
from shared_core.training.knn import labelled_prompts
from shared_core.training.recipes import RecipeData, register_recipe


@register_recipe("adaptive_ensemble")
def train_adaptive_ensemble(data: RecipeData) -> Router:
    """Gated kNN (+ subject classifier) and a linear head, mixed by the similarity of the nearest training prompts."""
    from shared_core.datasets import STRONG_MODEL, WEAK_MODEL
    from shared_core.routers.adaptive_ensemble import AdaptiveEnsembleRouter

    settings = {"strong": STRONG_MODEL, "weak": WEAK_MODEL, "progress": data.progress, **(data.options or {})}
    settings.pop("seed", None)  # deterministic: nothing to seed
    labelled, info = labelled_prompts(data, settings["strong"], settings["weak"])
    if data.include_mmlu_train:
        mmlu = data.mmlu_train()
        subject = dict(zip(mmlu["prompt"], mmlu["subject"]))
        mmlu_rows = labelled["source"] == "mmlu"
        labelled["group"] = labelled["prompt"].map(subject).where(mmlu_rows)
    router = AdaptiveEnsembleRouter(data.embedder, **settings).fit(labelled)
    router.training_.update(info)
    return router


__all__ = ["train_adaptive_ensemble"]
