"""LLM-judge labelling of a user's own prompts (RouteLLM's data augmentation).

    >>> from shared_core.labeling import label_prompts, OpenAIChat  # doctest: +SKIP
    >>> summary = label_prompts(prompts, strong=OpenAIChat(url, "gpt-4o"), weak=OpenAIChat(url2, "llama"),
    ...                         judge=OpenAIChat(url, "gpt-4o"), output_dir="labels/")  # doctest: +SKIP

then ``routellm train mf --data labels/battles.jsonl --strong gpt-4o --weak llama -o my-router/``.
Chat models are plain callables (:mod:`shared_core.labeling.chat`); this package
imports no LLM framework.
"""

from shared_core.labeling.chat import ChatModel, ChatReply, OpenAIChat, ProviderError, is_retryable
from shared_core.labeling.judge import MODES, parse_grade, parse_verdict
from shared_core.labeling.run import (
    BATTLES_FILE,
    CALLS_FILE,
    UNPARSED_FILE,
    CostEstimate,
    LabelSummary,
    Prices,
    done_keys,
    estimate_cost,
    label_prompts,
)

__all__ = [
    "BATTLES_FILE",
    "CALLS_FILE",
    "ChatModel",
    "ChatReply",
    "CostEstimate",
    "LabelSummary",
    "MODES",
    "OpenAIChat",
    "Prices",
    "ProviderError",
    "UNPARSED_FILE",
    "done_keys",
    "estimate_cost",
    "is_retryable",
    "label_prompts",
    "parse_grade",
    "parse_verdict",
]
