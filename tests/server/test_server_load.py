"""A bounded load test on 127.0.0.1: 200 concurrent clients against the routing
server (the shipped default router, as ``routellm serve`` builds it) over a
stand-in upstream. Zero errors, and every response's decision (headers and body)
equal to the library's (:meth:`RoutingEngine.decide`) for the same prompt (the
role exactly, the score to 1e-6).
Stops by itself: every request has a timeout and the whole run a deadline.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import httpx
import pytest

from server_support import ServerThread
from shared_core.engine import RoutingEngine
from shared_core.server.app import create_app
from shared_core.server.config import load_config

pytestmark = pytest.mark.slow

CLIENTS = 200
REQUESTS_PER_CLIENT = 3
DEADLINE_S = 240

_SUBJECTS = ["the French Revolution", "photosynthesis", "a binary search tree", "the Pythagorean theorem",
             "inflation", "quantum entanglement", "a haiku about rain", "the rules of chess", "TCP handshakes",
             "Bayes' theorem"]
_FORMS = ["Explain {s} to a child ({n}).", "Prove a key property of {s} rigorously, step by step. Case {n}.",
          "Write {n} sentences about {s}.", "What is {s}? Answer in one word if you can. #{n}",
          "Compare {s} with something similar and justify every claim. Case {n}.",
          "Give me a fun fact about {s} (variant {n})."]


def prompts(n: int) -> list[str]:
    out = []
    for i in range(n):
        form = _FORMS[i % len(_FORMS)]
        out.append(form.format(s=_SUBJECTS[(i // len(_FORMS)) % len(_SUBJECTS)], n=i))
    return out


def test_200_concurrent_clients_zero_errors_library_decisions(strong, weak):
    config = load_config({"strong_base_url": strong.url, "strong_model": "strong-model",
                          "weak_base_url": weak.url, "weak_model": "weak-model"}, env={})
    texts = prompts(CLIENTS * REQUESTS_PER_CLIENT)
    assert len(set(texts)) == len(texts)
    library = RoutingEngine.from_settings()  # what the Python wrappers build with no settings
    conversations = [[("system", "Be brief."), ("user", t)] for t in texts]  # what each request sends
    expected = dict(zip(texts, library.decide(conversations)))
    assert {d.role.value for d in expected.values()} == {"strong", "weak"}

    with ServerThread(create_app(config), backlog=4096, limit_concurrency=None) as server:
        url = f"{server.url}/v1/chat/completions"
        latencies: list[float] = []
        errors: list[str] = []
        mismatches: list[str] = []

        async def client(k: int) -> None:
            async with httpx.AsyncClient(timeout=60) as http:
                for j in range(REQUESTS_PER_CLIENT):
                    text = texts[k * REQUESTS_PER_CLIENT + j]
                    stream = (k + j) % 4 == 0
                    body = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}],
                            "stream": stream}
                    started = time.perf_counter()
                    try:
                        if stream:
                            async with http.stream("POST", url, json=body) as r:
                                await r.aread()
                                record = None
                        else:
                            r = await http.post(url, json=body)
                            record = r.json().get("routellm") if r.status_code == 200 else None
                    except httpx.HTTPError as exc:
                        errors.append(f"{type(exc).__name__}: {exc}")
                        continue
                    latencies.append(time.perf_counter() - started)
                    if r.status_code != 200:
                        errors.append(f"HTTP {r.status_code}: {r.text[:200]}")
                        continue
                    want = expected[text]
                    got_role, got_score = r.headers["x-routellm-role"], float(r.headers["x-routellm-score"])
                    # roles exactly; scores to 1e-6 (float32 embeddings: batch composition moves the last bits)
                    if got_role != want.role.value or abs(got_score - want.score) > 1e-6 or (
                            record is not None and (record["role"] != want.role.value
                                                    or abs(record["score"] - want.score) > 1e-6)):
                        mismatches.append(f"{text!r}: server {got_role} {got_score}, library {want.role.value} "
                                          f"{want.score}")

        async def run() -> float:
            started = time.perf_counter()
            await asyncio.wait_for(asyncio.gather(*(client(k) for k in range(CLIENTS))), DEADLINE_S)
            return time.perf_counter() - started

        elapsed = asyncio.run(run())

    total = CLIENTS * REQUESTS_PER_CLIENT
    assert errors == [], f"{len(errors)} errors, first: {errors[:3]}"
    assert mismatches == [], f"{len(mismatches)} decisions differ from the library's, first: {mismatches[:3]}"
    assert len(latencies) == total
    assert len(strong.requests) + len(weak.requests) == total
    q = statistics.quantiles(latencies, n=100)
    print(f"\nload: {CLIENTS} concurrent clients, {total} requests ({total // 4} streamed) in {elapsed:.2f} s = "
          f"{total / elapsed:.0f} req/s; latency p50 {q[49] * 1000:.0f} ms, p99 {q[98] * 1000:.0f} ms; "
          f"strong {len(strong.requests)}, weak {len(weak.requests)}; 0 errors, decisions all equal the library's")
