"""Quality against strong-call % plots. Draws only: every number comes from the results."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from shared_core.evaluation.runner import BenchmarkResult


def plot_benchmark(result: "BenchmarkResult", path: str | Path) -> Path:
    """Write a PNG of each row's routing curve plus the strong and weak model lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bench = result.benchmark
    fig, ax = plt.subplots(figsize=(8, 5))
    for row in result.rows:
        style = {"random": dict(linestyle=":", color="grey"), "oracle": dict(linestyle="--", color="black")}.get(
            row.router, {}
        )
        ax.plot(
            row.curve.strong_fraction * 100, row.curve.quality, marker=".",
            label=f"{row.router} (APGR {row.metrics.apgr:.3f})", **style,
        )
    ax.axhline(bench.strong_mean, color="tab:red", linestyle="--", linewidth=0.8, label=f"{bench.strong_model} (strong)")
    ax.axhline(bench.weak_mean, color="tab:blue", linestyle="--", linewidth=0.8, label=f"{bench.weak_model} (weak)")
    for comp, color in zip(result.comparisons, ("tab:purple", "tab:olive", "tab:cyan")):
        ax.axhline(comp["mt_bench_same_questions"], color=color, linestyle="-.", linewidth=0.8,
                   label=f"{comp['commercial_router']} ({comp['mt_bench_same_questions']:.3f})")
    ax.set_xlabel("strong-model calls (%)")
    ax.set_ylabel(bench.quality_name)
    ax.set_title(f"{bench.name}: {bench.n} prompts")
    ax.set_xlim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
