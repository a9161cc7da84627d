"""The dev numbers a recipe is chosen on (docs/quality.md): seven CV and transfer APGRs, and the chat dev set.

    python benchmarks/dev_numbers.py                         # the default's recipe, adaptive_ensemble_l3
    python benchmarks/dev_numbers.py --recipe adaptive_ensemble_mm --json dev.json
    python benchmarks/dev_numbers.py --option difficulty_blend=0.3      # a router setting changed

Every number is measured on the allowed training data, with the test fold or the
whole source left out of the recipe's training:

* ``mmlu-cv``: MMLU's training half, 5-fold cross-validation by question (the
  recipe retrained without each fold's questions), the pair's right/wrong;
* ``arena-cv``, ``pro-cv``: arena-bench and MMLU-Pro, 5-fold cross-validation as
  ``routellm evaluate`` runs it (the same folds, so these equal the results table's);
* ``alpaca-x``: AlpacaEval, which no permissive recipe trains on: the recipe
  trained on everything allowed, scored there (the results table's alpaca-eval);
* ``arena-loo``, ``mmlu-loo``, ``pro-loo``: one source left out of training
  altogether (its labels and its prompts' text), the recipe scored on it: how a
  router carries to a kind of prompt it has not seen;
* ``mean7``: their mean, the number rounds four to fourteen chose on;
* the chat dev set (benchmarks/chat_dev.py): AUC, and at ``strong_fraction=0.5``
  with the trained router's reference quantiles the share of its hard prompts
  sent strong and of its easy ones sent weak (the rule: at least 0.90 each).

MMLU-test, GSM8K and MT-Bench are never read: the protocol keeps them for one look
per final candidate (``routellm evaluate`` / scripts/results_table.py). 13 trainings
of the recipe; about 10 minutes for ``adaptive_ensemble_l3`` on this 2-core machine
with the embedding cache warm (benchmarks/warm_cache.py).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: BLAS threads slow embedding down

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

#: MMLU-train's folds: :func:`shared_core.evaluation.benchmarks.cv_folds` over its row numbers with this seed.
MMLU_FOLD_SEED = 1
NUMBERS = ("mmlu-cv", "arena-cv", "pro-cv", "alpaca-x", "arena-loo", "mmlu-loo", "pro-loo")


def _apgr(scores, strong, weak) -> float:
    from shared_core.evaluation import metrics as M

    strong, weak = np.asarray(strong, float), np.asarray(weak, float)
    return float(M.apgr(M.routing_curve(np.asarray(scores, float), strong, weak), strong.mean(), weak.mean()))


def _train(recipe: str, data) -> object:
    from shared_core.training.recipes import get_recipe

    return get_recipe(recipe)(data)


#: Router settings for every training (``--option``), as the recipes take them (``difficulty_blend``, ``banks``, ...).
OPTIONS: dict = {}


def _data(data_dir, **settings):
    from shared_core.training.recipes import RecipeData, default_embedder

    return RecipeData(data_dir, embedder=default_embedder(), progress=False, options=dict(OPTIONS), **settings)


def _without_mmlu_rows(data, rows: set[int]):
    """``data`` whose MMLU training half lacks the rows ``rows`` (a cross-validation fold)."""
    whole = data.mmlu_train

    def mmlu_train():
        df = whole()
        return df[~df.index.isin(rows)].reset_index(drop=True)

    data.mmlu_train = mmlu_train
    return data


def dev_numbers(recipe: str, data_dir=None, log=print) -> dict[str, float]:
    from shared_core import datasets as D
    from shared_core.evaluation.benchmarks import cv_folds, load_alpaca_eval, load_arena_bench, load_mmlu_pro
    from shared_core.evaluation.runner import Evaluator
    from shared_core.training.recipes import train_recipe

    out: dict[str, float] = {}
    started = time.perf_counter()

    def done(name: str, value: float) -> None:
        out[name] = value
        log(f"{name:10s} {value:.4f}   ({time.perf_counter() - started:.0f} s)")

    mmlu = _data(data_dir).mmlu_train()
    mmlu_q = (mmlu[D.STRONG_MODEL].astype(float).to_numpy(), mmlu[D.WEAK_MODEL].astype(float).to_numpy())
    prompts = mmlu["prompt"].tolist()
    scores = np.empty(len(mmlu))
    for fold in cv_folds(list(range(len(mmlu))), 5, seed=MMLU_FOLD_SEED):
        router = _train(recipe, _without_mmlu_rows(_data(data_dir), set(fold)))
        scores[fold] = router.score([prompts[i] for i in fold])
    done("mmlu-cv", _apgr(scores, *mmlu_q))

    evaluator = Evaluator(data_dir, retrain="always",
                          trainer=lambda name, **kwargs: train_recipe(name, progress=False, options=dict(OPTIONS),
                                                                      **kwargs))
    benches = {"arena": load_arena_bench(data_dir), "pro": load_mmlu_pro(data_dir),
               "alpaca": load_alpaca_eval(data_dir)}
    for name, key in (("arena-cv", "arena"), ("pro-cv", "pro")):
        done(name, float(evaluator.router_row(benches[key], f"recipe:{recipe}").metrics.apgr))
    full = _train(recipe, _data(data_dir))
    alpaca = benches["alpaca"]
    done("alpaca-x", _apgr(full.score(alpaca.prompts), alpaca.strong_quality, alpaca.weak_quality))

    # Without arena-bench's labels and, as held-out questions, its prompts among the reference prompts.
    arena_ids = D.load_arena_bench(data_dir)["question_id"].astype(str).tolist()
    router = _train(recipe, _data(data_dir, include_arena=False, exclude_arena_questions=frozenset(arena_ids)))
    arena = benches["arena"]
    done("arena-loo", _apgr(router.score(arena.prompts), arena.strong_quality, arena.weak_quality))
    router = _train(recipe, _data(data_dir, include_mmlu_train=False))
    done("mmlu-loo", _apgr(router.score(prompts), *mmlu_q))
    router = _train(recipe, _data(data_dir, include_mmlu_pro=False))  # (no MMLU-Pro text is a reference prompt)
    pro = benches["pro"]
    done("pro-loo", _apgr(router.score(pro.prompts), pro.strong_quality, pro.weak_quality))
    out["mean7"] = float(np.mean([out[name] for name in NUMBERS]))
    log(f"{'mean7':10s} {out['mean7']:.4f}")

    from chat_dev import dev_numbers as chat_dev_numbers, trained_threshold

    threshold = trained_threshold(full, data_dir)
    out.update({f"chat_{name}": value for name, value in chat_dev_numbers(full, threshold).items()},
               threshold=threshold)
    log(f"chat dev   AUC {out['chat_auc']:.3f}, at 0.5 (threshold {out['threshold']:.4f}): hard->strong "
        f"{out['chat_hard_strong']:.2f}, easy->weak {out['chat_easy_weak']:.2f}, AlpacaEval strong share "
        f"{(np.asarray(full.score(alpaca.prompts)) >= out['threshold']).mean():.2f}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="adaptive_ensemble_l3", help="a training recipe (default: the default's)")
    parser.add_argument("--data-dir", help="router data directory (default: ../shared/data)")
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=JSON",
                        help="a router setting for every training, e.g. difficulty_blend=0.4 (repeatable)")
    args = parser.parse_args(argv)
    for option in args.option:
        name, sep, value = option.partition("=")
        if not sep or not name:
            parser.error(f"--option takes NAME=JSON, got {option!r}")
        try:
            OPTIONS[name] = json.loads(value)
        except json.JSONDecodeError as exc:
            parser.error(f"--option {name}: {value!r} is not JSON ({exc})")
    numbers = dev_numbers(args.recipe, args.data_dir)
    if args.json:
        Path(args.json).write_text(json.dumps({"recipe": args.recipe, "options": OPTIONS, **numbers}, indent=2) + "\n",
                                   encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
