"""Make the README results table: every shipped router and two peer routers on the six benchmarks.

    python scripts/results_table.py                 # writes results/results_table.md
    python scripts/results_table.py --no-peers      # without the optional [peers] extra
    python scripts/results_table.py --routers bert causal_llm   # just those rows (+ random, oracle),
                                                    # into results/rows/bert+causal_llm/

What ``routellm evaluate --all --markdown results/results_table.md`` does (random,
mf, sw_ranking, the other shipped routers, routers with a recipe but no checkpoint,
default and oracle on MMLU-test, GSM8K, MT-Bench, arena-bench, alpaca-eval and
mmlu-pro, each under the fixed protocol of ``shared_core.evaluation.benchmarks``),
plus rows for

* ``prompt-length``: the prompt's length in characters (a baseline trained on nothing);
* ``litellm-complexity`` and ``lmr-heuristic``: LiteLLM's complexity router and
  langchain-model-router's ``HeuristicStrategy`` (``pip install -e ".[peers]"``),
  scored on the same prompts with the same metrics (see ``shared_core.evaluation.peers``).

The fine-tuned routers ``bert`` and ``causal_llm`` have rows when they are trained into the
cache (``routellm train <name> --recipe``, see docs/finetuned_routers.md); otherwise a note on
stderr names that command. A row whose retraining would cost more than ``--retrain-budget``
minutes (by its router's recorded training time: causal_llm's 5-fold arena-bench
cross-validation) is not run, and its cell says so.

Prints the markdown table at the end; plots and results.json go to
results/evaluation/ (with ``--routers``: results/rows/<names>/, beside its table, so that
the full table is not overwritten). Retrained cross-validation routers are kept in
``~/.cache/routellm/eval-routers`` (a rerun with unchanged code does not refit).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: BLAS threads slow embedding down

import argparse  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PEER_ROWS = ("prompt-length", "litellm-complexity", "lmr-heuristic")


def select_rows(names: list[str] | None, no_peers: bool, log) -> tuple[list[str], tuple[str, ...]]:
    """The router settings and peer rows to run: the full table, or only the rows ``names``.

    ``names`` are row labels of the full table (``mf``, ``bert``, ``knn``, ``prompt-length``, ...);
    random and oracle always come. A fine-tuned router not trained into the cache is left out
    with a note (``log``) naming its training command; an unknown name is refused, naming the rows."""
    from shared_core.errors import ConfigError
    from shared_core.evaluation.cli import all_routers, trained_finetuned_routers, untrained_note
    from shared_core.evaluation.runner import BASELINES, router_label
    from shared_core.routers import FINETUNED_MODULES

    if names is None:
        return all_routers(note=log), ("prompt-length",) if no_peers else PEER_ROWS
    full = [s for s in all_routers() if s not in BASELINES]
    by_label = {router_label(s): s for s in full}
    trained = set(trained_finetuned_routers())
    known = [*by_label, *(n for n in FINETUNED_MODULES if n not in by_label), *PEER_ROWS]
    unknown = [n for n in names if n not in known and n not in BASELINES]
    if unknown:
        raise ConfigError(f"--routers: unknown row(s) {', '.join(map(repr, unknown))}; expected some of: {', '.join(known)}")
    routers, peers = [], []
    for name in dict.fromkeys(names):
        if name in PEER_ROWS:
            if no_peers and name != "prompt-length":
                raise ConfigError(f"--routers names the peer row {name!r}, which --no-peers leaves out")
            peers.append(name)
        elif name in FINETUNED_MODULES and name not in trained:
            log(untrained_note(name))
        elif name not in BASELINES:
            routers.append(by_label[name])
    if not routers and not peers:
        raise ConfigError(f"--routers {' '.join(names)}: no row to run (see the notes above)")
    return routers, tuple(peers)


def rows_dir(names: list[str]) -> Path:
    """Where a ``--routers`` run writes: ``results/rows/<name>+<name>/``."""
    return Path("results") / "rows" / "+".join(dict.fromkeys(names))


def run(argv: list[str] | None = None) -> int:
    from shared_core.datasets import resolve_data_dir
    from shared_core.evaluation.benchmarks import BENCHMARKS, load_benchmark
    from shared_core.evaluation.cli import add_retrain_budget, retrain_budget_seconds
    from shared_core.evaluation.plots import plot_benchmark
    from shared_core.evaluation.report import format_table, markdown_table, write_json
    from shared_core.evaluation.runner import Evaluator, default_model_cache

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="markdown file to write (default: results/results_table.md; "
                        "with --routers: results/rows/<names>/results_table.md)")
    parser.add_argument("--data-dir", help="router data directory (default: ../shared/data)")
    parser.add_argument("--benchmarks", nargs="+", default=list(BENCHMARKS), metavar="NAME",
                        help=f"benchmarks to run (default: all of {', '.join(BENCHMARKS)})")
    parser.add_argument("--routers", nargs="+", metavar="NAME",
                        help="run only these rows of the table (e.g. bert causal_llm; random and oracle always come)")
    parser.add_argument("--no-peers", action="store_true", help="leave out the LiteLLM and langchain-model-router rows")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG plots")
    add_retrain_budget(parser)
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    started = time.perf_counter()
    budget = retrain_budget_seconds(args.retrain_budget)
    routers, peers = select_rows(args.routers, args.no_peers, log)
    data_dir = resolve_data_dir(args.data_dir)
    evaluator = Evaluator(data_dir, model_cache=default_model_cache(), log=log, retrain_budget=budget)
    out_dir = rows_dir(args.routers) if args.routers else Path("results") / "evaluation"
    md = Path(args.out) if args.out else (out_dir / "results_table.md" if args.routers else Path("results/results_table.md"))
    results = []
    for name in args.benchmarks:
        bench = load_benchmark(name, data_dir)
        log(f"{bench.name}: {bench.n} prompts")
        result = evaluator.evaluate(bench, routers, peers=peers)
        results.append(result)
        print(format_table(result), flush=True)
        print()
        if not args.no_plot:
            plot_benchmark(result, out_dir / f"{bench.name}.png")
    seconds = time.perf_counter() - started
    command = " ".join(["python", "scripts/results_table.py", *(shlex.quote(a) for a in (argv or sys.argv[1:]))])
    write_json(results, out_dir / "results.json", command=command, seconds=round(seconds, 1), data_dir=str(data_dir))
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(markdown_table(results, command=command, seconds=seconds), encoding="utf-8")
    print(md.read_text(encoding="utf-8"))
    return 0


def main(argv: list[str] | None = None) -> int:
    from shared_core.errors import RouteLLMError

    try:
        return run(argv)
    except RouteLLMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
