"""``routellm evaluate``: routers on RouteLLM's benchmarks, as a table, JSON and plots."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from shared_core.errors import ConfigError

DEFAULT_OUT = Path("results") / "evaluation"


def all_routers() -> list[str]:
    """random, mf, sw_ranking, the other shipped routers, routers with a recipe but no
    checkpoint (as ``recipe:<name>``), default, oracle."""
    from shared_core.engine import DEFAULT_ROUTER, shipped_router_names
    from shared_core.routers import BUILTIN_MODULES

    shipped = [n for n in shipped_router_names() if n != DEFAULT_ROUTER]
    first = [n for n in ("mf", "sw_ranking") if n in shipped]
    unshipped = [f"recipe:{n}" for n in BUILTIN_MODULES if n not in shipped and _has_recipe(n)]
    return ["random", *first, *[n for n in shipped if n not in first], *unshipped, DEFAULT_ROUTER, "oracle"]


def _has_recipe(name: str) -> bool:
    try:
        from shared_core.training.recipes import get_recipe

        get_recipe(name)
    except (ImportError, ConfigError):
        return False
    return True


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate",
        help="measure routers on mmlu, gsm8k, mt-bench, arena-bench or your labelled file (APGR, CPT)",
        description=(
            "Evaluate routers as RouteLLM's evals do: thresholds at the deciles of the router's scores, "
            "AUC of quality over strong-call share, APGR and CPT(20/50/80%). Every table has a random "
            "row (mean of 10 seeds) and an oracle row. MMLU is evaluated on MMLU-test (hash split), "
            "arena-bench by 5-fold cross-validation; each row says what its router was trained on."
        ),
    )
    p.add_argument(
        "--benchmark", "-b", nargs="+", metavar="NAME_OR_FILE",
        help="mmlu, gsm8k, mt-bench, arena-bench, or a .csv/.jsonl with prompt + strong/weak quality columns",
    )
    p.add_argument(
        "--routers", "-r", nargs="+", metavar="ROUTER",
        help="registry names of shipped routers (mf, sw_ranking, ...), 'default', 'random', saved router "
        "directories, or recipe:<name> (train that recipe on the data the protocol allows) (default: default)",
    )
    p.add_argument("--all", action="store_true",
                   help="all four benchmarks and all shipped routers (the README results table)")
    p.add_argument("--data-dir", help="router data directory (default: $ROUTELLM_DATA_DIR or ../shared/data)")
    p.add_argument("--out", default=str(DEFAULT_OUT),
                   help=f"directory for results.json and <benchmark>.png (default: {DEFAULT_OUT})")
    p.add_argument("--markdown", metavar="PATH", help="also write the README results table (markdown) here")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG plots")
    p.add_argument("--strong-column", help="strong-quality column of a labelled file (default: strong)")
    p.add_argument("--weak-column", help="weak-quality column of a labelled file (default: weak)")
    p.add_argument(
        "--retrain", choices=("auto", "never", "always"), default="auto",
        help="retrain a shipped router's recipe without the test prompts: when its training record shows "
        "(or cannot rule out) that it saw them (auto), never, or always",
    )
    p.add_argument(
        "--no-model-cache", action="store_true",
        help="retrain routers even when a router retrained from the same code and data is cached "
        "(cache: $ROUTELLM_CACHE_DIR/eval-routers or ~/.cache/routellm/eval-routers)",
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from shared_core.datasets import resolve_data_dir
    from shared_core.evaluation.benchmarks import BENCHMARKS, load_benchmark
    from shared_core.evaluation.plots import plot_benchmark
    from shared_core.evaluation.report import format_table, markdown_table, write_json
    from shared_core.evaluation.runner import Evaluator

    started = time.perf_counter()
    benchmarks = list(args.benchmark or [])
    routers = list(args.routers or [])
    if args.all:
        benchmarks = benchmarks or list(BENCHMARKS)
        routers = routers or all_routers()
    if not benchmarks:
        raise ConfigError("name at least one --benchmark (mmlu, gsm8k, mt-bench, arena-bench or a labelled file), or --all")
    routers = routers or ["default"]
    data_dir = None
    if any(not str(b).lower().endswith((".csv", ".jsonl")) for b in benchmarks):
        data_dir = resolve_data_dir(args.data_dir)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    from shared_core.evaluation.runner import default_model_cache

    model_cache = None if args.no_model_cache else default_model_cache()
    evaluator = Evaluator(data_dir, retrain=args.retrain, model_cache=model_cache, log=log)
    out = Path(args.out)
    results = []
    for name in benchmarks:
        bench = load_benchmark(name, data_dir, strong_column=args.strong_column, weak_column=args.weak_column)
        log(f"{bench.name}: {bench.n} prompts")
        result = evaluator.evaluate(bench, routers)
        results.append(result)
        print(format_table(result))
        print()
        if not args.no_plot:
            png = plot_benchmark(result, out / f"{bench.name}.png")
            print(f"plot: {png}")
    seconds = time.perf_counter() - started
    command = _command(args)
    json_path = write_json(results, out / "results.json", command=command, seconds=round(seconds, 1),
                           data_dir=str(data_dir) if data_dir else None)
    print(f"results: {json_path}")
    if args.markdown:
        md = Path(args.markdown)
        md.parent.mkdir(parents=True, exist_ok=True)
        md.write_text(markdown_table(results, command=command, seconds=seconds), encoding="utf-8")
        print(f"markdown table: {md}")
    print(f"done in {seconds:.1f}s")
    return 0


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run (recorded in the JSON and above the markdown table)."""
    parts = ["routellm", "evaluate"]
    if args.all:
        parts.append("--all")
    if args.benchmark:
        parts += ["--benchmark", *args.benchmark]
    if args.routers:
        parts += ["--routers", *args.routers]
    for flag, value, default in (
        ("--data-dir", args.data_dir, None), ("--out", args.out, str(DEFAULT_OUT)),
        ("--markdown", args.markdown, None), ("--strong-column", args.strong_column, None),
        ("--weak-column", args.weak_column, None), ("--retrain", args.retrain, "auto"),
    ):
        if value is not None and value != default:
            parts += [flag, value]
    if args.no_plot:
        parts.append("--no-plot")
    if args.no_model_cache:
        parts.append("--no-model-cache")
    return " ".join(shlex.quote(str(x)) for x in parts)
