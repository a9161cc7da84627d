"""Evaluation of routers on RouteLLM's benchmarks.

* :mod:`~shared_core.evaluation.metrics`: routing curve, AUC, APGR, CPT (pure numpy);
* :mod:`~shared_core.evaluation.benchmarks`: MMLU-test, GSM8K, MT-Bench, arena-bench,
  alpaca-eval, mmlu-pro, labelled files, and what a router evaluated on each may be trained on;
* :mod:`~shared_core.evaluation.runner`: routers to result rows (random and oracle
  rows included, retraining without test prompts where needed);
* :mod:`~shared_core.evaluation.commercial`: the MT-Bench comparison with Martian and Unify;
* :mod:`~shared_core.evaluation.report` and :mod:`~shared_core.evaluation.plots`: tables,
  JSON and PNGs (drawing only);
* :mod:`~shared_core.evaluation.cli`: ``routellm evaluate``.

Nothing is imported here so that ``routellm --help`` stays fast.
"""

#: The benchmarks' names (their loaders are in :mod:`~shared_core.evaluation.benchmarks`).
BENCHMARKS = ("mmlu", "gsm8k", "mt-bench", "arena-bench", "alpaca-eval", "mmlu-pro")
