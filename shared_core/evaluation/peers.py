"""Other routers' prompt scores, for rows beside ours in the results table (optional extra ``peers``).

* ``litellm-complexity``: LiteLLM's complexity router
  (``litellm.router_strategy.complexity_router.complexity_router.ComplexityRouter``),
  rule-based and trained on nothing; the score is the weighted sum its
  ``classify(prompt)`` returns (the number it cuts into tiers).
* ``prompt-length``: the prompt's length (a baseline; needs nothing);
* ``lmr-heuristic``: langchain-model-router's ``HeuristicStrategy`` with its default
  signals and weights; the score is the weighted sum of its signals for a request
  holding the prompt (the number it compares with its thresholds).

Both are called through their public classes, with their default settings; none of
their code is copied here. Their scores are not win rates (LiteLLM's can be
negative), so they enter the evaluation as rankings: the metrics only use the order
of the scores (thresholds at their deciles).

    pip install -e ".[peers]"
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np

from shared_core.errors import ConfigError

#: Peer name -> what it is, for the table's "trained on" column.
PEERS = {
    "prompt-length": "nothing (the prompt's length in characters)",
    "litellm-complexity": "nothing (LiteLLM complexity router: hand-set rules, its weighted score)",
    "lmr-heuristic": "nothing (langchain-model-router HeuristicStrategy: hand-set signals, their weighted sum)",
}
Scorer = Callable[[Sequence[str]], np.ndarray]


def _litellm() -> Scorer:
    # LiteLLM fetches a model price list from the internet at import unless told to use its local copy.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from litellm.router_api import RoutingContext
    from litellm.router_strategy.complexity_router.complexity_router import ComplexityRouter

    router = ComplexityRouter("routellm-peer", RoutingContext(None))
    return lambda prompts: np.array([router.classify(p)[1] for p in prompts], dtype=float)


def _lmr() -> Scorer:
    from langchain_model_router.strategies.heuristic import HeuristicStrategy
    from langchain_model_router.strategy import RoutingRequest

    strategy = HeuristicStrategy("weak", "strong")

    def score(prompt: str) -> float:
        request = RoutingRequest(text=prompt, content_blocks=[{"type": "text", "text": prompt}],
                                 modalities=frozenset({"text"}), routes=("weak", "strong"), tools_bound=False)
        return float(sum(strategy.weights[name] * signal(request) for name, signal in strategy.signals.items()))

    return lambda prompts: np.array([score(p) for p in prompts], dtype=float)


def _length() -> Scorer:
    return lambda prompts: np.array([len(p) for p in prompts], dtype=float)


_BUILDERS = {"prompt-length": _length, "litellm-complexity": _litellm, "lmr-heuristic": _lmr}


def peer_scorer(name: str) -> Scorer:
    """``scores(prompts)`` of peer ``name``; a ``ConfigError`` says which package to install if it is missing."""
    if name not in _BUILDERS:
        raise ConfigError(f"unknown peer router {name!r}; expected one of {', '.join(_BUILDERS)}")
    try:
        return _BUILDERS[name]()
    except ImportError as exc:
        raise ConfigError(
            f"peer router {name!r} needs its package ({exc.name or exc}); install the extra: pip install -e \".[peers]\""
        ) from None


__all__ = ["PEERS", "peer_scorer"]
