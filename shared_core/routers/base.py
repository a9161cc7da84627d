"""The router contract: batch-first, RouteLLM semantics.

A router maps a list of prompts to the strong model's predicted win rate, one
score in [0, 1] per prompt. A decision sends a prompt to the strong model when
``score >= threshold`` (RouteLLM ``routellm/routers/routers.py``), so a RouteLLM
threshold means the same thing here.
"""

from __future__ import annotations

import enum
import math
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from shared_core.embeddings.base import MAX_TEXT_CHARS, blas_limit, check_text
from shared_core.errors import ConfigError, PromptError


#: Characters of a prompt a router reads (the embedders read no more either).
MAX_PROMPT_CHARS = MAX_TEXT_CHARS


class Role(str, enum.Enum):
    """Which of the two configured models a call goes to."""

    STRONG = "strong"
    WEAK = "weak"


def new_decision_id() -> str:
    """A fresh decision id: ``dec_`` and 24 random hex digits."""
    return "dec_" + uuid.uuid4().hex[:24]


@dataclass(frozen=True)
class Decision:
    """One routing decision.

    ``score`` is the strong model's predicted win rate, or ``None`` when the
    prompt had no text to score (see :mod:`shared_core.policy`); ``reason`` says
    why a decision was made without a score. ``id`` names the decision for
    feedback (:mod:`shared_core.feedback`); it is not compared and not in
    :meth:`to_dict` (the record of a call carries it, see
    :func:`shared_core.engine.decision_record`).
    """

    role: Role
    score: float | None
    threshold: float
    router: str
    reason: str = "score"
    id: str = field(default_factory=new_decision_id, compare=False)

    @property
    def is_strong(self) -> bool:
        return self.role is Role.STRONG

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role.value,
            "score": self.score,
            "threshold": self.threshold,
            "router": self.router,
            "reason": self.reason,
        }


#: The threshold of ``strong_fraction=1``: every score (clipped to [0, 1]) reaches it.
ALWAYS_STRONG = 0.0
#: The threshold of ``strong_fraction=0``: the float just above 1.0, so that no
#: score reaches it (a threshold of 1.0 would still send a score of 1.0 strong).
NEVER_STRONG = math.nextafter(1.0, math.inf)


def check_threshold(threshold: Any) -> float:
    """Return ``threshold`` as a float, or raise if it is not a number in [0, 1].

    The one value above 1 accepted is :data:`NEVER_STRONG`, the threshold that
    ``strong_fraction=0`` turns into, so that it can be passed on and recorded.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)):
        raise ConfigError(f"threshold must be a number in [0, 1], got {threshold!r}")
    value = float(threshold)
    if value == NEVER_STRONG:
        return value
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"threshold must be in [0, 1], got {threshold!r}")
    return value


def check_prompts(prompts: Any) -> list[str]:
    """Return ``prompts`` as a list of strings, or raise naming what is wrong."""
    if isinstance(prompts, str):
        raise ConfigError(
            f"prompts must be a list of strings, got a single string {prompts[:40]!r}; "
            "wrap it in a list"
        )
    try:
        items = list(prompts)
    except TypeError:
        raise ConfigError(f"prompts must be a list of strings, got {type(prompts).__name__}") from None
    if not items:
        raise ConfigError("prompts must be a non-empty list of strings, got an empty list")
    return [check_prompt(p, i) for i, p in enumerate(items)]


def check_prompt(prompt: Any, index: int = 0) -> str:
    """``prompt`` if it is a string of valid Unicode text, else :class:`PromptError` naming ``index``."""
    try:
        return check_text(prompt, index)
    except PromptError as exc:
        raise PromptError(str(exc).replace("texts[", "prompts[", 1), index=index) from None


class Router(ABC):
    """Scores prompts with the strong model's win rate.

    Subclasses implement :meth:`_score` on a validated, non-empty list of prompts
    and return one float per prompt in [0, 1]. Constructors only store; trained
    routers are built by ``fit`` functions in :mod:`shared_core.training` or
    loaded with :func:`shared_core.routers.load_router`.
    """

    #: Registry name (RouteLLM's where one exists).
    name: ClassVar[str] = "router"

    @property
    def label(self) -> str:
        """The name this router's decisions and messages carry.

        The shipped checkpoint or recipe it was loaded or trained as when that is not
        its registry name (the default is ``adaptive_ensemble_l3``, an
        ``adaptive_ensemble``), else :attr:`name`. It is recorded in a saved
        ``config.json`` as ``"label"``, so a router loaded by path keeps it.
        """
        return getattr(self, "label_", None) or self.name

    @label.setter
    def label(self, name: str) -> None:
        # set once, by whatever loads or trains the router, before it is handed out
        self.label_ = None if name == self.name else name

    @abstractmethod
    def _score(self, prompts: list[str]) -> np.ndarray:
        """Win rates for ``prompts`` (already validated, non-empty)."""

    def score(self, prompts: Sequence[str]) -> np.ndarray:
        """Strong model's predicted win rate for each prompt, shape ``(len(prompts),)``.

        Every prompt is checked first (:class:`~shared_core.errors.PromptError` names
        the first bad one and its index). A router reads at most the first
        :data:`MAX_PROMPT_CHARS` characters of a prompt (a 10 MB prompt costs what a
        16 KB one does); NumPy's BLAS threads are capped at one during the call only.
        """
        items = [p[:MAX_PROMPT_CHARS] for p in check_prompts(prompts)]
        with blas_limit(1):
            scores = np.asarray(self._score(items), dtype=np.float64).reshape(-1)
        if scores.shape[0] != len(items):
            raise RuntimeError(
                f"router {self.label!r} returned {scores.shape[0]} scores for {len(items)} prompts"
            )
        if np.isnan(scores).any():
            raise RuntimeError(f"router {self.label!r} returned NaN scores")
        return np.clip(scores, 0.0, 1.0)

    def route(self, prompts: Sequence[str], threshold: float) -> list[Decision]:
        """Decide strong (score >= threshold) or weak for every prompt."""
        thr = check_threshold(threshold)
        scores = self.score(prompts)
        return [
            Decision(Role.STRONG if s >= thr else Role.WEAK, float(s), thr, self.label)
            for s in scores
        ]

    # Artifacts -----------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``config.json`` + ``model.safetensors`` to the directory ``path``."""
        raise NotImplementedError(f"router {self.name!r} has no saved form")

    @property
    def reference_quantiles(self) -> np.ndarray | None:
        """Score quantiles on a reference prompt set, if the artifact ships them.

        ``reference_quantiles[i]`` is the ``i/(len-1)`` quantile; they let a strong
        fraction be turned into a threshold without the user's own prompts.
        """
        return getattr(self, "reference_quantiles_", None)
