"""Dev numbers on chat prompts: how well routers tell easy chat prompts from hard ones, and where 0.5 puts them.

    python benchmarks/chat_dev.py                                   # default, adaptive_ensemble_pro, irt
    python benchmarks/chat_dev.py --router recipe:adaptive_ensemble_chat --router knn

``benchmarks/data/chat_dev_prompts.jsonl`` holds 40 easy and 40 hard chat prompts
(greetings, trivia, translations, small requests; proofs, multi-step maths,
system design, debugging, careful analysis). It is the *dev* set the default
was chosen on; ``tests/data/sanity_prompts.jsonl`` is a different set, the check,
which no choice looks at. For each router this prints

* ``AUC``: the chance that a hard prompt scores above an easy one;
* at ``strong_fraction=0.5`` with the router's shipped reference quantiles (or,
  for ``recipe:NAME``, quantiles on :func:`shared_core.training.recipes.reference_prompts`):
  the share of hard prompts sent strong and of easy ones sent weak;
* the share of the 569 AlpacaEval instructions (ordinary chat) sent strong at
  that threshold (measured only; needs the router data directory).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: BLAS threads slow embedding down

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DEV = REPO / "benchmarks" / "data" / "chat_dev_prompts.jsonl"


def auc(hard: np.ndarray, easy: np.ndarray) -> float:
    """P(a hard prompt scores above an easy one), ties half."""
    diff = hard[:, None] - easy[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def load_router(spec: str, data_dir):
    """``(router, threshold at strong_fraction=0.5)`` for a shipped name, a directory or ``recipe:NAME``."""
    from shared_core.engine import resolve_router
    from shared_core.thresholds import threshold_from_quantiles
    from shared_core.training.recipes import router_reference_quantiles, train_recipe

    if spec.startswith("recipe:"):
        router = train_recipe(spec.split(":", 1)[1], data_dir=data_dir, progress=False)
        quantiles = router_reference_quantiles(router, data_dir)
    else:
        router = resolve_router(spec)
        quantiles = router.reference_quantiles
    return router, threshold_from_quantiles(quantiles, 0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--router", action="append", help="shipped name, directory or recipe:NAME (repeatable)")
    parser.add_argument("--data-dir", help="router data directory (default: ../shared/data)")
    args = parser.parse_args(argv)
    from shared_core.datasets import DataError, load_alpaca_eval
    from shared_core.files import jsonl_objects

    rows = jsonl_objects(DEV.read_text(encoding="utf-8").splitlines(), DEV)
    labels = np.array([r["label"] == "hard" for r in rows])
    prompts = [r["prompt"] for r in rows]
    try:
        alpaca = load_alpaca_eval(args.data_dir)[0]["prompt"].tolist()
    except DataError:
        alpaca = None
    print(f"{DEV.relative_to(REPO)}: {labels.sum()} hard, {(~labels).sum()} easy")
    for spec in args.router or ["default", "adaptive_ensemble_pro", "irt"]:
        router, threshold = load_router(spec, args.data_dir)
        scores = np.asarray(router.score(prompts))
        hard, easy = scores[labels], scores[~labels]
        line = (f"{spec:32s} AUC {auc(hard, easy):.3f}  at 0.5 (threshold {threshold:.4f}): hard->strong "
                f"{(hard >= threshold).mean():.2f}, easy->weak {(easy < threshold).mean():.2f}")
        if alpaca is not None:
            line += f", AlpacaEval strong share {(np.asarray(router.score(alpaca)) >= threshold).mean():.2f}"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
