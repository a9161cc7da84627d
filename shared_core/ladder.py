"""Ladders: more than two models, cheapest first, each with its threshold.

A two-model router scores one number, the strong model's win rate. A router
trained on many models' outcomes (the ``irt`` item-response router) can say, for
each model of its table, how likely that model is to do well on a prompt: its
*predicted quality* ``q_m(x)`` in [0, 1]. A :class:`Ladder` lists models from
cheapest to dearest, each with the router's name for it and a threshold, and
sends a prompt to the **cheapest model whose predicted quality reaches its
threshold** (``q >= threshold``, RouteLLM's ``>=``); when none does, to the top
rung, which needs no threshold. All prompts of a batch are scored in one call.

A router takes part when it has ``model_qualities(prompts, names) -> (n, k)``
array, or the ``irt`` router's ``logits(prompts, embeddings, names)`` (the
qualities are then ``sigmoid(logits)``, the probability that each model does
well) and a ``models_`` table that names every rung.

The roles of :mod:`shared_core.attempts`: the top rung plays ``strong``, every
other rung ``weak``. A rung's answer that fails the escalation checks
(:mod:`shared_core.escalation`) goes one rung up; with ``fallback``, an error
moves up the ladder, then down from the chosen rung.

Example (a stand-in router with fixed qualities; ``irt`` computes them from the prompt):
    >>> import numpy as np
    >>> class Table:
    ...     name, models_ = "table", ["tiny", "mid", "big"]
    ...     def model_qualities(self, prompts, names):
    ...         easy = np.array([0.9, 0.95, 0.99]); hard = np.array([0.2, 0.7, 0.9])
    ...         return np.array([hard if "prove" in p else easy for p in prompts])
    >>> ladder = Ladder(Table(), [("tiny", 0.8), ("mid", 0.6), ("big", None)])
    >>> [(d.rung, d.model) for d in ladder.decide_texts(["say hi", "prove it"])]
    [(0, 'tiny'), (1, 'mid')]
    >>> ladder.attempt_order(ladder.decide_texts(["prove it"])[0], fallback=True)
    [1, 2, 0]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from shared_core.errors import ConfigError
from shared_core.policy import check_route_on, routing_text
from shared_core.routers import Role, check_prompts, check_threshold
from shared_core.routers._models import model_index
from shared_core.routers.base import new_decision_id

__all__ = ["Ladder", "LadderDecision", "Rung", "model_qualities", "supports_ladder"]


def supports_ladder(router: Any) -> bool:
    """Whether ``router`` can score several models (see the module docstring)."""
    if callable(getattr(router, "model_qualities", None)):
        return True
    return callable(getattr(router, "logits", None)) and hasattr(router, "embedder")


def model_qualities(router: Any, prompts: Sequence[str], names: Sequence[str]) -> np.ndarray:
    """Each named model's predicted quality on each prompt, ``(len(prompts), len(names))`` in [0, 1]."""
    from shared_core.embeddings.base import blas_limit
    from shared_core.routers.base import MAX_PROMPT_CHARS

    if not supports_ladder(router):
        raise ConfigError(
            f"router {getattr(router, 'name', type(router).__name__)!r} scores one pair of models only; a "
            "ladder needs a router that scores each model (the multi-model 'irt' router, or one with "
            "model_qualities(prompts, names))"
        )
    items = [p[:MAX_PROMPT_CHARS] for p in check_prompts(prompts)]
    with blas_limit(1):
        if callable(getattr(router, "model_qualities", None)):
            q = np.asarray(router.model_qualities(items, list(names)), dtype=np.float64)
        else:
            eta = np.asarray(router.logits(items, router.embedder.embed(items), list(names)), dtype=np.float64)
            q = 0.5 * (1.0 + np.tanh(0.5 * eta))
    if q.shape != (len(items), len(names)):
        raise RuntimeError(f"router returned qualities of shape {q.shape} for {len(items)} prompts x {len(names)} models")
    if np.isnan(q).any():
        raise RuntimeError("router returned NaN qualities")
    return np.clip(q, 0.0, 1.0)


@dataclass(frozen=True)
class Rung:
    """One step of a ladder: the router's name for the model, and the predicted
    quality it needs (``None``: the top rung, which takes what no rung below took)."""

    name: str
    threshold: Optional[float]


@dataclass(frozen=True)
class LadderDecision:
    """Which rung a prompt goes to, and why.

    ``score`` and ``threshold`` are the chosen rung's predicted quality and
    threshold; ``qualities`` every rung's (empty without text to score).
    """

    rung: int
    model: str
    role: Role
    score: Optional[float]
    threshold: Optional[float]
    router: str
    reason: str = "score"
    qualities: Tuple[float, ...] = ()
    #: Names the decision in its call's record (as :class:`~shared_core.routers.Decision`'s ``id``).
    id: str = field(default_factory=new_decision_id, compare=False)

    @property
    def is_strong(self) -> bool:
        return self.role is Role.STRONG

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role.value, "score": self.score, "threshold": self.threshold, "router": self.router,
                "reason": self.reason, "rung": self.rung, "rung_model": self.model,
                "qualities": [round(q, 6) for q in self.qualities]}


