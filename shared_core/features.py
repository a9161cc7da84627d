"""Cheap prompt features that carry across domains: code, math notation, reasoning markers, ...

A router learns *weights* for these features together with the prompt embedding
(nothing here is a hand-set score: every feature is a count or a flag, and its
effect on routing is fitted on the training data). They exist because an
embedding says what a prompt is about, while these say how much work it asks
for, in any domain: whether it holds code, formulas, several questions, a
request to prove or design or debug, technical vocabulary, or is a one-line
greeting.

Cost is bounded: the regular expressions look at the first :data:`MAX_CHARS`
characters of a prompt only (the length features use the full length, which
costs nothing), so a 100 kB prompt costs what a 4 kB one does. Measured on this
2-core machine: 0.25 ms a prompt on the arena-bench prompts (median 250 characters,
longest 2,560), 5 ms for a 200,000-character prompt.

    >>> from shared_core.features import prompt_features, FEATURE_NAMES
    >>> x = prompt_features(["Prove that sqrt(2) is irrational.", "hi!"])
    >>> x.shape == (2, len(FEATURE_NAMES))
    True
    >>> bool(x[0, FEATURE_NAMES.index("log_reasoning_words")] > x[1, FEATURE_NAMES.index("log_reasoning_words")])
    True
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

#: Version of :func:`prompt_features`; a saved router records it and refuses another.
FEATURES_VERSION = 1
#: Characters of a prompt the pattern features examine (its length is always counted in full).
MAX_CHARS = 4000

_PATTERNS: dict[str, re.Pattern[str]] = {
    # code: fences, statements, braces, operators, calls
    "code_markers": re.compile(
        r"```|^\s*(?:def|class|import|from|return|for|while|if|elif|else|try|except|public|private|static|"
        r"function|const|let|var|#include|SELECT|INSERT|UPDATE|CREATE)\b|[{};]\s*$|==|!=|=>|->|::|\w+\(\)|</?\w+>",
        re.M,
    ),
    "code_words": re.compile(
        r"\b(?:python|javascript|typescript|java|c\+\+|rust|golang|sql|html|css|bash|regex|api|json|code|"
        r"function|method|class|variable|compile[rd]?|runtime|bug|debug\w*|error|exception|stack ?trace|"
        r"segfault|script|program\w*|implement\w*|refactor\w*|unit tests?|library|framework)\b",
        re.I,
    ),
    # math notation: LaTeX, operators between numbers, powers, formulas
    "math_notation": re.compile(
        r"\\(?:frac|sum|int|sqrt|cdot|infty|mathbb|alpha|beta|theta|lambda|pi|leq|geq|neq)|\$[^$\n]{1,80}\$|"
        r"\d\s*[-+*/^=<>]\s*\d|[a-z]\s*\^\s*\d|\b[a-z]\s*=\s*[-\d(]|[∑∫√≤≥≠∞π]|\bsqrt\b|\blog\(|\bsin\(|\bcos\("
    ),
    "math_words": re.compile(
        r"\b(?:equation|integral|derivative|matrix|vector|polynomial|probability|theorem|lemma|proof|prime|"
        r"eigen\w*|limit|converge\w*|function of|solve for|how many|how much|calculate|compute|percent\w*|"
        r"ratio|average|sum of|product of|expected value|variance)\b",
        re.I,
    ),
    # reasoning and multi-step requests
    "reasoning_words": re.compile(
        r"\b(?:prove|proof|derive|show that|step[- ]by[- ]step|explain why|justify|analy[sz]e|analysis|"
        r"evaluate|compare|contrast|trade-?offs?|design|architect\w*|optimi[sz]e|debug|diagnose|critique|"
        r"assess|reason\w*|implications?|pros and cons|in detail|thoroughly|rigorous\w*|carefully)\b",
        re.I,
    ),
    "multi_step": re.compile(
        r"\b(?:first|second|then|next|finally|after that|afterwards|and then|also|additionally|moreover)\b|"
        r"^\s*(?:\d+[.)]|[-*•])\s",
        re.I | re.M,
    ),
    "technical_words": re.compile(
        r"\b(?:algorithm\w*|complexity|distributed|concurren\w*|database|latency|throughput|scalab\w*|"
        r"protocol|encryption|kernel|compiler|neural|gradient|regression|statistic\w*|quantum|thermodynamic\w*|"
        r"molecul\w*|enzyme|voltage|circuit|differential|asymptotic|hypothesis|econometric\w*|"
        r"microservices?|kubernetes|cache|memory|thread\w*|server|network\w*|infrastructure|system)\b",
        re.I,
    ),
    # easy chat: greetings, thanks, small talk, a phrase to translate
    "chat_words": re.compile(
        r"^\s*(?:hi|hello|hey|thanks|thank you|good (?:morning|evening|night)|how are you)\b|"
        r"\b(?:translate|in (?:french|spanish|german|italian)|joke|favou?rite|what's up|nice to meet)\b",
        re.I,
    ),
    "choice_lines": re.compile(r"^\s*[A-J][.)]\s", re.M),
    "numbers": re.compile(r"\d+(?:[.,]\d+)*"),
    "questions": re.compile(r"\?"),
    "sentences": re.compile(r"[.!?](?:\s|$)"),
}

FEATURE_NAMES: tuple[str, ...] = (
    "log_chars", "log_words", "log_lines", *(f"log_{name}" for name in _PATTERNS), "multiple_choice",
    "ends_with_question",
)  # fmt: skip


def prompt_features(prompts: Sequence[str]) -> np.ndarray:
    """Features of each prompt, ``(n, len(FEATURE_NAMES))`` float64 (see :data:`FEATURE_NAMES`).

    Counts enter as ``log(1 + count)``. Pattern counts look at the first
    :data:`MAX_CHARS` characters; ``log_chars`` is the full length.
    """
    out = np.empty((len(prompts), len(FEATURE_NAMES)))
    for i, prompt in enumerate(prompts):
        text = prompt[:MAX_CHARS]
        counts = [len(p.findall(text)) for p in _PATTERNS.values()]
        choices = counts[list(_PATTERNS).index("choice_lines")]
        out[i, 0] = np.log1p(len(prompt))
        out[i, 1] = np.log1p(len(text.split()))
        out[i, 2] = np.log1p(text.count("\n"))
        out[i, 3 : 3 + len(counts)] = np.log1p(counts)
        out[i, -2] = float(choices >= 3)
        out[i, -1] = float(text.rstrip().endswith("?"))
    return out


__all__ = ["FEATURES_VERSION", "FEATURE_NAMES", "MAX_CHARS", "prompt_features"]
