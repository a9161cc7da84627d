"""The routing app as a Ray Serve deployment, on a local Ray cluster this test
starts (loopback only), over the stand-in upstreams: the same answers, headers
and decisions as the library's, streamed and not, from two replicas."""

from __future__ import annotations

import os

import httpx
import pytest

pytestmark = pytest.mark.slow

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

from server_support import STRONG_KEY, WEAK_KEY, closed_port, sse_chunks  # noqa: E402
from shared_core.engine import RoutingEngine  # noqa: E402
from shared_core.server.ray_serve import build_deployment  # noqa: E402

PROMPTS = ["Prove that there are infinitely many primes.", "Say hello.", "What is 2 + 2?",
           "Derive the closed form of the Fibonacci sequence and prove it by induction.",
           "Write a haiku about rain.", "Explain how TCP congestion control works in detail."]


@pytest.fixture(scope="module")
def ray_serve_url(_standins):
    strong, weak = _standins["strong"], _standins["weak"]
    saved = {k: os.environ.get(k) for k in ("ROUTELLM_STRONG_API_KEY", "ROUTELLM_WEAK_API_KEY")}
    # Replicas read the keys from their own environment, which the local cluster inherits.
    os.environ.update(ROUTELLM_STRONG_API_KEY=STRONG_KEY, ROUTELLM_WEAK_API_KEY=WEAK_KEY)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        port = closed_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        flags = {"strong_base_url": strong.url, "strong_model": "strong-model",
                 "weak_base_url": weak.url, "weak_model": "weak-model"}
        serve.run(build_deployment(flags, replicas=2), name="routellm", route_prefix="/")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        serve.shutdown()
        ray.shutdown()
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def test_ray_serve_answers_like_the_library(ray_serve_url, strong, weak):
    replicas = serve.status().applications["routellm"].deployments["routellm"].replica_states
    assert replicas == {"RUNNING": 2}
    library = RoutingEngine.from_settings()  # the settings the deployment was given: all defaults
    expected = library.decide([[("user", p)] for p in PROMPTS])
    for prompt, want in zip(PROMPTS, expected):
        r = httpx.post(f"{ray_serve_url}/chat/completions", timeout=60,
                       json={"messages": [{"role": "user", "content": prompt}], "temperature": 0.3})
        assert r.status_code == 200, r.text
        assert r.headers["x-routellm-role"] == want.role.value
        assert float(r.headers["x-routellm-score"]) == pytest.approx(want.score, abs=1e-6)
        assert r.json()["routellm"]["router"] == want.router
    assert len(strong.requests) == sum(d.is_strong for d in expected)
    assert len(weak.requests) == len(PROMPTS) - len(strong.requests)
    assert all(h["authorization"] == f"Bearer {STRONG_KEY}" for h in strong.headers)
    assert all(h["authorization"] == f"Bearer {WEAK_KEY}" for h in weak.headers)


def test_ray_serve_streams_and_errors(ray_serve_url, weak):
    with httpx.stream("POST", f"{ray_serve_url}/chat/completions", timeout=60,
                      json={"messages": [{"role": "user", "content": "Say hello."}], "stream": True}) as r:
        body = r.read()
    assert r.status_code == 200
    assert r.headers["x-routellm-role"] in ("strong", "weak")
    assert body == b"".join(sse_chunks(r.headers["x-routellm-model"], weak.words))  # both stand-ins say the same
    bad = httpx.post(f"{ray_serve_url}/chat/completions", content=b"{oops", timeout=60)
    assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]["message"]
    models = httpx.get(f"{ray_serve_url}/models", timeout=60).json()
    assert [m["id"] for m in models["data"]] == ["routellm"]
