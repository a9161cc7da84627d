"""Make the README results table: every shipped router on the four benchmarks.

    python scripts/results_table.py                 # writes results/results_table.md
    python scripts/results_table.py --out docs/x.md

The same as ``routellm evaluate --all --markdown results/results_table.md``: random,
mf, sw_ranking, the other shipped routers, default and oracle on MMLU-test, GSM8K,
MT-Bench and arena-bench (5-fold CV), plus the MT-Bench comparison with Martian and
Unify. Prints the markdown table (with the command that made it) at the end; plots
and results.json go to results/evaluation/.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: BLAS threads slow embedding down

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from shared_core.cli import main  # noqa: E402


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/results_table.md", help="markdown file to write")
    parser.add_argument("--data-dir", help="router data directory (default: ../shared/data)")
    args = parser.parse_args(argv)
    cmd = ["evaluate", "--all", "--markdown", args.out, "--overwrite"]  # regenerates the table by design
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    code = main(cmd)
    if code == 0:
        print()
        print(Path(args.out).read_text(encoding="utf-8"))
    return code


if __name__ == "__main__":
    sys.exit(run())
