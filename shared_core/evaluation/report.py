"""Text forms of evaluation results: terminal tables, JSON, the README markdown table."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

from shared_core.evaluation.runner import BenchmarkResult

#: RouteLLM's best published APGR per benchmark (Ong et al. 2024, GPT-4-augmented training).
ROUTELLM_BEST_APGR = {"mmlu": 0.60, "gsm8k": 0.62, "mt-bench": 0.80}
#: Targets of this project for the shipped default (issue 9).
TARGET_APGR = {"mmlu": 0.70, "gsm8k": 0.62, "mt-bench": 0.70, "arena-bench": 0.60, "alpaca-eval": 0.60, "mmlu-pro": 0.65}
TITLES = {"mmlu": "MMLU-test", "gsm8k": "GSM8K", "mt-bench": "MT-Bench", "arena-bench": "arena-bench",
          "alpaca-eval": "alpaca-eval", "mmlu-pro": "mmlu-pro"}


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def format_table(result: BenchmarkResult) -> str:
    """A fixed-width table of one benchmark, for the terminal."""
    b = result.benchmark
    lines = [
        f"{TITLES.get(b.name, b.name)}: {b.n} prompts, quality = {b.quality_name}; "
        f"strong {b.strong_mean:.3f}, weak {b.weak_mean:.3f}",
    ]
    notes = {k: v for k, v in b.notes.items() if k not in ("source",)}
    if notes:
        lines.append("  " + ", ".join(f"{k}={v}" for k, v in notes.items()))
    header = f"{'router':16} {'APGR':>6} {'AUC':>8} {'CPT20':>7} {'CPT50':>7} {'CPT80':>7}  trained on"
    lines += [header, "-" * len(header)]
    for r in result.rows:
        m = r.metrics
        lines.append(
            f"{r.router:16} {m.apgr:6.3f} {m.auc:8.3f} {_pct(m.cpt[0.2]):>7} {_pct(m.cpt[0.5]):>7} "
            f"{_pct(m.cpt[0.8]):>7}  {r.trained_on}"
        )
    for skipped in result.not_run:
        lines.append(f"{skipped.router:16} not run ({skipped.cause}): {skipped.reason}")
    for comp in result.comparisons:
        needed = ", ".join(f"{k} {_pct(v)}" for k, v in comp["strong_share_needed"].items())
        lines.append(
            f"  {comp['commercial_router']}: MT-Bench {comp['mt_bench_same_questions']:.3f} on these questions "
            f"(published {comp.get('published_mt_bench', float('nan')):.4f} with "
            f"{_pct(comp.get('published_strong_share'))} strong calls); strong calls we need: {needed}"
        )
    return "\n".join(lines)


def results_json(results: Sequence[BenchmarkResult], **meta: Any) -> dict[str, Any]:
    return {"meta": meta, "benchmarks": [r.to_dict() for r in results]}


def write_json(results: Sequence[BenchmarkResult], path: str | Path, **meta: Any) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results_json(results, **meta), indent=2, default=_json_default, allow_nan=True)
    out.write_text(text + "\n", encoding="utf-8")
    return out


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _row_names(result: BenchmarkResult) -> list[str]:
    """The routers of ``result`` in table order: its rows, with the ones not run before ``oracle``."""
    names = [r.router for r in result.rows]
    at = len(names) - 1 if names and names[-1] == "oracle" else len(names)
    return names[:at] + [n.router for n in result.not_run if n.router not in names] + names[at:]


def markdown_table(results: Sequence[BenchmarkResult], command: str | None = None, seconds: float | None = None) -> str:
    """The README results table: APGR and CPT(50%) per router and benchmark, then what each row trained on."""
    names = []
    for res in results:
        for name in _row_names(res):
            if name not in names:
                names.append(name)
    lines = []
    if command:
        lines += ["Made by:", "", "```", command, "```", ""]
    head = "| router | " + " | ".join(f"{TITLES.get(r.benchmark.name, r.benchmark.name)} APGR (CPT50)" for r in results) + " |"
    lines += [head, "|---" * (len(results) + 1) + "|"]
    for name in names:
        cells = []
        for res in results:
            try:
                row = res.row(name)
            except KeyError:
                skipped = [n for n in res.not_run if n.router == name]
                cells.append(f"not run ({skipped[0].cause})" if skipped else "")
                continue
            cells.append(f"{row.metrics.apgr:.3f} ({_pct(row.metrics.cpt[0.5])})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    refs = [f"{ROUTELLM_BEST_APGR[r.benchmark.name]:.2f}" if r.benchmark.name in ROUTELLM_BEST_APGR else "" for r in results]
    lines.append("| *RouteLLM best published* | " + " | ".join(refs) + " |")
    targets = [f">= {TARGET_APGR[r.benchmark.name]:.2f}" if r.benchmark.name in TARGET_APGR else "" for r in results]
    lines.append("| *target* | " + " | ".join(targets) + " |")
    lines.append("")
    lines.append(
        "APGR: average performance gap recovered (random about 0.5); CPT50: strong-call share needed for 50% of "
        "the strong-weak quality gap. " + "; ".join(
            f"{TITLES.get(r.benchmark.name, r.benchmark.name)}: {r.benchmark.n} prompts, {r.benchmark.quality_name}, "
            f"strong {r.benchmark.strong_model} {r.benchmark.strong_mean:.2f} vs weak {r.benchmark.weak_model} "
            f"{r.benchmark.weak_mean:.2f}" for r in results
        ) + "."
    )
    lines += ["", "What the router rows were trained on:", ""]
    groups: dict[str, dict[str, list[str]]] = {}
    for res in results:
        for row in res.rows:
            if row.router in ("random", "oracle"):
                continue
            title = TITLES.get(res.benchmark.name, res.benchmark.name)
            groups.setdefault(row.trained_on, {}).setdefault(row.router, []).append(title)
    for trained_on, by_router in groups.items():
        by_benches: dict[str, list[str]] = {}
        for name, benches in by_router.items():
            by_benches.setdefault(", ".join(benches), []).append(name)
        where = "; ".join(f"{', '.join(names)} on {benches}" for benches, names in by_benches.items())
        lines.append(f"- {where}: {trained_on}")
    for res in results:
        for skipped in res.not_run:
            title = TITLES.get(res.benchmark.name, res.benchmark.name)
            lines.append(f"- {skipped.router} on {title}: not run ({skipped.cause}): {skipped.reason}")
    for res in results:
        for comp in res.comparisons:
            needed = comp["strong_share_needed"]
            ours = ", ".join(f"{k} {_pct(v)}" for k, v in needed.items() if k not in ("oracle",))
            lines.append(
                f"- MT-Bench vs {comp['commercial_router']} (score {comp['mt_bench_same_questions']:.3f} on the same "
                f"{comp['n_questions']} questions; published {_pct(comp.get('published_strong_share'))} strong calls): "
                f"strong calls needed: {ours}"
            )
    if seconds is not None:
        lines += ["", f"Full run: {seconds:.0f} s."]
    return "\n".join(lines) + "\n"
