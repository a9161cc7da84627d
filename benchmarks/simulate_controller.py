"""Simulate the strong-share and budget controllers on benchmark prompts.

    python benchmarks/simulate_controller.py                 # tables + results/controller_share.png
    python benchmarks/simulate_controller.py --seed 1 --targets 0.3 0.6

What it does, with the shipped default router's real scores (one ``score`` call
per benchmark; the on-disk embedding cache is used) on MMLU-test, GSM8K,
MT-Bench (turn 1) and arena-bench prompts, mixed:

* **share mode**: for each target, a :class:`~shared_core.controller.ShareController`
  with its defaults (window 500) decides every prompt in turn, starting from the
  threshold ``strong_fraction=target`` gives (the router's reference quantiles),
  exactly as :class:`~shared_core.engine.RoutingEngine` asks it. Two orders: all
  prompts shuffled (seeded), and a drifting one (chat first: arena-bench and
  MT-Bench, then GSM8K, then MMLU, each block shuffled). The realised share is
  measured over every sliding window of ``--window`` decisions; the warm-up is the
  first ``--warmup`` decisions (windows ending inside it are left out). The
  fixed threshold (no controller) is shown for comparison.
* **budget mode**: a :class:`~shared_core.controller.BudgetController` around a
  ShareController (target 0.5), fed by a :class:`~shared_core.ledger.Ledger`, on
  the shuffled order with one request a simulated second. Costs use the stated
  prices and token estimates (input: characters / 4, rounded up; output: a fixed
  ``--output-tokens``); the reserve is the costliest strong call of the data, so
  the strong spend of a period can never exceed the cap. Prints each period's
  strong spend against the cap.

Needs the router data (not shipped): ``--data-dir``, else ``$ROUTELLM_DATA_DIR``,
else ``../shared/data``. Writes the plot under ``results/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BENCHES = ("mmlu", "gsm8k", "mt-bench", "arena-bench")
#: Dollars per million input / output tokens: gpt-4-1106-preview's list price and a Mixtral-8x7B host's.
PRICES = {"strong": (10.0, 30.0), "weak": (0.6, 0.6)}
TOLERANCE = 0.03


def data_dir(arg: str | None) -> Path:
    for candidate in (arg, os.environ.get("ROUTELLM_DATA_DIR"), str(ROOT.parent / "shared" / "data")):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    sys.exit("no router data: pass --data-dir or set ROUTELLM_DATA_DIR (RouteLLM's evaluation data)")


def load_scores(where: Path) -> tuple[dict[str, Any], dict[str, np.ndarray], Any]:
    from shared_core.evaluation.benchmarks import load_benchmark
    from shared_core.evaluation.runner import load_router_for_eval

    router = load_router_for_eval("default")
    benches, scores = {}, {}
    for name in BENCHES:
        benches[name] = load_benchmark(name, where)
        scores[name] = np.asarray(router.score(benches[name].prompts), dtype=float)
    return benches, scores, router


def gap_recovered(strong: np.ndarray, ix: np.ndarray, gain_all: np.ndarray, bench_of: np.ndarray) -> float:
    """Mean over the benchmarks of the quality gap recovered, (routed - weak) / (strong - weak),
    for the decisions ``strong`` made on the prompts ``ix`` (in that order)."""
    routed = np.zeros(len(gain_all))
    routed[ix] = strong
    return float(np.mean([routed[bench_of == b] @ gain_all[bench_of == b] / gain_all[bench_of == b].sum()
                          for b in range(len(BENCHES))]))


def orders(sizes: dict[str, int], seed: int) -> dict[str, np.ndarray]:
    """Indices into the concatenation of BENCHES: shuffled, and drifting (chat, then exams)."""
    rng = np.random.default_rng(seed)
    offsets = dict(zip(BENCHES, np.cumsum([0] + [sizes[b] for b in BENCHES[:-1]])))
    block = {b: offsets[b] + np.arange(sizes[b]) for b in BENCHES}
    total = sum(sizes.values())
    chat = np.concatenate([block["arena-bench"], block["mt-bench"]])
    drifting = np.concatenate([rng.permutation(chat), rng.permutation(block["gsm8k"]), rng.permutation(block["mmlu"])])
    return {"shuffled": rng.permutation(total), "drifting": drifting}


def windowed_share(strong: np.ndarray, window: int) -> np.ndarray:
    """Strong share of each window of ``window`` decisions; entry i ends at decision i + window - 1."""
    counts = np.concatenate([[0], np.cumsum(strong)])
    return (counts[window:] - counts[:-window]) / window


def run_share(scores: np.ndarray, target: float, start: float, controller_kwargs: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    from shared_core.controller import ShareController
    from shared_core.routers import Role

    controller = ShareController(target, **controller_kwargs)
    strong, thresholds = np.empty(len(scores), bool), np.empty(len(scores))
    for i, s in enumerate(scores):
        control = controller.decide(float(s), start)
        strong[i], thresholds[i] = control.role is Role.STRONG, control.threshold
    return strong, thresholds


def share_table(scores_all: np.ndarray, order_ix: dict[str, np.ndarray], targets: list[float], router: Any,
                window: int, warmup: int, quality: tuple[np.ndarray, np.ndarray], tuning: dict[str, Any],
                ) -> tuple[list[dict[str, Any]], dict[tuple[str, float], np.ndarray]]:
    from shared_core.engine import threshold_for_fraction
    from shared_core.thresholds import calibrate

    rows, curves = [], {}
    for order, ix in order_ix.items():
        seq = scores_all[ix]
        for target in targets:
            start = threshold_for_fraction(router, target)
            strong, thresholds = run_share(seq, target, start, {"window": window, **tuning})
            shares = windowed_share(strong, window)
            after = shares[max(0, warmup - window + 1):]
            fixed = windowed_share(seq >= start, window)[max(0, warmup - window + 1):]
            hindsight = calibrate(scores_all, target).threshold  # calibrated on every prompt, in hindsight
            hind = windowed_share(seq >= hindsight, window)[max(0, warmup - window + 1):]
            curves[(order, target)] = shares
            rows.append({
                "order": order, "target": target, "n": len(seq), "overall": strong.mean(),
                "max_dev": float(np.abs(after - target).max()), "within": float(np.mean(np.abs(after - target) <= TOLERANCE)),
                "min": float(after.min()), "max": float(after.max()),
                "thr_lo": float(thresholds[warmup:].min()), "thr_hi": float(thresholds[warmup:].max()),
                "fixed_overall": float((seq >= start).mean()), "fixed_max_dev": float(np.abs(fixed - target).max()),
                "hind_overall": float((seq >= hindsight).mean()), "hind_max_dev": float(np.abs(hind - target).max()),
                "all_windows_max_dev": float(np.abs(shares - target).max()),
                "pgr": gap_recovered(strong, ix, *quality),
                "hind_pgr": gap_recovered(seq >= hindsight, ix, *quality),
            })
    return rows, curves


def budget_run(prompts_all: list[str], scores_all: np.ndarray, ix: np.ndarray, budget: float, period: float,
               output_tokens: int) -> tuple[list[dict[str, Any]], float]:
    from shared_core.controller import BudgetController, ShareController
    from shared_core.ledger import Ledger, PriceTable

    prices = PriceTable(PRICES)
    tokens_in = np.array([math.ceil(len(p) / 4) for p in prompts_all])
    reserve = prices.cost("strong", int(tokens_in.max()), output_tokens)
    clock = {"now": 0.0}
    controller = BudgetController(budget, period, reserve=reserve, inner=ShareController(0.5),
                                  clock=lambda: clock["now"])
    ledger = Ledger(prices, "strong", budget=controller)
    periods: dict[int, dict[str, Any]] = {}
    for t, i in enumerate(ix):
        clock["now"] = float(t)  # one request a second
        control = controller.decide(float(scores_all[i]), 0.5)
        call = ledger.record_call(control.role, control.role.value, int(tokens_in[i]), output_tokens)
        row = periods.setdefault(int(t // period), {"calls": 0, "strong": 0, "strong_spend": 0.0, "spend": 0.0,
                                                     "exhausted": 0, "first_exhausted": None})
        row["calls"] += 1
        row["spend"] += call.cost
        if control.role.value == "strong":
            row["strong"] += 1
            row["strong_spend"] += call.cost
        if control.reason == "budget_exhausted":
            row["exhausted"] += 1
            row["first_exhausted"] = row["first_exhausted"] if row["first_exhausted"] is not None else t % period
    return [{"period": k, **v} for k, v in sorted(periods.items())], reserve


def plot(curves: dict[tuple[str, float], np.ndarray], targets: list[float], window: int, warmup: int, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, order in zip(axes, ("shuffled", "drifting")):
        for target in targets:
            shares = curves[(order, target)]
            x = np.arange(window - 1, window - 1 + len(shares))
            ax.plot(x, shares, lw=0.8, label=f"target {target:.1f}")
            ax.axhspan(target - TOLERANCE, target + TOLERANCE, color="grey", alpha=0.15)
        ax.axvline(warmup, color="k", ls=":", lw=0.8)
        ax.set_title(f"{order} order: strong share over the last {window} decisions")
        ax.set_xlabel("decision")
        ax.legend(loc="upper right", fontsize=8)
    axes[0].set_ylabel("realised strong share")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--targets", type=float, nargs="+", default=[0.2, 0.5, 0.8])
    ap.add_argument("--window", type=int, default=500, help="controller window and measuring window")
    ap.add_argument("--warmup", type=int, default=1000, help="decisions before the deviation is measured")
    ap.add_argument("--score-window", type=int, default=None, help="ShareController score_window (default: its own)")
    ap.add_argument("--gain", type=float, default=None, help="ShareController gain (default: its own)")
    ap.add_argument("--max-step", type=float, default=None, help="ShareController max_step (default: its own)")
    ap.add_argument("--budget", type=float, default=4.0, help="dollars of strong spend per period")
    ap.add_argument("--period", type=float, default=1800.0, help="seconds (one request a second)")
    ap.add_argument("--output-tokens", type=int, default=256)
    ap.add_argument("--plot", default=str(ROOT / "results" / "controller_share.png"))
    args = ap.parse_args(argv)

    started = time.perf_counter()
    benches, scores, router = load_scores(data_dir(args.data_dir))
    sizes = {b: benches[b].n for b in BENCHES}
    scores_all = np.concatenate([scores[b] for b in BENCHES])
    prompts_all = [p for b in BENCHES for p in benches[b].prompts]
    gain_all = np.concatenate([benches[b].strong_quality - benches[b].weak_quality for b in BENCHES])
    bench_of = np.concatenate([np.full(sizes[b], k) for k, b in enumerate(BENCHES)])
    order_ix = orders(sizes, args.seed)
    tuning = {k: v for k, v in (("score_window", args.score_window), ("gain", args.gain),
                                ("max_step", args.max_step)) if v is not None}
    print(f"router {router.label!r}; prompts: " + ", ".join(f"{b} {n}" for b, n in sizes.items())
          + f" = {len(prompts_all)}; seed {args.seed}")
    print(f"share mode: ShareController defaults{''.join(f', {k} {v}' for k, v in tuning.items())}, "
          f"window {args.window}; warm-up {args.warmup} decisions; "
          f"tolerance +-{TOLERANCE * 100:.0f} points\n")

    rows, curves = share_table(scores_all, order_ix, args.targets, router, args.window, args.warmup,
                               (gain_all, bench_of), tuning)
    print("Controller: realised share of all decisions; min-max and max deviation of the window share after the "
          "warm-up (and over every full window, warm-up included); share of windows within +-3 points; threshold "
          "range after warm-up; gap recovered (mean over the 4 benchmarks of (routed - weak) / (strong - weak) "
          "quality; random routing recovers about the strong share).")
    print("| order | target | realised | window share | max dev | (all windows) | within +-3 | threshold range "
          "| gap recovered |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['order']} | {r['target']:.2f} | {r['overall']:.3f} | {r['min']:.3f}-{r['max']:.3f} | "
              f"{r['max_dev'] * 100:.1f} pts | {r['all_windows_max_dev'] * 100:.1f} pts | {r['within']:.1%} | "
              f"{r['thr_lo']:.3f}-{r['thr_hi']:.3f} | {r['pgr']:.3f} |")
    print("\nFixed thresholds for comparison: from the router's reference quantiles (what strong_fraction=target "
          "gives without calibration prompts), and calibrated on all these prompts in hindsight.")
    print("| order | target | reference quantiles: realised, max dev | hindsight: realised, max dev, gap recovered |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['order']} | {r['target']:.2f} | {r['fixed_overall']:.3f}, {r['fixed_max_dev'] * 100:.1f} pts | "
              f"{r['hind_overall']:.3f}, {r['hind_max_dev'] * 100:.1f} pts, {r['hind_pgr']:.3f} |")
    worst = max(r["max_dev"] for r in rows)
    print(f"\nmax deviation after warm-up over all runs: {worst * 100:.1f} points "
          f"({'within' if worst <= TOLERANCE else 'OUTSIDE'} +-{TOLERANCE * 100:.0f})")

    periods, reserve = budget_run(prompts_all, scores_all, order_ix["shuffled"], args.budget, args.period,
                                  args.output_tokens)
    print(f"\nbudget mode: cap ${args.budget:.2f} of strong spend per {args.period:.0f} s period, one request a second, "
          f"shuffled order, inner ShareController(0.5); prices $/M tokens strong {PRICES['strong']}, weak "
          f"{PRICES['weak']}; input tokens = ceil(chars / 4), output tokens = {args.output_tokens}; "
          f"reserve ${reserve:.4f} (costliest strong call)\n")
    print("| period | calls | strong | strong spend | cap | weak for budget | budget gone at (s) | total spend |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for p in periods:
        gone = "-" if p["first_exhausted"] is None else f"{p['first_exhausted']:.0f}"
        print(f"| {p['period']} | {p['calls']} | {p['strong']} | ${p['strong_spend']:.4f} | ${args.budget:.2f} | "
              f"{p['exhausted']} | {gone} | ${p['spend']:.4f} |")
    over = [p["period"] for p in periods if p["strong_spend"] > args.budget + 1e-12]
    print(f"\nperiods over the cap: {over or 'none'}; highest strong spend "
          f"${max(p['strong_spend'] for p in periods):.4f} of ${args.budget:.2f}")

    path = plot(curves, args.targets, args.window, args.warmup, Path(args.plot))
    print(f"\nplot: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}; "
          f"{time.perf_counter() - started:.0f} s")
    return 0 if worst <= TOLERANCE and not over else 1


if __name__ == "__main__":
    raise SystemExit(main())
