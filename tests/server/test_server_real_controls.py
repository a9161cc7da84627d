"""The server's cost controls with SmolLM2-135M-Instruct (llama-cpp-python's
OpenAI-compatible server) as both upstreams, called with the official ``openai``
client over real HTTP on 127.0.0.1: escalation of a cut-off weak answer, the strong
budget charged from real usage, and a real upstream's stream that reports no usage.

Needs ``ROUTELLM_TEST_SERVER_URL`` (e.g. http://127.0.0.1:8765/v1), which
scripts/test.sh sets after starting scripts/llama_server.sh.
"""

from __future__ import annotations

import os

import httpx
import pytest

pytestmark = pytest.mark.server

URL = os.environ.get("ROUTELLM_TEST_SERVER_URL")
if not URL:
    pytest.skip("ROUTELLM_TEST_SERVER_URL is not set; start the local SmolLM2 server (scripts/llama_server.sh "
                "start) and export its /v1 URL", allow_module_level=True)
openai = pytest.importorskip("openai")

from server_support import KeywordRouter, ServerThread  # noqa: E402
from shared_core.engine import RoutingEngine  # noqa: E402
from shared_core.server.app import create_app  # noqa: E402
from shared_core.server.config import load_config  # noqa: E402

PRICES = {"smollm2-as-strong": [10.0, 30.0], "smollm2-as-weak": [0.5, 1.5]}
EASY = "Say hello in one short sentence."
HARD_Q = "In one sentence, prove that 2 + 2 = 4."


@pytest.fixture
def server():
    config = load_config({"strong_base_url": URL, "strong_model": "smollm2-as-strong", "weak_base_url": URL,
                          "weak_model": "smollm2-as-weak", "upstream_timeout": 120, "prices": PRICES,
                          "strong_budget": 1.0, "escalate_on": "empty,refusal,length"}, env={})
    with ServerThread(create_app(config, RoutingEngine(KeywordRouter(), 0.5))) as thread:
        yield thread


def _metrics(server) -> dict[str, float]:
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


def test_cut_off_weak_answer_escalates_and_both_are_priced_once(server):
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="-", max_retries=0, timeout=120)
    raw = client.chat.completions.with_raw_response.create(
        model="routellm", messages=[{"role": "user", "content": EASY}], max_tokens=3, temperature=0)
    completion = raw.parse()
    assert raw.headers["x-routellm-escalated-from"] == "weak"  # 3 tokens: the weak answer was cut off
    assert raw.headers["x-routellm-escalation-reason"] == "length: the answer was cut off (finish reason 'length')"
    assert raw.headers["x-routellm-role"] == "strong" and completion.model == "smollm2-as-strong"
    assert completion.choices[0].finish_reason == "length"  # the strong answer is returned as it is
    rejected = completion.model_extra["routellm"]["escalations"][0]
    assert rejected["model"] == "smollm2-as-weak" and rejected["usage"]["completion_tokens"] == 3
    strong_usage = completion.usage
    metrics = _metrics(server)
    for role, usage in (("weak", rejected["usage"]), ("strong", strong_usage.model_dump())):
        assert metrics[f'routellm_tokens_total{{kind="prompt",role="{role}"}}'] == usage["prompt_tokens"] > 0
        assert metrics[f'routellm_tokens_total{{kind="completion",role="{role}"}}'] == usage["completion_tokens"]
    strong_cost = (strong_usage.prompt_tokens * 10.0 + strong_usage.completion_tokens * 30.0) / 1e6
    assert metrics['routellm_cost_dollars_total{role="strong"}'] == pytest.approx(strong_cost, abs=1e-12)
    assert metrics["routellm_budget_spent_dollars"] == pytest.approx(strong_cost, abs=1e-12)  # charged once
    assert metrics['routellm_escalations_total{check="length",from_role="weak"}'] == 1.0


def test_a_real_stream_without_usage_spends_the_budget(server):
    """llama-cpp-python sends no usage chunk in streams: the strong answer's cost is unknown,
    so the period's budget counts as spent and the next strong-worthy call goes weak."""
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="-", max_retries=0, timeout=120)
    with client.chat.completions.with_streaming_response.create(
            model="routellm", messages=[{"role": "user", "content": HARD_Q}], max_tokens=4, temperature=0,
            stream=True, stream_options={"include_usage": True}) as raw:
        assert raw.headers["x-routellm-role"] == "strong"
        chunks = list(raw.parse())
    assert chunks and all(c.usage is None for c in chunks)
    metrics = _metrics(server)
    assert metrics['routellm_unpriced_answers_total{role="strong"}'] == 1.0
    assert metrics["routellm_budget_remaining_dollars"] <= 0.0
    raw = client.chat.completions.with_raw_response.create(
        model="routellm", messages=[{"role": "user", "content": HARD_Q}], max_tokens=4, temperature=0)
    assert (raw.headers["x-routellm-role"], raw.headers["x-routellm-reason"]) == ("weak", "budget_exhausted")
