"""Learning curve of feedback: APGR on one domain's held-out prompts after N outcomes.

    python benchmarks/feedback_curve.py                          # chemistry, N = 50 100 200 500, 5 seeds
    python benchmarks/feedback_curve.py --domain engineering --outcome weak_ok
    python benchmarks/feedback_curve.py --domain physics --grid  # the dev domain the settings were chosen on

Protocol. The domain is one MMLU-Pro category (default ``chemistry``: 954
questions, none of them in the shipped router's training data, which is
RouteLLM's MMLU and arena-bench). The quality of an answer is whether it is
right; strong = gpt-4o-2024-05-13, weak = Mixtral-8x7B-Instruct-v0.1 (the data's
closest pair to RouteLLM's). For each seed the domain's questions are shuffled;
the first ``--pool`` (600) are the feedback pool, the rest (354) the held-out
set. The shipped default router (``resolve_router("default")``, untouched) is
scored on the held-out set; then a :class:`~shared_core.routers.feedback.FeedbackRouter`
over it learns the outcomes of the first N pool questions and is scored on the
same held-out set. APGR is RouteLLM's (``routing_curve`` at the deciles of the
scores, ``curve_metrics``). The table gives mean and standard deviation over the
seeds, for the default router, the feedback router, and their paired difference.
The last column is a control: the same N prompts with their outcomes shuffled
among them. A gain that survives it comes from *where* the feedback prompts lie
and the overall rate of outcomes, not from which prompt had which outcome.

Outcomes (``--outcome``):

* ``pairwise`` (default): which answer was better, as a user comparing both
  would say: ``strong`` (only gpt-4o right), ``weak`` (only Mixtral right) or
  ``tie``; the labels the shipped router was trained with (1, 0, 0.5).
* ``weak_ok``: only whether the weak answer was good enough (``weak_ok`` /
  ``weak_failed``), the signal a deployment that shows only the weak answer gets.

Writes ``results/feedback_curve_<domain>_<outcome>.png`` and ``.json`` (git-ignored).
Needs the router data (``--data-dir``, else ``$ROUTELLM_DATA_DIR``, else ``../shared/data``).
Embeddings are cached on disk (``~/.cache/routellm``): the first run embeds the domain once.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

STRONG = "gpt-4o-2024-05-13"
WEAK = "Mixtral-8x7B-Instruct-v0.1"
DEFAULT_NS = (50, 100, 200, 500)
GRID = {"k": (10, 20, 50), "temperature": (0.05, 0.1, 0.2), "prior_weight": (0.5, 1.0, 2.0),
        "head_alpha": (None, 10.0)}


def load_domain(data_dir: str | None, domain: str):
    """``(prompts, strong_correct, weak_correct)`` of one MMLU-Pro category."""
    try:  # the reader of branch ``quality``, once merged
        from shared_core.datasets import load_mmlu_pro  # type: ignore[attr-defined]
    except ImportError:
        load_mmlu_pro = _read_mmlu_pro
    df = load_mmlu_pro(data_dir)
    known = sorted(set(df["category"]))
    if domain not in known:
        raise SystemExit(f"unknown MMLU-Pro category {domain!r}; expected one of {known}")
    df = df[df["category"] == domain].dropna(subset=[STRONG, WEAK]).reset_index(drop=True)
    return list(df["prompt"]), df[STRONG].to_numpy(float), df[WEAK].to_numpy(float)


def _read_mmlu_pro(data_dir: str | None):
    """MMLU-Pro as ``category``, ``prompt`` and one 0/1 column per model (the layout of ``quality``'s reader)."""
    import pandas as pd

    from shared_core.datasets import resolve_data_dir

    root = resolve_data_dir(data_dir) / "mmlu_pro"
    qs = pd.read_json(root / "questions.jsonl", lines=True, dtype={"question_id": str})
    letters = "ABCDEFGHIJKLMNOP"
    qs["prompt"] = [
        "\n".join([q.strip(), *(f"{letters[i]}. {str(o).strip()}" for i, o in enumerate(opts)), "Answer:"])
        for q, opts in zip(qs["question"], qs["options"])
    ]
    out = pd.read_csv(root / "outcomes.csv", dtype={"question_id": str, "model": str})
    wide = out[out["model"].isin([STRONG, WEAK])].pivot(index="question_id", columns="model", values="correct")
    return qs[["question_id", "category", "prompt"]].merge(wide, left_on="question_id", right_index=True)


def outcomes(strong: np.ndarray, weak: np.ndarray, kind: str) -> list[str]:
    """The feedback a user would give on each question (see the module docstring)."""
    if kind == "weak_ok":
        return ["weak_ok" if w else "weak_failed" for w in weak]
    return ["strong" if s > w else "weak" if w > s else "tie" for s, w in zip(strong, weak)]


def apgr(scores: np.ndarray, strong: np.ndarray, weak: np.ndarray) -> float:
    from shared_core.evaluation.metrics import curve_metrics, routing_curve

    return curve_metrics(routing_curve(scores, strong, weak), strong.mean(), weak.mean()).apgr


def run(base, prompts, strong, weak, *, ns, seeds, pool, kind, settings) -> dict:
    """APGR per seed of the untouched base and of the feedback router after each N."""
    from shared_core.routers.feedback import FeedbackRouter

    labels = outcomes(strong, weak, kind)
    rows = {"base": [], **{n: [] for n in ns}, **{f"shuffled {n}": [] for n in ns}}
    for seed in range(seeds):
        order = np.random.default_rng(seed).permutation(len(prompts))
        train, test = order[:pool], order[pool:]
        test_prompts = [prompts[i] for i in test]
        rows["base"].append(apgr(base.score(test_prompts), strong[test], weak[test]))
        for n in ns:
            given = [labels[i] for i in train[:n]]
            for key, outs in ((n, given), (f"shuffled {n}", list(np.random.default_rng(seed).permutation(given)))):
                router = FeedbackRouter(base, **settings).add([prompts[i] for i in train[:n]], outs)
                rows[key].append(apgr(router.score(test_prompts), strong[test], weak[test]))
    return rows


def table(rows: dict, ns) -> list[str]:
    base = np.array(rows["base"])
    lines = [f"{'feedback N':>10}  {'APGR default':>14}  {'APGR feedback':>14}  {'gain':>15}  "
             f"{'gain, shuffled':>15}"]
    for n in ns:
        fb = np.array(rows[n])
        gain, control = fb - base, np.array(rows[f"shuffled {n}"]) - base
        lines.append(f"{n:>10}  {base.mean():>7.3f} ± {base.std():.3f}  {fb.mean():>7.3f} ± {fb.std():.3f}  "
                     f"{gain.mean():>+8.3f} ± {gain.std():.3f}  {control.mean():>+8.3f} ± {control.std():.3f}")
    return lines


def plot(rows: dict, ns, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = np.array(rows["base"])
    means = [np.mean(rows[n]) for n in ns]
    stds = [np.std(rows[n]) for n in ns]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.axhline(base.mean(), color="grey", linestyle="--", label="shipped default (no feedback)")
    ax.axhspan(base.mean() - base.std(), base.mean() + base.std(), color="grey", alpha=0.15)
    ax.errorbar(ns, means, yerr=stds, marker="o", capsize=3, label="FeedbackRouter over the default")
    control = [rows[f"shuffled {n}"] for n in ns]
    ax.errorbar(ns, [np.mean(c) for c in control], yerr=[np.std(c) for c in control], marker="s", capsize=3,
                linestyle=":", alpha=0.7, label="same prompts, outcomes shuffled (control)")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("feedback outcomes learned (N)")
    ax.set_ylabel("APGR on held-out prompts")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--domain", default="chemistry", help="MMLU-Pro category (default chemistry)")
    parser.add_argument("--outcome", choices=("pairwise", "weak_ok"), default="pairwise")
    parser.add_argument("--n", type=int, nargs="+", default=list(DEFAULT_NS), help="feedback counts")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--pool", type=int, default=600, help="questions per seed the feedback comes from")
    parser.add_argument("--router", default="default", help="the base router (a shipped name or a path)")
    parser.add_argument("--grid", action="store_true", help="print APGR at N=200 for every setting of GRID")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="results")
    args = parser.parse_args(argv)

    from shared_core.engine import resolve_router

    started = time.perf_counter()
    prompts, strong, weak = load_domain(args.data_dir, args.domain)
    if not max(args.n) <= args.pool < len(prompts):
        raise SystemExit(f"need max N ({max(args.n)}) <= --pool ({args.pool}) < questions ({len(prompts)})")
    base = resolve_router(args.router, cache=True)  # a private copy with an on-disk embedding cache
    base.embedder.embed(prompts)  # warm the cache once
    print(f"domain {args.domain!r}: {len(prompts)} questions, strong {STRONG} {strong.mean():.1%} right, "
          f"weak {WEAK} {weak.mean():.1%}; outcome {args.outcome!r}; held-out {len(prompts) - args.pool} "
          f"per seed; {args.seeds} seeds; base router {args.router!r} ({base.name})")
    common = dict(seeds=args.seeds, pool=args.pool, kind=args.outcome)

    if args.grid:
        keys = list(GRID)
        for values in itertools.product(*GRID.values()):
            settings = dict(zip(keys, values))
            rows = run(base, prompts, strong, weak, ns=[200], settings=settings, **common)
            gain = np.array(rows[200]) - np.array(rows["base"])
            print(f"{settings}  APGR {np.mean(rows[200]):.3f}  gain {gain.mean():+.3f} ± {gain.std():.3f}")
        return 0

    rows = run(base, prompts, strong, weak, ns=args.n, settings={}, **common)
    lines = table(rows, args.n)
    print("\n".join(lines))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"feedback_curve_{args.domain.replace(' ', '_')}_{args.outcome}"
    title = (f"MMLU-Pro {args.domain}: {args.outcome} feedback, {len(prompts) - args.pool} held-out, "
             f"{args.seeds} seeds (mean ± sd)")
    plot(rows, args.n, title, stem.with_suffix(".png"))
    stem.with_suffix(".json").write_text(json.dumps(
        {"domain": args.domain, "outcome": args.outcome, "router": args.router, "seeds": args.seeds,
         "pool": args.pool, "apgr": {str(k): v for k, v in rows.items()}}, indent=2) + "\n")
    print(f"wrote {stem}.png and .json in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
