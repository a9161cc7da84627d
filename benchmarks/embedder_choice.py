"""Which embedder the shipped routers use: held-out quality, speed and size side by side.

    python benchmarks/embedder_choice.py                         # the packaged int8 ONNX MiniLM
    python benchmarks/embedder_choice.py --embedder /path/to/model2vec-dir --embedder minilm

For each embedder: trains the default router's recipe (``--router``, default
``adaptive_ensemble``) on the allowed data (MMLU train half + arena-bench), measures it
on MMLU-test, GSM8K and MT-Bench (never trained on) with RouteLLM's APGR, times
single-prompt embedding (p50 over 200 MMLU-test prompts, one at a time) and reports
the embedder's files on disk. Needs the router data (``$ROUTELLM_DATA_DIR`` or
``../shared/data``: RouteLLM's and arena-hard-auto's public files) and the ``train``
extra; embeddings go through the on-disk cache.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def files_size(embedder) -> tuple[float, str]:
    """MB on disk of what the embedder loads, and where."""
    from shared_core.embeddings import Model2VecEmbedder, OnnxEmbedder, SentenceTransformerEmbedder, default_model_path

    inner = getattr(embedder, "inner", embedder)
    if isinstance(inner, OnnxEmbedder):
        where = inner.model_dir()
    elif isinstance(inner, Model2VecEmbedder):
        where = Path(inner.path)
    elif isinstance(inner, SentenceTransformerEmbedder):
        where = default_model_path() if inner.is_default else Path(str(inner.model_name_or_path))
    else:
        return float("nan"), "?"
    size = sum(p.stat().st_size for p in where.rglob("*") if p.is_file())
    return size / 1e6, str(where)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--embedder", action="append", help="embedder spec (repeatable; default: minilm-onnx-int8)")
    parser.add_argument("--router", default="adaptive_ensemble")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)

    from shared_core.embeddings import CachedEmbedder, get_embedder
    from shared_core.evaluation import benchmarks
    from shared_core.evaluation.metrics import curve_metrics, routing_curve
    from shared_core.training.recipes import train_recipe

    benches = {
        "MMLU-test": benchmarks.load_mmlu_test(args.data_dir),
        "GSM8K": benchmarks.load_gsm8k(args.data_dir),
        "MT-Bench": benchmarks.load_mt_bench(args.data_dir),
    }
    timing = benches["MMLU-test"].prompts[:200]
    rows = []
    for spec in args.embedder or ["minilm-onnx-int8"]:
        inner = get_embedder(spec)
        router = train_recipe(args.router, data_dir=args.data_dir, embedder=CachedEmbedder(inner), progress=False)
        apgr = {}
        for name, bench in benches.items():
            curve = routing_curve(router.score(bench.prompts), bench.strong_quality, bench.weak_quality)
            apgr[name] = curve_metrics(curve, bench.strong_mean, bench.weak_mean).apgr
        inner.embed(["warm up"])
        times = []
        for prompt in timing:
            started = time.perf_counter()
            inner.embed([prompt])
            times.append(time.perf_counter() - started)
        size, where = files_size(inner)
        rows.append((inner.name, apgr, statistics.median(times) * 1000, size, where))
    print(f"router {args.router}, trained on MMLU train half + arena-bench; APGR on data it never saw")
    print(f"{'embedder':58} {'MMLU-test':>9} {'GSM8K':>6} {'MT-Bench':>8} {'p50 ms':>7} {'MB':>7}")
    for name, apgr, p50, size, _ in rows:
        print(f"{name[:58]:58} {apgr['MMLU-test']:9.3f} {apgr['GSM8K']:6.3f} {apgr['MT-Bench']:8.3f} {p50:7.2f} {size:7.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
