"""MT-Bench comparison with the commercial routers Martian and Unify.

RouteLLM's ``benchmarks/README.md`` ran both through FastChat's MT-Bench with
GPT-4 Turbo and a cheaper model behind them: Unify scored 8.757862 with 45.625%
of calls to GPT-4; Martian (GPT-4 Turbo and Llama 2 70B, a cost cap chosen for
about 50% GPT-4 calls) scored 8.3125. The question this answers: what share of
strong calls does our router need to reach the same MT-Bench score?

For a like-for-like comparison the commercial score is recomputed on the same
questions as our routers (RouteLLM's contaminated questions dropped), as
FastChat does: the mean of all non-missing turn judgements.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from shared_core import datasets
from shared_core.evaluation.benchmarks import Benchmark
from shared_core.evaluation.metrics import fraction_to_reach

#: What RouteLLM's benchmarks/README reports (all 80 questions).
PUBLISHED = {
    "martian": {"mt_bench": 8.3125, "strong_share": 0.50, "strong_share_note": "estimated from a cost cap"},
    "unify": {"mt_bench": 8.757862, "strong_share": 0.45625, "strong_share_note": "reported by Unify"},
}


def commercial_scores(question_ids: Sequence[Any] | None, data_dir: str | Path | None = None) -> dict[str, float]:
    """MT-Bench score of each commercial router on ``question_ids`` (all questions when ``None``)."""
    df = datasets.load_commercial_mt_bench(data_dir)
    if question_ids is not None:
        df = df[df["question_id"].isin(list(question_ids))]
    return {str(k): float(v) for k, v in df.groupby("model")["score"].mean().items()}


def commercial_comparison(bench: Benchmark, rows: Sequence[Any], data_dir: str | Path | None = None) -> list[dict]:
    """Per commercial router: its score here, and the strong-call share each of our rows needs to match it."""
    ours = commercial_scores(bench.question_ids, data_dir)
    out = []
    for name, score in sorted(ours.items()):
        entry: dict[str, Any] = {
            "commercial_router": name,
            "mt_bench_same_questions": score,
            "n_questions": bench.n,
            **{f"published_{k}": v for k, v in PUBLISHED.get(name, {}).items()},
            "strong_share_needed": {},
        }
        for row in rows:
            entry["strong_share_needed"][row.router] = fraction_to_reach(row.curve, score)
        out.append(entry)
    return out
