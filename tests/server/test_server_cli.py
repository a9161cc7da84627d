"""``routellm serve`` as a process: start-up, access log, graceful shutdown, workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from importlib.metadata import entry_points

import httpx
import pytest

from server_support import STRONG_KEY, WEAK_KEY, closed_port


def start_serve(strong, weak, *extra, env=None):
    port = closed_port()
    cmd = [sys.executable, "-m", "shared_core.server", "--strong-base-url", strong.url, "--strong-model", "big",
           "--weak-base-url", weak.url, "--weak-model", "small", "--router", "random", "--threshold", "0.5",
           "--port", str(port), *extra]
    proc_env = {**os.environ, "ROUTELLM_STRONG_API_KEY": STRONG_KEY, "ROUTELLM_WEAK_API_KEY": WEAK_KEY, **(env or {})}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=proc_env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"routellm serve exited: {proc.stderr.read()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("routellm serve did not answer /health within 60 s")


def stop(proc, timeout=30):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.stderr.read()


def test_sigterm_drains_in_flight_requests_and_logs_without_prompts(strong, weak):
    strong.mode = weak.mode = "stall"
    strong.delay = weak.delay = 1.5
    proc, url = start_serve(strong, weak)
    result = {}

    def slow_call():
        result["r"] = httpx.post(f"{url}/v1/chat/completions", timeout=30,
                                 json={"messages": [{"role": "user", "content": "secret prompt text"}]})

    caller = threading.Thread(target=slow_call)
    caller.start()
    time.sleep(0.5)  # the request is now waiting on its upstream
    proc.send_signal(signal.SIGTERM)
    caller.join(timeout=30)
    stderr = stop(proc)
    assert proc.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down
    assert result["r"].status_code == 200, result["r"].text  # answered although shutdown began first
    assert "accepts loopback clients only" in stderr
    access = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert len(access) == 1 and access[0]["status"] == 200 and access[0]["role"] in ("strong", "weak")
    assert access[0]["model"] == ("big" if access[0]["role"] == "strong" else "small")
    assert "secret prompt text" not in stderr and STRONG_KEY not in stderr and WEAK_KEY not in stderr


def test_log_prompts_puts_messages_in_the_access_log(strong, weak):
    proc, url = start_serve(strong, weak, "--log-prompts")
    httpx.post(f"{url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "log me"}]})
    stderr = stop(proc)
    access = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert access[0]["messages"] == [{"role": "user", "content": "log me"}]


def test_bad_settings_exit_2_with_the_reason(strong, weak):
    proc = subprocess.run([sys.executable, "-m", "shared_core.server", "--strong-base-url", strong.url,
                           "--strong-model", "big", "--weak-base-url", weak.url, "--weak-model", "small",
                           "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if not k.startswith("ROUTELLM_SERVE")})
    assert proc.returncode == 2
    assert "'0.0.0.0' is not a loopback address and no client tokens are configured" in proc.stderr


def test_serve_is_a_routellm_command():
    names = {ep.name: ep.value for ep in entry_points(group="routellm.commands")}
    if "serve" not in names:
        pytest.skip("the installed package metadata predates the serve entry point; reinstall (pip install -e .)")
    assert names["serve"] == "shared_core.server.cli:add_parser"
    from shared_core.cli import build_parser

    args = build_parser().parse_args(["serve", "--strong-base-url", "http://127.0.0.1:1/v1", "--port", "7"])
    assert args.port == 7 and args.func.__module__ == "shared_core.server.cli"


@pytest.mark.slow
def test_two_workers_share_the_metrics(strong, weak, tmp_path):
    proc, url = start_serve(strong, weak, "--workers", "2", env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
    try:
        for i in range(6):
            r = httpx.post(f"{url}/v1/chat/completions", json={"messages": [{"role": "user", "content": f"q{i}"}]})
            assert r.status_code == 200
        text = httpx.get(f"{url}/metrics").text
    finally:
        stop(proc)
    total = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line.startswith('routellm_requests_total{path="/v1/chat/completions"'))
    assert total == 6.0
    assert len({f.stem.rsplit("_", 1)[-1] for f in tmp_path.glob("*.db")}) == 2  # each worker wrote its own values


def test_a_budget_without_a_bound_for_unknown_costs_warns_at_start_up(strong, weak, tmp_path):
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"big": [10.0, 30.0], "small": [0.5, 1.5]}))
    proc, _ = start_serve(strong, weak, "--prices", str(prices), "--strong-budget", "5")
    stderr = stop(proc)
    assert "has no bound on its cost, so it ends the budget's period" in stderr
    assert "--strong-max-output-tokens N" in stderr
    proc, _ = start_serve(strong, weak, "--prices", str(prices), "--strong-budget", "5",
                          "--strong-max-output-tokens", "16384")
    stderr = stop(proc)
    assert "has no bound on its cost" not in stderr and "strong_max_output_tokens 16384" in stderr
