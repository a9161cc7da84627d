"""Test helpers for every package (shared_core, LangChain, LlamaIndex): a stand-in multi-model
router for the ladder tests, and a way to run a test body in many threads at once."""

from __future__ import annotations

import threading

import numpy as np

from shared_core.routers import Router

#: Each model's predicted quality by kind of prompt: 'prove' is hard (only big is good), 'explain' middling.
QUALITIES = {"hard": [0.1, 0.4, 0.95], "middling": [0.3, 0.8, 0.97], "easy": [0.9, 0.95, 0.99]}


class TableRouter(Router):
    """Fixed qualities for the models ``tiny``, ``mid``, ``big`` by keyword; counts its calls."""

    name = "table"
    models_ = ["tiny", "mid", "big"]

    def __init__(self) -> None:
        self.calls = 0

    def _score(self, prompts):
        q = self.model_qualities(prompts, ["big", "tiny"])
        return 0.5 + 0.5 * (q[:, 0] - q[:, 1])

    def model_qualities(self, prompts, names):
        self.calls += 1
        kinds = ["hard" if "prove" in p else "middling" if "explain" in p else "easy" for p in prompts]
        return np.array([[QUALITIES[k][self.models_.index(n)] for n in names] for k in kinds])


def in_threads(work, n: int) -> list:
    """Run ``work(i)`` for ``i`` in ``range(n)`` in ``n`` threads at once; the errors they raised."""
    errors: list = []

    def guarded(i):
        try:
            work(i)
        except Exception as exc:  # noqa: BLE001 - handed back to the test, which asserts there are none
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors
