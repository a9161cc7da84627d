"""RouteLLM's ``random`` router, seeded so that measurements repeat."""

from __future__ import annotations

import hashlib

import numpy as np

from shared_core.routers.base import Router


class RandomRouter(Router):
    """Scores each prompt uniformly at random in [0, 1].

    The score of a prompt depends only on ``seed`` and the prompt's text, so the
    same prompt gets the same score on every call, in any batch, on any path
    (streaming or not). That keeps a random baseline reproducible.
    """

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def _score(self, prompts: list[str]) -> np.ndarray:
        out = np.empty(len(prompts))
        for i, p in enumerate(prompts):
            digest = hashlib.sha256(f"{self.seed}\x00{p}".encode("utf-8")).digest()
            out[i] = int.from_bytes(digest[:8], "big") / 2.0**64
        return out
