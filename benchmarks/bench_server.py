"""What ``routellm serve`` adds to a chat call, and how many requests/s it serves.

    python benchmarks/bench_server.py                       # default router, 1 and 2 workers
    python benchmarks/bench_server.py --router random       # HTTP overhead alone (no embedding)
    python benchmarks/bench_server.py --requests 400 --concurrency 64 --workers 2 --json results/bench_server.json

Everything runs on 127.0.0.1, each part in its own process:

* a stand-in upstream (this file, ``--upstream PORT``): a Starlette app under
  uvicorn answering every chat completion at once with a fixed body, so that the
  numbers are the server's, not a model's;
* ``routellm serve`` (``python -m shared_core.server``) in front of it as both
  the strong and the weak upstream, with ``--router`` (default: the shipped
  default router; every request embeds a new prompt);
* this process as the client (httpx, one keep-alive connection per client).

Overhead: ``--requests`` sequential calls, each with a distinct prompt, straight
to the upstream and then through the server; p50 and p99 of each and of the
difference. Throughput: the same number of calls from ``--concurrency`` clients
at once, at 1 worker and at ``--workers`` workers. The machine is shared: the
load average is printed with the results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
_SUBJECTS = ["the French Revolution", "photosynthesis", "binary search trees", "the Pythagorean theorem",
             "inflation", "quantum entanglement", "rainfall in deserts", "the rules of chess", "TCP handshakes",
             "Bayes' theorem", "plate tectonics", "the immune system"]
_FORMS = ["Explain {s} to a ten-year-old, case {n}.", "Prove a key property of {s} rigorously, step {n}.",
          "Write {n} short sentences about {s}.", "What is the most surprising fact about {s}? (#{n})"]


def prompts(n: int, offset: int = 0) -> list[str]:
    """``n`` distinct prompts of everyday length (templates x subjects x a counter)."""
    return [_FORMS[i % len(_FORMS)].format(s=_SUBJECTS[(i // len(_FORMS)) % len(_SUBJECTS)], n=i)
            for i in range(offset, offset + n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The stand-in upstream ------------------------------------------------------------------
def run_upstream(port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        return JSONResponse({
            "id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": body.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}})

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, workers=1)


# Processes --------------------------------------------------------------------------------
def wait_ready(url: str, proc: subprocess.Popen, what: str, timeout: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"{what} did not answer {url} within {timeout:.0f} s")


def start_upstream() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--upstream", str(port)])
    wait_ready(f"http://127.0.0.1:{port}/", proc, "the stand-in upstream")
    return proc, f"http://127.0.0.1:{port}/v1"


def start_server(upstream: str, router: str | None, workers: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "shared_core.server", "--strong-base-url", upstream, "--strong-model", "big",
           "--weak-base-url", upstream, "--weak-model", "small", "--port", str(port), "--workers", str(workers)]
    if router:
        cmd += ["--router", router]
        if router == "random":
            cmd += ["--threshold", "0.5"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    wait_ready(f"http://127.0.0.1:{port}/health", proc, "routellm serve")
    return proc, f"http://127.0.0.1:{port}/v1"


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


# Measurements -----------------------------------------------------------------------------
def body(prompt: str) -> dict[str, Any]:
    return {"model": "routellm", "messages": [{"role": "user", "content": prompt}], "max_tokens": 1}


def sequential(url: str, texts: list[str]) -> list[float]:
    """Latency in ms of each call, one after another on one keep-alive connection."""
    import httpx

    out = []
    with httpx.Client(timeout=60) as client:
        client.post(f"{url}/chat/completions", json=body("warm-up")).raise_for_status()
        for text in texts:
            start = time.perf_counter()
            client.post(f"{url}/chat/completions", json=body(text)).raise_for_status()
            out.append((time.perf_counter() - start) * 1000)
    return out


def concurrent(url: str, texts: list[str], clients: int) -> float:
    """Requests per second with ``clients`` clients sending ``texts`` between them."""
    import httpx

    async def client(chunk: list[str]) -> None:
        async with httpx.AsyncClient(timeout=120) as http:
            for text in chunk:
                (await http.post(f"{url}/chat/completions", json=body(text))).raise_for_status()

    async def run() -> float:
        start = time.perf_counter()
        await asyncio.gather(*(client(texts[i::clients]) for i in range(clients)))
        return time.perf_counter() - start

    asyncio.run(run_warm(url))
    return len(texts) / asyncio.run(run())


async def run_warm(url: str) -> None:
    import httpx

    async with httpx.AsyncClient(timeout=120) as http:  # every worker loads its router before the clock starts
        await asyncio.gather(*(http.post(f"{url}/chat/completions", json=body(f"warm {i}")) for i in range(16)))


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--router", default=None, help="router for the server (default: the shipped default)")
    parser.add_argument("--requests", type=int, default=300, help="calls per measurement (default 300)")
    parser.add_argument("--concurrency", type=int, default=32, help="clients at once for requests/s (default 32)")
    parser.add_argument("--workers", type=int, default=2, help="the N of 'requests/s at N workers' (default 2)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--upstream", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.upstream is not None:
        run_upstream(args.upstream)
        return 0

    upstream_proc, upstream = start_upstream()
    results: dict[str, Any] = {"router": args.router or "default", "requests": args.requests,
                               "concurrency": args.concurrency, "cpus": os.cpu_count(),
                               "python": platform.python_version()}
    try:
        server_proc, server = start_server(upstream, args.router, 1)
        try:
            direct = sequential(upstream, prompts(args.requests))
            routed = sequential(server, prompts(args.requests, offset=args.requests))
            results["direct_ms"] = {"p50": pct(direct, 50), "p99": pct(direct, 99)}
            results["via_server_ms"] = {"p50": pct(routed, 50), "p99": pct(routed, 99)}
            results["overhead_ms"] = {k: results["via_server_ms"][k] - results["direct_ms"][k] for k in ("p50", "p99")}
            results["rps"] = {"1": concurrent(server, prompts(args.requests, offset=2 * args.requests),
                                              args.concurrency)}
        finally:
            stop(server_proc)
        if args.workers > 1:
            server_proc, server = start_server(upstream, args.router, args.workers)
            try:
                results["rps"][str(args.workers)] = concurrent(
                    server, prompts(args.requests, offset=3 * args.requests), args.concurrency)
            finally:
                stop(server_proc)
        results["upstream_rps"] = concurrent(upstream, prompts(args.requests, offset=4 * args.requests),
                                             args.concurrency)
    finally:
        stop(upstream_proc)
    results["load_average"] = os.getloadavg()

    d, v, o = results["direct_ms"], results["via_server_ms"], results["overhead_ms"]
    print(f"router: {results['router']}; {args.requests} calls per measurement; stand-in upstream on 127.0.0.1")
    print(f"latency direct to upstream : p50 {d['p50']:7.2f} ms   p99 {d['p99']:7.2f} ms")
    print(f"latency through the server : p50 {v['p50']:7.2f} ms   p99 {v['p99']:7.2f} ms")
    print(f"overhead added by routing  : p50 {o['p50']:7.2f} ms   p99 {o['p99']:7.2f} ms")
    for workers, rps in results["rps"].items():
        print(f"requests/s, {args.concurrency} clients, {workers} worker(s): {rps:7.1f}")
    print(f"requests/s straight to the upstream, {args.concurrency} clients: {results['upstream_rps']:7.1f}")
    print(f"load average: {' '.join(f'{x:.2f}' for x in results['load_average'])} ({results['cpus']} CPUs, shared)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
