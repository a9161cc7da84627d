"""Batch scoring throughput: Ray Data (``routellm route --ray``) against one process, same prompts.

    python benchmarks/bench_ray_batch.py                    # 2000 prompts, the shipped default router
    python benchmarks/bench_ray_batch.py --n 5000 --actors 2 --batch-size 256

Both paths score the same ``--n`` distinct generated prompts with the same router
and threshold and must agree on every decision (role exactly, score to 1e-6).
The single-process path is ``RoutingEngine.decide_texts`` on all prompts at once;
the Ray path is :func:`shared_core.ray_batch.decide_texts_on_ray` on a local
loopback cluster, timed after the cluster is up (its start-up is printed apart);
its time includes starting the scoring actors, each of which loads the router.
The machine is shared: the load average is printed with the results.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

_SUBJECTS = ["primes", "rain", "chess", "inflation", "TCP", "photosynthesis", "Bayes' theorem", "volcanoes",
             "the Roman Empire", "neural networks", "tax law", "origami"]
_FORMS = ["Prove a theorem about {s} rigorously (case {n}).", "Say one word about {s} #{n}.",
          "Explain {s} to a child, version {n}.", "Write a limerick about {s} number {n}.",
          "Compare {s} with its closest relative and justify each claim, item {n}."]


def prompts(n: int) -> list[str]:
    return [_FORMS[i % len(_FORMS)].format(s=_SUBJECTS[(i // len(_FORMS)) % len(_SUBJECTS)], n=i) for i in range(n)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="prompts (default 2000)")
    parser.add_argument("--router", default=None, help="router (default: the shipped default)")
    parser.add_argument("--actors", type=int, default=2, help="Ray Data scoring actors (default 2)")
    parser.add_argument("--batch-size", type=int, default=256, help="prompts per map batch (default 256)")
    args = parser.parse_args(argv)

    import ray

    from shared_core.engine import RoutingEngine
    from shared_core.ray_batch import decide_texts_on_ray

    texts = prompts(args.n)
    engine = RoutingEngine.from_settings(router=args.router)
    engine.decide_texts(texts[:8])  # load and warm the embedder outside the clock
    start = time.perf_counter()
    single = engine.decide_texts(texts)
    single_s = time.perf_counter() - start

    start = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    ray_start_s = time.perf_counter() - start
    try:
        decide_texts_on_ray(texts[:8], router=args.router, batch_size=8, concurrency=args.actors)  # warm-up run
        start = time.perf_counter()
        on_ray = decide_texts_on_ray(texts, router=args.router, batch_size=args.batch_size, concurrency=args.actors)
        ray_s = time.perf_counter() - start
    finally:
        ray.shutdown()

    differ = sum(a.role != b.role or abs(a.score - b.score) > 1e-6 for a, b in zip(single, on_ray))
    print(f"{args.n} prompts, router {engine.router.label}, threshold {engine.threshold:.6f}")
    print(f"single process : {single_s:7.2f} s  {args.n / single_s:8.1f} prompts/s")
    print(f"Ray Data       : {ray_s:7.2f} s  {args.n / ray_s:8.1f} prompts/s  "
          f"({args.actors} actors, batches of {args.batch_size}; cluster start-up {ray_start_s:.1f} s, not counted)")
    print(f"decisions that differ: {differ}")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs, shared)")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
