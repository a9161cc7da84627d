"""``routellm evaluate``: routers on RouteLLM's benchmarks, as a table, JSON and plots.

The benchmarks are public files this package does not ship (see :data:`DATA_SOURCES`),
read by path from ``--data-dir``, else ``$ROUTELLM_DATA_DIR``, else ``../shared/data``.
Every check that can fail (data, benchmarks, where results go) runs before the
first router is evaluated, so a long run never ends by losing its results.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Callable

from shared_core.errors import ConfigError, DataError
from shared_core.evaluation import BENCHMARKS

DEFAULT_OUT = Path("results") / "evaluation"
RESULTS_NAME = "results.json"

#: Where the benchmark data comes from, for ``--help`` and for the error when it is missing.
DATA_SOURCES = (
    "The benchmarks are public data, not shipped with this package: RouteLLM's evaluation files "
    "(lm-sys/RouteLLM: MMLU, GSM8K and MT-Bench answers of gpt-4-1106-preview and Mixtral-8x7B, the "
    "commercial routers' MT-Bench answers, the contaminated-prompt lists) under routellm/, "
    "arena-hard-auto's 300 Chatbot Arena prompts graded 1-10 by a GPT-4 judge for 15 models "
    "(lmarena/arena-hard-auto) under arena-bench-v1/, AlpacaEval 2.0's 569 instructions judged for 69 models "
    "against gpt-4-1106-preview (data licence CC BY-NC 4.0) under alpaca_eval/, and MMLU-Pro's 5,222 STEM "
    "questions graded for 30 models (Apache-2.0) under mmlu_pro/. They are read by path from --data-dir, else "
    "$ROUTELLM_DATA_DIR, else ../shared/data (that directory's README.md gives the layout). A labelled "
    ".csv/.jsonl file of your own needs none of it."
)


#: Minutes of retraining one row may cost before it is reported as not run (``--retrain-budget``):
#: bert's 5-fold arena-bench cross-validation (5 x ~5 min) fits, causal_llm's (5 x ~15 min) does not.
DEFAULT_RETRAIN_BUDGET_MINUTES = 60.0


def all_routers(note: Callable[[str], None] | None = None) -> list[str]:
    """random, mf, sw_ranking, the fine-tuned routers trained into the cache, the other shipped
    routers, routers with a recipe but no checkpoint (as ``recipe:<name>``), default, oracle.

    A fine-tuned router (``bert``, ``causal_llm``) that is neither shipped nor trained into the
    cache has no row; ``note`` gets a line for it naming the command that trains it."""
    from shared_core.engine import DEFAULT_ROUTER, shipped_router_names
    from shared_core.routers import BUILTIN_MODULES

    shipped = [n for n in shipped_router_names() if n != DEFAULT_ROUTER]
    first = [n for n in ("mf", "sw_ranking") if n in shipped]
    finetuned = [n for n in trained_finetuned_routers(note) if n not in shipped]
    unshipped = [f"recipe:{n}" for n in BUILTIN_MODULES if n not in shipped and _has_recipe(n)]
    return ["random", *first, *finetuned, *[n for n in shipped if n not in first], *unshipped, DEFAULT_ROUTER,
            "oracle"]


def trained_finetuned_routers(note: Callable[[str], None] | None = None) -> list[str]:
    """The fine-tuned routers that ship or are trained into ``<cache>/routers/<name>``; for each
    other one, ``note`` (if given) gets :func:`untrained_note`. Nothing is trained here: fine-tuning
    takes minutes to hours on a CPU, so evaluating every router does not start it unasked."""
    from shared_core.cache import trained_router_dir
    from shared_core.engine import shipped_router_names
    from shared_core.routers import FINETUNED_MODULES

    shipped = set(shipped_router_names())
    found = []
    for name in FINETUNED_MODULES:
        if name in shipped or (trained_router_dir(name) / "config.json").is_file():
            found.append(name)
        elif note is not None:
            note(untrained_note(name))
    return found


def untrained_note(name: str) -> str:
    """The line that says why router ``name`` has no row, and the documented command that trains it."""
    from shared_core.cache import trained_router_dir

    path = trained_router_dir(name)
    return (
        f"note: no {name} row: router {name!r} is not trained (no {str(path / 'config.json')!r}); train it with "
        f"'routellm train {name} --recipe -o {path}' (docs/finetuned_routers.md), then run this again"
    )


def retrain_budget_seconds(minutes: float | None) -> float | None:
    """``--retrain-budget`` minutes as seconds (``None`` and ``inf``: no limit); a negative or NaN value is refused."""
    if minutes is None or minutes == float("inf"):
        return None
    if not minutes >= 0:
        raise ConfigError(f"--retrain-budget must be a number of minutes >= 0 (or inf), got {minutes!r}")
    return 60.0 * minutes


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
        help=f"measure routers on {', '.join(BENCHMARKS)} or your labelled file (APGR, CPT)",
        description=(
            "Evaluate routers as RouteLLM's evals do: thresholds at the deciles of the router's scores, "
            "AUC of quality over strong-call share, APGR and CPT(20/50/80%). Every table has a random "
            "row (mean of 10 seeds) and an oracle row. MMLU is evaluated on MMLU-test (hash split), GSM8K and "
            "MT-Bench are never trained on; arena-bench, alpaca-eval and mmlu-pro are cross-validated in 5 folds "
            "by prompt, a router whose recipe reads that source retrained without each test fold (mmlu-pro's "
            "strong model is gpt-4o-2024-05-13: gpt-4-1106-preview was not graded there); each row says what "
            "its router was trained on. "
            + DATA_SOURCES
        ),
    )
    p.add_argument(
        "--benchmark", "-b", nargs="+", metavar="NAME_OR_FILE",
        help=f"{', '.join(BENCHMARKS)}, or a .csv/.jsonl with prompt + strong/weak quality columns",
    )
    p.add_argument(
        "--routers", "-r", nargs="+", metavar="ROUTER",
        help="registry names of shipped routers (mf, sw_ranking, ...), 'default', 'random', saved router "
        "directories, or recipe:<name> (train that recipe on the data the protocol allows) (default: default)",
    )
    p.add_argument("--all", action="store_true",
                   help="all six benchmarks and all shipped routers, with bert and causal_llm when they are trained "
                   "into the cache (else a note names the training command) (the README results table)")
    p.add_argument("--data-dir", help="directory holding routellm/, arena-bench-v1/, alpaca_eval/ and mmlu_pro/ "
                   "(default: $ROUTELLM_DATA_DIR, else ../shared/data)")
    p.add_argument("--out", default=str(DEFAULT_OUT),
                   help=f"directory for {RESULTS_NAME} and <benchmark>.png (default: {DEFAULT_OUT}); "
                   "an existing results file there is refused before the run unless --overwrite")
    p.add_argument("--markdown", metavar="PATH", help="also write the README results table (markdown) here")
    p.add_argument("--overwrite", action="store_true",
                   help="replace results (results.json, plots, --markdown file) left by an earlier run")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG plots")
    p.add_argument("--strong-column", help="strong-quality column of a labelled file (default: strong)")
    p.add_argument("--weak-column", help="weak-quality column of a labelled file (default: weak)")
    p.add_argument(
        "--retrain", choices=("auto", "never", "always"), default="auto",
        help="retrain a shipped router's recipe without the test prompts: when its training record shows "
        "(or cannot rule out) that it saw them (auto), never, or always",
    )
    add_retrain_budget(p)
    p.add_argument(
        "--no-model-cache", action="store_true",
        help="retrain routers even when a router retrained from the same code and data is cached "
        "(cache: $ROUTELLM_CACHE_DIR/eval-routers or ~/.cache/routellm/eval-routers)",
    )
    p.set_defaults(func=run)
    return p


def add_retrain_budget(parser: argparse.ArgumentParser) -> None:
    """``--retrain-budget MINUTES``, shared by ``routellm evaluate`` and scripts/results_table.py."""
    parser.add_argument(
        "--retrain-budget", type=float, default=DEFAULT_RETRAIN_BUDGET_MINUTES, metavar="MINUTES",
        help="retraining one row may cost, estimated from its router's recorded training time; a row over it "
        f"is reported as 'not run (cost)' with the estimate (default: {DEFAULT_RETRAIN_BUDGET_MINUTES:g}; inf: no limit)",
    )


def run(args: argparse.Namespace) -> int:
    from shared_core.evaluation.benchmarks import BENCHMARKS, load_benchmark
    from shared_core.evaluation.plots import plot_benchmark
    from shared_core.evaluation.report import format_table, markdown_table, write_json
    from shared_core.evaluation.runner import Evaluator, default_model_cache

    started = time.perf_counter()
    benchmarks = list(args.benchmark or [])
    routers = list(args.routers or [])
    budget = retrain_budget_seconds(args.retrain_budget)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    if args.all:
        benchmarks = benchmarks or list(BENCHMARKS)
        routers = routers or all_routers(note=log)
    if not benchmarks:
        raise ConfigError("name at least one --benchmark (mmlu, gsm8k, mt-bench, arena-bench or a labelled file), or --all")
    routers = routers or ["default"]
    # Everything that can fail before the run, not after it.
    out = Path(args.out)
    _check_outputs(out, [], args.markdown, args.overwrite)  # before reading any data
    data_dir = _data_dir(args.data_dir) if any(not _is_labelled_file(b) for b in benchmarks) else None
    loaded = []
    for name in benchmarks:
        try:
            loaded.append(load_benchmark(name, data_dir, strong_column=args.strong_column,
                                         weak_column=args.weak_column))
        except DataError as exc:
            if _is_labelled_file(name):
                raise
            raise DataError(f"{exc}. {DATA_SOURCES}") from None
    plots = [] if args.no_plot else [b.name for b in loaded]
    _make_dirs(_check_outputs(out, plots, args.markdown, args.overwrite))
    model_cache = None if args.no_model_cache else default_model_cache()
    evaluator = Evaluator(data_dir, retrain=args.retrain, model_cache=model_cache, log=log, retrain_budget=budget)
    results = []
    for bench in loaded:
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
    json_path = write_json(results, out / RESULTS_NAME, command=command, seconds=round(seconds, 1),
                           data_dir=str(data_dir) if data_dir else None)
    print(f"results: {json_path}")
    if args.markdown:
        md = Path(args.markdown)
        md.write_text(markdown_table(results, command=command, seconds=seconds), encoding="utf-8")
        print(f"markdown table: {md}")
    print(f"done in {seconds:.1f}s")
    return 0


def _is_labelled_file(benchmark: str) -> bool:
    return str(benchmark).lower().endswith((".csv", ".jsonl"))


def _data_dir(data_dir: str | None) -> Path:
    """The benchmark data directory, or an error that says what the data is and where it is looked for."""
    from shared_core.datasets import resolve_data_dir

    try:
        return resolve_data_dir(data_dir)
    except DataError as exc:
        raise DataError(f"{exc}. {DATA_SOURCES}") from None


def _check_outputs(out: Path, plots: list[str], markdown: str | None, overwrite: bool) -> list[Path]:
    """The files this run writes (``out/results.json``, ``out/<name>.png`` for each of ``plots``,
    the markdown file), after refusing an ``--out`` that is not a directory, a ``--markdown`` that
    is a directory, and existing results unless ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise ConfigError(
            f"--out {str(out)!r} is an existing file; --out names a directory for {RESULTS_NAME} and the plots"
        )
    paths = [out / RESULTS_NAME, *(out / f"{name}.png" for name in plots)]
    if markdown:
        md = Path(markdown)
        if md.is_dir():
            raise ConfigError(f"--markdown {str(md)!r} is a directory; name the markdown file to write")
        paths.append(md)
    if not overwrite:
        existing = [str(p) for p in paths if p.exists()]
        if existing:
            raise ConfigError(
                f"refusing to overwrite {', '.join(repr(p) for p in existing)} from an earlier run; "
                "pass --overwrite to replace them, or another --out / --markdown"
            )
    return paths


def _make_dirs(paths: list[Path]) -> None:
    """Create the directories the results go to now, so that an unwritable place fails before the run."""
    for directory in dict.fromkeys(p.parent for p in paths):
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the results directory {str(directory)!r}: {exc}") from None


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
        ("--retrain-budget", f"{args.retrain_budget:g}", f"{DEFAULT_RETRAIN_BUDGET_MINUTES:g}"),
    ):
        if value is not None and value != default:
            parts += [flag, value]
    if args.no_plot:
        parts.append("--no-plot")
    if args.overwrite:
        parts.append("--overwrite")
    if args.no_model_cache:
        parts.append("--no-model-cache")
    return " ".join(shlex.quote(str(x)) for x in parts)
