"""Make the README results table: every shipped router and two peer routers on the six benchmarks.

    python scripts/results_table.py                 # writes results/results_table.md
    python scripts/results_table.py --no-peers      # without the optional [peers] extra

What ``routellm evaluate --all --markdown results/results_table.md`` does (random,
mf, sw_ranking, the other shipped routers, routers with a recipe but no checkpoint,
default and oracle on MMLU-test, GSM8K, MT-Bench, arena-bench, alpaca-eval and
mmlu-pro, each under the fixed protocol of ``shared_core.evaluation.benchmarks``),
plus rows for

* ``prompt-length``: the prompt's length in characters (a baseline trained on nothing);
* ``litellm-complexity`` and ``lmr-heuristic``: LiteLLM's complexity router and
  langchain-model-router's ``HeuristicStrategy`` (``pip install -e ".[peers]"``),
  scored on the same prompts with the same metrics (see ``shared_core.evaluation.peers``).

Prints the markdown table at the end; plots and results.json go to
results/evaluation/. Retrained cross-validation routers are kept in
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


def run(argv: list[str] | None = None) -> int:
    from shared_core.datasets import resolve_data_dir
    from shared_core.evaluation.benchmarks import BENCHMARKS, load_benchmark
    from shared_core.evaluation.cli import all_routers
    from shared_core.evaluation.plots import plot_benchmark
    from shared_core.evaluation.report import format_table, markdown_table, write_json
    from shared_core.evaluation.runner import Evaluator, default_model_cache

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/results_table.md", help="markdown file to write")
    parser.add_argument("--data-dir", help="router data directory (default: ../shared/data)")
    parser.add_argument("--benchmarks", nargs="+", default=list(BENCHMARKS), metavar="NAME",
                        help=f"benchmarks to run (default: all of {', '.join(BENCHMARKS)})")
    parser.add_argument("--no-peers", action="store_true", help="leave out the LiteLLM and langchain-model-router rows")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG plots")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    data_dir = resolve_data_dir(args.data_dir)
    peers = ("prompt-length",) if args.no_peers else PEER_ROWS

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    evaluator = Evaluator(data_dir, model_cache=default_model_cache(), log=log)
    routers = all_routers()
    out_dir = Path("results") / "evaluation"
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
    md = Path(args.out)
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(markdown_table(results, command=command, seconds=seconds), encoding="utf-8")
    print(md.read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(run())
