"""Routing speed on this machine: load time, single-prompt latency, batched throughput.

    python benchmarks/bench_routing.py                      # the shipped default router
    python benchmarks/bench_routing.py --router mf          # a shipped checkpoint by name
    python benchmarks/bench_routing.py --router path/to/router --json results/bench.json
    python benchmarks/bench_routing.py --embedder minilm-onnx        # same vectors, ONNX Runtime

What it measures, on MMLU prompts from the router data (a fixed seeded sample):

* load: ``resolve_router`` (reads the artifact) and the embedder's first load
  (imports torch and sentence-transformers, reads the model), in this process;
* single: ``RoutingEngine.decide_texts([prompt])`` one prompt at a time, after a
  warm-up, p50/p95/mean latency in ms;
* batched: decisions per second on batches of ``--batch-size`` prompts;
* the embedder's share of the time in both.

The on-disk embedding cache is off (serving sees new prompts), so every
decision embeds its prompt. Targets: p50 <= 20 ms, >= 155 decisions/s batched.
The machine is shared: the load average is printed with the results.

Needs the router data (not shipped with the package): RouteLLM's public MMLU
answer files (lm-sys/RouteLLM), read from ``--data-dir``, else
``$ROUTELLM_DATA_DIR``, else ``../shared/data``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

TARGET_P50_MS = 20.0
TARGET_BATCHED_PER_S = 155.0


def mmlu_sample(data_dir: str | None, n: int, seed: int) -> list[str]:
    """``n`` distinct MMLU prompts drawn with a fixed seed."""
    import numpy as np

    from shared_core.datasets import load_mmlu

    prompts = sorted(set(load_mmlu(data_dir)["prompt"]))
    if n > len(prompts):
        raise SystemExit(f"asked for {n} prompts, the MMLU data has {len(prompts)}")
    idx = np.random.default_rng(seed).choice(len(prompts), size=n, replace=False)
    return [prompts[i] for i in idx]


class _Timer:
    """Accumulates the wall time spent inside the callables it wraps."""

    def __init__(self) -> None:
        self.total = 0.0

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.total += time.perf_counter() - start

        return timed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from shared_core.embeddings import CachedEmbedder, OnnxEmbedder, SentenceTransformerEmbedder, get_embedder
    from shared_core.engine import RoutingEngine, resolve_router

    prompts = mmlu_sample(args.data_dir, args.warmup + args.single + args.batches * args.batch_size, args.seed)
    warm = prompts[: args.warmup]
    single = prompts[args.warmup : args.warmup + args.single]
    rest = prompts[args.warmup + args.single :]
    batches = [rest[i : i + args.batch_size] for i in range(0, len(rest), args.batch_size)]

    start = time.perf_counter()
    router = resolve_router(args.router)
    t_router = time.perf_counter() - start

    embedder = getattr(router, "embedder", None)
    if isinstance(embedder, CachedEmbedder):  # serving does not cache; measure the embedder itself
        embedder = router.embedder = embedder.inner
    if args.embedder is not None:  # speed of another embedder under the same router
        embedder = router.embedder = get_embedder(args.embedder)
    if isinstance(embedder, SentenceTransformerEmbedder):
        if args.torch_threads is not None:
            embedder.torch_threads = args.torch_threads
        if args.no_blas_limit:
            embedder.blas_threads = None
    if isinstance(embedder, OnnxEmbedder):
        if args.torch_threads is not None:
            embedder.threads = args.torch_threads
        if args.no_blas_limit:
            embedder.blas_threads = None
        if args.workers is not None:
            embedder.workers = args.workers
        if args.solo_threads is not None:
            embedder.solo_threads = args.solo_threads
    start = time.perf_counter()
    if embedder is not None:
        embedder.load()
    t_embedder = time.perf_counter() - start

    timer = None
    if embedder is not None:
        timer = _Timer()
        # instance attributes shadow the methods; a router with a layer head embeds through embed_layers
        embedder.embed = timer.wrap(embedder.embed)  # type: ignore[method-assign]
        embedder.embed_layers = timer.wrap(embedder.embed_layers)  # type: ignore[method-assign]
    engine = RoutingEngine(router, threshold=0.5)

    for p in warm:
        engine.decide_texts([p])

    if timer is not None:
        timer.total = 0.0
    latencies = []
    for p in single:
        start = time.perf_counter()
        engine.decide_texts([p])
        latencies.append(time.perf_counter() - start)
    single_total = sum(latencies)
    single_embed = timer.total if timer is not None else None

    if timer is not None:
        timer.total = 0.0
    start = time.perf_counter()
    n_batched = 0
    for batch in batches:
        engine.decide_texts(batch)
        n_batched += len(batch)
    batched_total = time.perf_counter() - start
    batched_embed = timer.total if timer is not None else None

    import torch

    ms = [x * 1000 for x in latencies]
    return {
        "router": getattr(router, "label", type(router).__name__),
        "router_spec": str(args.router) if args.router is not None else "default",
        "embedder": getattr(embedder, "name", None),
        "embedder_type": type(embedder).__name__ if embedder is not None else None,
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "onnx_threads": (embedder.threads or "default") if isinstance(embedder, OnnxEmbedder) else None,
            "onnx_workers": embedder.workers if isinstance(embedder, OnnxEmbedder) else None,
            # a call of one text runs on a session of its own with this many threads (None: the same session)
            "onnx_solo_threads": embedder._solo_threads() if isinstance(embedder, OnnxEmbedder) else None,
            "blas_limit": None if args.no_blas_limit else getattr(embedder, "blas_threads", None),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "load_s": {"router": t_router, "embedder": t_embedder, "total": t_router + t_embedder},
        "single": {
            "n": len(single),
            "p50_ms": statistics.median(ms),
            "p95_ms": percentile(ms, 0.95),
            "mean_ms": statistics.fmean(ms),
            "embedding_share": None if single_embed is None else single_embed / single_total,
        },
        "batched": {
            "batch_size": args.batch_size,
            "n": n_batched,
            "decisions_per_s": n_batched / batched_total,
            "embedding_share": None if batched_embed is None else batched_embed / batched_total,
        },
        "targets": {"p50_ms": TARGET_P50_MS, "batched_per_s": TARGET_BATCHED_PER_S},
    }


def format_table(r: dict[str, Any]) -> str:
    def share(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.0f}%"

    s, b, m = r["single"], r["batched"], r["machine"]
    ok = lambda good: "ok" if good else "MISSED"  # noqa: E731
    rows = [
        ("router", f"{r['router']} ({r['router_spec']})", ""),
        ("embedder", f"{r['embedder']} ({r['embedder_type']})", ""),
        ("load: resolve_router", f"{r['load_s']['router']:.2f} s", ""),
        ("load: embedder (import + model)", f"{r['load_s']['embedder']:.2f} s", ""),
        (f"single prompt p50 ({s['n']} prompts)", f"{s['p50_ms']:.1f} ms", f"target <= {TARGET_P50_MS:g} ms: {ok(s['p50_ms'] <= TARGET_P50_MS)}"),
        ("single prompt p95", f"{s['p95_ms']:.1f} ms", ""),
        ("single prompt mean", f"{s['mean_ms']:.1f} ms", f"embedding {share(s['embedding_share'])} of it"),
        (f"batched, {b['batch_size']} a batch ({b['n']} prompts)", f"{b['decisions_per_s']:.0f} decisions/s",
         f"target >= {TARGET_BATCHED_PER_S:g}/s: {ok(b['decisions_per_s'] >= TARGET_BATCHED_PER_S)}"),
        ("batched embedding share", share(b["embedding_share"]), ""),
        ("machine", f"{m['cpus']} CPUs, torch {m['torch_threads']} threads, BLAS limit {m['blas_limit']}"
         + (f", ONNX Runtime threads {m['onnx_threads']} x {m['onnx_workers']} workers"
            + (f", {m['onnx_solo_threads']} for one text" if m.get("onnx_solo_threads") else "")
            if m["onnx_threads"] is not None else ""),
         f"load average {m['load_average'][0]:.2f}"),
    ]
    w0 = max(len(a) for a, _, _ in rows)
    w1 = max(len(x) for _, x, _ in rows)
    lines = [f"{a:<{w0}}  {x:<{w1}}  {c}".rstrip() for a, x, c in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--router", default=None, help="router name or directory (default: the shipped default)")
    parser.add_argument("--data-dir", default=None, help="router data directory (default: ../shared/data)")
    parser.add_argument("--single", type=int, default=200, help="prompts timed one at a time (default: 200)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed warm-up decisions (default: 10)")
    parser.add_argument("--batches", type=int, default=5, help="batches timed (default: 5)")
    parser.add_argument("--batch-size", type=int, default=64, help="prompts a batch (default: 64)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the prompt sample (default: 0)")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch.set_num_threads for the embedder (ONNX Runtime intra-op threads for an onnx one)")
    parser.add_argument("--workers", type=int, default=None, help="batches run side by side (onnx embedders)")
    parser.add_argument("--solo-threads", type=int, default=None,
                        help="intra-op threads of a call with one text (onnx embedders; default: --workers; "
                        "equal to --torch-threads, 1 by default: one session for every call, as before)")
    parser.add_argument("--embedder", default=None,
                        help="swap in another embedder (e.g. minilm-onnx, minilm-onnx-int8) to time it; the "
                        "scores are the router's own only when the embedder names match")
    parser.add_argument("--no-blas-limit", action="store_true", help="do not cap NumPy's BLAS threads (to measure the cap)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON ('-' for stdout)")
    args = parser.parse_args(argv)
    for name in ("single", "batches", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")

    result = run(args)
    if args.json == "-":
        print(json.dumps(result, indent=2))
        return 0
    print(format_table(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
