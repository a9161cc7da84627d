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
    from shared_core.training.recipes import train_recipe

    if spec.startswith("recipe:"):
        router = train_recipe(spec.split(":", 1)[1], data_dir=data_dir, progress=False)
        return router, trained_threshold(router, data_dir)
    router = resolve_router(spec)
    return router, threshold_from_quantiles(router.reference_quantiles, 0.5)


def trained_threshold(router, data_dir) -> float:
    """A freshly trained router's threshold at ``strong_fraction=0.5``: from its quantiles on the
    reference prompts, as the shipped checkpoints' are made."""
    from shared_core.thresholds import threshold_from_quantiles
    from shared_core.training.recipes import router_reference_quantiles

    return float(threshold_from_quantiles(router_reference_quantiles(router, data_dir), 0.5))


def dev_set() -> tuple[list[str], np.ndarray]:
    """The dev set's prompts and whether each is hard."""
    from shared_core.files import jsonl_objects

    rows = jsonl_objects(DEV.read_text(encoding="utf-8").splitlines(), DEV)
    return [r["prompt"] for r in rows], np.array([r["label"] == "hard" for r in rows])


def dev_numbers(router, threshold: float) -> dict[str, float]:
    """``router`` on the dev set: ``auc``, and at ``threshold`` the share of hard prompts sent
    strong (``hard_strong``) and of easy ones sent weak (``easy_weak``)."""
    prompts, labels = dev_set()
    scores = np.asarray(router.score(prompts), float)
    hard, easy = scores[labels], scores[~labels]
    return {"auc": auc(hard, easy), "hard_strong": float((hard >= threshold).mean()),
            "easy_weak": float((easy < threshold).mean())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--router", action="append", help="shipped name, directory or recipe:NAME (repeatable)")
    parser.add_argument("--data-dir", help="router data directory (default: ../shared/data)")
    args = parser.parse_args(argv)
    from shared_core.datasets import DataError, load_alpaca_eval

    labels = dev_set()[1]
    try:
        alpaca = load_alpaca_eval(args.data_dir)[0]["prompt"].tolist()
    except DataError:
        alpaca = None
    print(f"{DEV.relative_to(REPO)}: {labels.sum()} hard, {(~labels).sum()} easy")
    for spec in args.router or ["default", "adaptive_ensemble_pro", "irt"]:
        router, threshold = load_router(spec, args.data_dir)
        dev = dev_numbers(router, threshold)
        line = (f"{spec:32s} AUC {dev['auc']:.3f}  at 0.5 (threshold {threshold:.4f}): hard->strong "
                f"{dev['hard_strong']:.2f}, easy->weak {dev['easy_weak']:.2f}")
        if alpaca is not None:
            line += f", AlpacaEval strong share {(np.asarray(router.score(alpaca)) >= threshold).mean():.2f}"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