class Ladder:
    """Models cheapest first with thresholds on their predicted quality; see the module docstring.

    Args:
        router: a router that scores each model (``irt``).
        rungs: ``(name, threshold)`` pairs, cheapest first, at least two; names
            as in the router's model table; the top rung's threshold may be ``None``.
        on_no_text: ``"strong"`` (top rung) or ``"weak"`` (bottom rung) for a call with nothing to score.
        route_on: which text is scored (:data:`shared_core.policy.ROUTE_ON`).
    """

    def __init__(self, router: Any, rungs: Sequence[Any], on_no_text: str = "strong",
                 route_on: str = "last_user") -> None:
        if not supports_ladder(router):
            model_qualities(router, ["x"], [])  # raises the error that says what is needed
        if isinstance(rungs, (str, bytes)) or not isinstance(rungs, Sequence) or len(rungs) < 2:
            raise ConfigError(f"a ladder needs at least two (name, threshold) rungs, cheapest first, got {rungs!r}")
        parsed: list[Rung] = []
        for i, item in enumerate(rungs):
            if isinstance(item, Rung):
                item = (item.name, item.threshold)
            if not (isinstance(item, (tuple, list)) and len(item) == 2):
                raise ConfigError(f"rung {i} must be a (name, threshold) pair, got {item!r}")
            name, threshold = item
            if not isinstance(name, str) or not name.strip():
                raise ConfigError(f"rung {i}: the model name must be a non-empty string, got {name!r}")
            if threshold is None and i != len(rungs) - 1:
                raise ConfigError(f"rung {i} ({name!r}) needs a threshold; only the top rung may have None")
            parsed.append(Rung(name, None if threshold is None else check_threshold(threshold)))
        table = getattr(router, "models_", None)
        if table is not None:
            seen: dict[int, str] = {}
            for i, rung in enumerate(parsed):
                index = model_index(table, rung.name, role=f"rung {i} model")
                if index in seen:
                    raise ConfigError(f"rungs {seen[index]!r} and {rung.name!r} name the same model of the router's table")
                seen[index] = rung.name
        if on_no_text not in ("strong", "weak"):
            raise ConfigError(f"on_no_text must be 'strong' or 'weak', got {on_no_text!r}")
        self.router = router
        self.rungs: Tuple[Rung, ...] = tuple(parsed)
        self.on_no_text = Role(on_no_text)
        self.route_on = check_route_on(route_on)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.rungs]

    def role(self, rung: int) -> Role:
        """The role a rung plays in the attempt loop: the top rung is strong."""
        return Role.STRONG if rung == len(self.rungs) - 1 else Role.WEAK

    def _decision(self, rung: int, qualities: Sequence[float], reason: str = "score") -> LadderDecision:
        q = tuple(float(x) for x in qualities)
        return LadderDecision(rung, self.rungs[rung].name, self.role(rung), q[rung] if q else None,
                              self.rungs[rung].threshold, getattr(self.router, "name", type(self.router).__name__),
                              reason, q)

    def decide_texts(self, texts: Sequence[Optional[str]], reasons: Optional[Sequence[str]] = None) -> list[LadderDecision]:
        """The rung for each text (``None``: nothing to score, see ``on_no_text``), in one router call."""
        texts = list(texts)
        reasons = list(reasons) if reasons is not None else ["score" if t is not None else "no_text" for t in texts]
        idx = [i for i, t in enumerate(texts) if t is not None]
        q = model_qualities(self.router, [texts[i] for i in idx], self.names) if idx else np.zeros((0, len(self.rungs)))
        out: list[Optional[LadderDecision]] = [None] * len(texts)
        top = len(self.rungs) - 1
        for i, row in zip(idx, q):
            rung = next((k for k, r in enumerate(self.rungs[:-1]) if row[k] >= r.threshold), top)  # type: ignore[operator]
            out[i] = self._decision(rung, row)
        for i, t in enumerate(texts):
            if t is None:
                out[i] = self._decision(top if self.on_no_text is Role.STRONG else 0, (), reasons[i])
        return out  # type: ignore[return-value]

    def decide(self, conversations: Sequence[Sequence[tuple[str, Any]]]) -> list[LadderDecision]:
        """The rung for each conversation of ``(role, content)`` pairs (:mod:`shared_core.policy`)."""
        pairs = [routing_text(c, self.route_on) for c in conversations]
        return self.decide_texts([t for t, _ in pairs], [r for _, r in pairs])

    def decide_one(self, conversation: Sequence[tuple[str, Any]]) -> LadderDecision:
        return self.decide([conversation])[0]

    def pinned(self, rung: int) -> LadderDecision:
        """The decision of a conversation pinned to ``rung`` (nothing scored)."""
        return self._decision(rung, (), "pinned")

    def attempt_order(self, decision: LadderDecision, fallback: bool) -> list[int]:
        """Rungs to try on errors: the chosen one; with ``fallback`` the rungs above it, then those below."""
        if not fallback:
            return [decision.rung]
        n = len(self.rungs)
        return [*range(decision.rung, n), *range(decision.rung - 1, -1, -1)]

    def escalation_targets(self, decision: LadderDecision) -> list[int]:
        """Rungs a rejected answer climbs to, one at a time: those above the chosen one."""
        return list(range(decision.rung + 1, len(self.rungs)))

    def describe(self) -> dict[str, Any]:
        return {"router": getattr(self.router, "name", type(self.router).__name__),
                "ladder": [{"model": r.name, "threshold": r.threshold} for r in self.rungs]}

