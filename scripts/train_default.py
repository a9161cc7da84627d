"""Train the routers shipped in the package, with the project's training recipes.

    python scripts/train_default.py --data-dir ../shared/data

For each router named (default: every shipped one) this runs
:func:`shared_core.training.recipes.train_recipe` (the router's recipe on the data the
protocol allows: the MMLU training half, arena-bench-v1's 15 models, MMLU-Pro's 30 for
the recipes that use it, AlpacaEval's 68 for ``irt_nc`` only; the packaged MiniLM
embeddings through the on-disk cache), then

* measures the router on data it never saw: MMLU-test (the hash-split half, minus
  RouteLLM's contaminated prompts), GSM8K and MT-Bench, with the evaluation's
  metrics (AUC, APGR, CPT) -- recorded under ``training.held_out`` in the config;
* computes ``reference_quantiles``: the router's score quantiles (0..100%) on the
  reference prompt set (:func:`shared_core.training.recipes.reference_prompts`: the
  300 arena-bench-v1 prompts and 300 chatterbot-corpus openings; only the 101
  numbers ship, never the prompts);
* writes ``shared_core/checkpoints/<name>/`` (``config.json`` + ``model.safetensors``,
  each file under 5 MB).

``default`` becomes an alias (``shared_core/checkpoints/aliases.json``) of ``--default``
(``adaptive_ensemble_l3``: chosen on dev numbers, cross-validation, cross-source
transfer and a dev set of easy and hard chat prompts, as docs/quality.md logs; never on
the held-out numbers this script prints).
The full evaluation (``python scripts/results_table.py``) adds the cross-validated
benchmarks and the peer routers.

    python scripts/train_default.py --routers adaptive_ensemble_l3
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from shared_core.training.recipes import (  # noqa: E402
    RecipeData,
    default_embedder,
    reference_prompts,
    router_reference_quantiles,
    train_recipe,
)

CHECKPOINTS = REPO / "shared_core" / "checkpoints"
#: Every shipped router, and the one ``default`` names (chosen on dev numbers: docs/quality.md).
SHIPPED = ("mf", "sw_ranking", "knn", "ensemble", "adaptive_ensemble", "adaptive_ensemble_pro", "adaptive_ensemble_chat",
           "adaptive_ensemble_mm", "adaptive_ensemble_l3", "irt", "irt_nc")
DEFAULT = "adaptive_ensemble_l3"
MAX_FILE_BYTES = 5 * 1024 * 1024


def held_out_metrics(router, data_dir) -> dict[str, dict]:
    """AUC/APGR/CPT of ``router`` on benchmarks it was not trained on."""
    from shared_core.evaluation import benchmarks
    from shared_core.evaluation.metrics import curve_metrics, routing_curve

    out = {}
    for key, load in (("mmlu_test", benchmarks.load_mmlu_test), ("gsm8k", benchmarks.load_gsm8k),
                      ("mt_bench", benchmarks.load_mt_bench)):
        bench = load(data_dir)
        scores = router.score(bench.prompts)
        curve = routing_curve(scores, bench.strong_quality, bench.weak_quality)
        metrics = curve_metrics(curve, bench.strong_mean, bench.weak_mean).to_dict()
        out[key] = {"n": bench.n, **{k: round(float(v), 4) for k, v in metrics.items()}}
    return out


def train_one(name: str, args, embedder, reference: str) -> dict:
    started = time.perf_counter()
    router = train_recipe(name, data_dir=args.data_dir, embedder=embedder, seed=args.seed, progress=not args.quiet)
    fit_seconds = time.perf_counter() - started
    router.training_["held_out"] = held_out_metrics(router, args.data_dir)
    router.training_["recipe_seconds"] = round(fit_seconds, 1)
    router.reference_quantiles_ = router_reference_quantiles(router, args.data_dir)
    router.training_["reference_prompts"] = reference
    path = router.save(args.output_dir / name)
    for f in path.iterdir():
        if f.stat().st_size > MAX_FILE_BYTES:
            raise SystemExit(f"{f} is {f.stat().st_size / 1e6:.1f} MB, over the 5 MB limit for committed files")
    held = router.training_["held_out"]
    print(
        f"{name}: recipe {fit_seconds:.1f} s; held-out APGR mmlu-test {held['mmlu_test']['apgr']:.4f}, "
        f"gsm8k {held['gsm8k']['apgr']:.4f}, mt-bench {held['mt_bench']['apgr']:.4f} -> {path}",
        flush=True,
    )
    return {"name": name, "path": path, "held_out": held}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="router data directory (default: ../shared/data)")
    parser.add_argument("--output-dir", type=Path, default=CHECKPOINTS, help="default: shared_core/checkpoints")
    parser.add_argument("--routers", nargs="+", default=list(SHIPPED))
    parser.add_argument("--default", default=DEFAULT, help=f"router that 'default' names (default: {DEFAULT})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    embedder = default_embedder()
    n_reference, n_arena = len(reference_prompts(args.data_dir)), len(RecipeData(args.data_dir).arena())
    reference = (f"{n_reference} open chat prompts: arena-bench-v1's {n_arena} and {n_reference - n_arena} "
                 "chatterbot-corpus openings (shared_core.training.recipes.reference_prompts); only the quantiles "
                 "are shipped")
    if args.default not in args.routers and not (args.output_dir / args.default / "config.json").is_file():
        raise SystemExit(f"--default {args.default!r} is neither trained now ({args.routers}) nor in {args.output_dir}")
    results = [train_one(name, args, embedder, reference) for name in args.routers]
    best = next((r for r in results if r["name"] == args.default), {"name": args.default, "held_out": None})
    stale = args.output_dir / "default"
    if (stale / "config.json").is_file():  # an old byte-for-byte copy: the alias replaces it
        shutil.rmtree(stale)
    aliases = args.output_dir / "aliases.json"
    aliases.write_text(json.dumps({"default": best["name"]}, indent=2) + "\n", encoding="utf-8")
    print(f"default: alias of {best['name']} in {aliases}")
    print(json.dumps({r["name"]: r["held_out"] for r in results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
