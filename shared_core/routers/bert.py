"""RouteLLM's ``bert`` router: an encoder fine-tuned as a 3-label battle classifier.

The model reads a prompt and predicts the outcome of a battle between the strong
and the weak model on it, with RouteLLM's label order: 0 = strong wins, 1 = tie,
2 = weak wins. The strong model's win rate is ``1 - P(tie) - P(weak wins)``, as
RouteLLM's ``BERTRouter`` computes it (``routellm/routers/routers.py``).

A saved router is a Hugging Face ``BertForSequenceClassification`` directory
(``config.json`` + ``model.safetensors`` + tokenizer files) with this package's
keys added to ``config.json``; RouteLLM's published bert checkpoints have the same
layout without those keys and load with :meth:`BertRouter.from_pretrained` (or
``load_router``) from a local path. Train one with ``routellm train bert --recipe``
(:mod:`shared_core.training.bert`). Needs the ``finetune`` extra (torch, transformers).

    >>> from shared_core.routers.bert import BertRouter, STRONG_LABEL, TIE_LABEL, WEAK_LABEL
    >>> (STRONG_LABEL, TIE_LABEL, WEAK_LABEL)
    (0, 1, 2)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shared_core.errors import ArtifactError
from shared_core.routers import Router, register_router
from shared_core.routers._finetuned import (
    check_positive,
    check_threads,
    open_model_dir,
    router_fields,
    save_dir,
    softmax,
    torch_threads,
    write_router_fields,
)

#: RouteLLM's label order.
STRONG_LABEL, TIE_LABEL, WEAK_LABEL = 0, 1, 2
NUM_LABELS = 3
ID2LABEL = {STRONG_LABEL: "strong_wins", TIE_LABEL: "tie", WEAK_LABEL: "weak_wins"}


def win_rate(logits: np.ndarray) -> np.ndarray:
    """Strong model's win rate from 3-label logits: ``1 - P(tie) - P(weak wins)``."""
    probs = softmax(np.asarray(logits, dtype=np.float64))
    return 1.0 - probs[:, TIE_LABEL] - probs[:, WEAK_LABEL]


@register_router
class BertRouter(Router):
    """A sequence classifier over (strong wins, tie, weak wins); score = P(strong wins).

    ``model`` is a ``transformers`` sequence-classification model with 3 labels and
    ``tokenizer`` its tokenizer; build one with :meth:`from_pretrained` or
    :func:`shared_core.training.bert.fit_bert`. Prompts are truncated to
    ``max_length`` tokens (a saved router: the length it was trained at) and scored ``batch_size`` at a time on ``threads`` CPU
    threads (default: the usable CPUs, at most 4; scoped to the call).
    """

    name = "bert"

    def __init__(self, model: Any, tokenizer: Any, *, max_length: int = 512, batch_size: int = 32,
                 threads: int | None = None) -> None:
        check_positive(max_length, "max_length")
        check_positive(batch_size, "batch_size")
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.threads = check_threads(threads)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, max_length: int | None = None, batch_size: int = 32,
                        threads: int | None = None, **kwargs: Any) -> "BertRouter":
        """Load a saved bert router or a RouteLLM bert checkpoint (a Hugging Face directory)."""
        directory, config, fields = open_model_dir(path, cls.name, kwargs)
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if config.get("num_labels", len(config.get("id2label") or {}) or NUM_LABELS) != NUM_LABELS:
            raise ArtifactError(f"{str(directory)!r} is a classifier with {config.get('id2label')} labels; bert needs 3")
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(directory))
            model = AutoModelForSequenceClassification.from_pretrained(
                str(directory), num_labels=NUM_LABELS, use_safetensors=True
            )
        except (OSError, ValueError, KeyError) as exc:
            raise ArtifactError(f"cannot load the bert router in {str(directory)!r}: {exc}") from None
        model.eval()
        settings = config.get("routellm") if isinstance(config.get("routellm"), dict) else {}
        saved = settings.get("max_length")  # the length it was trained at (not HF's generation max_length)
        limit = max_length or (saved if isinstance(saved, int) and saved > 0 else None) or min(
            int(getattr(tokenizer, "model_max_length", 512) or 512), 512)
        router = cls(model, tokenizer, max_length=limit, batch_size=batch_size, threads=threads)
        for key, value in fields.items():
            setattr(router, key, value)
        return router

    def logits(self, prompts: list[str]) -> np.ndarray:
        """The classifier's logits, shape ``(len(prompts), 3)``."""
        import torch

        out = []
        with torch_threads(self.threads), torch.inference_mode():
            for start in range(0, len(prompts), self.batch_size):
                batch = self.tokenizer(
                    prompts[start : start + self.batch_size], padding=True, truncation=True,
                    max_length=self.max_length, return_tensors="pt",
                )
                out.append(self.model(**batch).logits.float().numpy())
        return np.concatenate(out, axis=0)

    def _score(self, prompts: list[str]) -> np.ndarray:
        return win_rate(self.logits(prompts))

    def save(self, path: str | Path) -> Path:
        """A Hugging Face directory (safetensors weights, tokenizer) with the router's keys in config.json."""
        directory = save_dir(path)
        self.model.save_pretrained(str(directory), safe_serialization=True)
        self.tokenizer.save_pretrained(str(directory))
        write_router_fields(directory, {**router_fields(self), "routellm": {"max_length": self.max_length}})
        return directory
