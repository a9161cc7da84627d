"""Training recipe of ``adaptive_ensemble``: the ``knn``/``ensemble`` labels, plus MMLU subjects as groups.

Labels are those of :func:`shared_core.training.knn.labelled_prompts` (MMLU
correctness, arena-bench difficulty); each MMLU prompt also carries its subject
as ``group``, which the router's subject classifier learns. ``adaptive_ensemble_mm``
adds the difficulty head of :meth:`AdaptiveEnsembleRouter.fit_difficulty`, fitted
to every model's outcomes (:func:`difficulty_frame`); ``adaptive_ensemble_l3``'s
head reads the embedder's third layer instead of its sentence embedding, at a
larger weight.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared_core.routers import Router
from shared_core.training.knn import labelled_prompts
from shared_core.training.recipes import RecipeData, register_recipe

#: The linear head's source weights with the chat corpus: its 748 prompts count as much as arena-bench's 300 x 20,
#: and MMLU-Pro's 5,086 questions less than one each (dev numbers: docs/quality.md, fourth round, F8).
CHAT_SOURCE_WEIGHTS = {"arena": 20.0, "chat": 8.0, "mmlu_pro": 0.3}


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


#: The label of a chat-corpus prompt: a tie (the knn family's 0.5 for "both models equal").
CHAT_LABEL = 0.5


def chat_corpus_labelled(data: RecipeData) -> pd.DataFrame:
    """The chatterbot-corpus openings as labelled prompts, each labelled a tie (:data:`CHAT_LABEL`).

    The label is an assumption, not a measurement: the corpus is small talk,
    trivia and simple requests that a rule-based chatbot answers from a list, so
    both models of any pair in the data answer them well and neither is the
    better choice. It is the only permissively licensed source of such prompts
    here; every other source holds exam questions or prompts chosen for being hard.
    """
    from shared_core.datasets import load_chat_corpus

    chat = data.drop_held_out_texts(load_chat_corpus())
    return pd.DataFrame({"prompt": chat["prompt"], "label": CHAT_LABEL, "source": "chat"})


#: The difficulty head of ``adaptive_ensemble_mm``: its weight on the standardised scale and its ridge
#: penalty (dev numbers: docs/quality.md, sixth round, H3).
DIFFICULTY_BLEND = 0.2
DIFFICULTY_ALPHA = 100.0
#: ``adaptive_ensemble_l3``: the head on the mean token states of MiniLM's third layer, and its weight
#: (dev numbers: docs/quality.md, seventh round).
L3_LAYERS = (3,)
L3_BLEND = 0.45


def difficulty_frame(data: RecipeData) -> pd.DataFrame:
    """Every permissive source's prompts with their multi-model difficulty: ``prompt``, ``difficulty``, ``source``.

    Difficulty is 1 - the mean outcome of every model that answered the prompt:
    MMLU-train the pair's right/wrong (the only two models there), arena-bench the
    15 models' GPT-4 judge grades as ``(grade - 1) / 9``, MMLU-Pro the 30 models'
    right/wrong; the chatterbot-corpus openings 0 (every model answers small talk
    well: the assumption behind their tie labels). Held-out questions are left out.
    """
    from shared_core import datasets as D

    frames = []

    def add(frame: pd.DataFrame, outcomes: pd.DataFrame, source: str) -> None:
        values = outcomes.astype(float)
        difficulty = 1.0 - values.mean(axis=1, skipna=True).to_numpy()
        keep = np.isfinite(difficulty)
        frames.append(pd.DataFrame({"prompt": frame["prompt"].to_numpy()[keep],
                                    "difficulty": np.clip(difficulty[keep], 0.0, 1.0), "source": source}))

    if data.include_mmlu_train:
        mmlu = data.drop_held_out_texts(data.mmlu_train())
        add(mmlu, mmlu[[D.STRONG_MODEL, D.WEAK_MODEL]], "mmlu")
    if data.include_arena:
        arena = data.drop_held_out_texts(data.arena())
        if len(arena):
            add(arena, ((arena[D.arena_models(arena)].astype(float) - 1) / 9).clip(0, 1), "arena")
    if data.include_mmlu_pro:
        pro = data.drop_held_out_texts(data.mmlu_pro())
        add(pro, pro[D.outcome_columns(pro)], "mmlu_pro")
    chat = data.drop_held_out_texts(D.load_chat_corpus())
    frames.append(pd.DataFrame({"prompt": chat["prompt"], "difficulty": 0.0, "source": "chat"}))
    return pd.concat(frames, ignore_index=True)


def _train(data: RecipeData, with_mmlu_pro: bool, with_chat: bool = False, with_difficulty: bool = False,
           layers: tuple[int, ...] = (), blend: float = DIFFICULTY_BLEND) -> Router:
    from shared_core.datasets import STRONG_MODEL, WEAK_MODEL
    from shared_core.routers.adaptive_ensemble import AdaptiveEnsembleRouter

    settings = {"strong": STRONG_MODEL, "weak": WEAK_MODEL, "progress": data.progress, **(data.options or {})}
    settings.pop("seed", None)  # deterministic: nothing to seed
    blend = settings.pop("difficulty_blend", blend)
    alpha = settings.pop("difficulty_alpha", DIFFICULTY_ALPHA)
    layers = settings.pop("difficulty_layers", layers)
    if with_chat:
        settings.setdefault("source_weights", dict(CHAT_SOURCE_WEIGHTS))
    labelled, info = labelled_prompts(data, settings["strong"], settings["weak"])
    extra = []  # what the description of the recipe's data gains
    if with_mmlu_pro and data.include_mmlu_pro:  # a leave-MMLU-Pro-out run switches it off
        labelled = pd.concat([data.drop_held_out_texts(labelled), mmlu_pro_labelled(data, settings["weak"])],
                             ignore_index=True)
        extra.append("MMLU-Pro right/wrong of gpt-4o-2024-05-13 (standing in for the strong model) and the weak "
                     "model, as correctness labels")
    if with_chat:
        from shared_core.datasets import CHAT_CORPUS_LICENSE

        labelled = pd.concat([labelled, chat_corpus_labelled(data)], ignore_index=True)
        extra.append(f"chatterbot-corpus English conversation openings ({CHAT_CORPUS_LICENSE}), each labelled a "
                     f"tie ({CHAT_LABEL}): an assumption, not a measured outcome")
    if extra:
        info["data"] = " + ".join([data.description()["data"], *extra])
    if data.include_mmlu_train:
        mmlu = data.mmlu_train()
        subject = dict(zip(mmlu["prompt"], mmlu["subject"]))
        mmlu_rows = labelled["source"] == "mmlu"
        labelled["group"] = labelled["prompt"].map(subject).where(mmlu_rows)
    router = AdaptiveEnsembleRouter(data.embedder, **settings).fit(labelled)
    if with_difficulty:
        from shared_core.training.recipes import reference_prompts

        # The head's scale comes from the reference prompts' scores: without the held-out ones, so that a
        # cross-validation retraining sees nothing of its test fold, not even unlabelled text.
        held = data.held_out_texts()
        reference = [p for p in reference_prompts(data.data_dir) if p not in held]
        router.fit_difficulty(difficulty_frame(data), reference, blend=blend, alpha=alpha, layers=layers)
        info["data"] += (" + a difficulty head on every model's outcomes (MMLU-train: the pair; arena-bench: 15 "
                         "models; MMLU-Pro: 30 models; corpus openings: 0)")
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


@register_recipe("adaptive_ensemble_chat")
def train_adaptive_ensemble_chat(data: RecipeData) -> Router:
    """``adaptive_ensemble_pro`` plus the chatterbot-corpus openings as ties: ordinary small talk and trivia."""
    return _train(data, with_mmlu_pro=True, with_chat=True)


@register_recipe("adaptive_ensemble_mm")
def train_adaptive_ensemble_mm(data: RecipeData) -> Router:
    """``adaptive_ensemble_chat`` plus a difficulty head fitted to every model's outcomes (blend 0.2)."""
    return _train(data, with_mmlu_pro=True, with_chat=True, with_difficulty=True)


@register_recipe("adaptive_ensemble_l3")
def train_adaptive_ensemble_l3(data: RecipeData) -> Router:
    """``adaptive_ensemble_mm`` with the difficulty head on the embedder's layer 3 (blend 0.45)."""
    return _train(data, with_mmlu_pro=True, with_chat=True, with_difficulty=True, layers=L3_LAYERS, blend=L3_BLEND)


__all__ = [
    "chat_corpus_labelled",
    "difficulty_frame",
    "mmlu_pro_labelled",
    "train_adaptive_ensemble",
    "train_adaptive_ensemble_chat",
    "train_adaptive_ensemble_l3",
    "train_adaptive_ensemble_mm",
    "train_adaptive_ensemble_pro",
]
