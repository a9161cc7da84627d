"""The LlamaIndex cookbook runs top to bottom offline and shows what it claims."""

from __future__ import annotations

from pathlib import Path

import pytest

from notebook_support import execute_notebook, outputs_text

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[2] / "cookbook" / "llamaindex_routellm.ipynb"


@pytest.mark.enable_socket  # the Jupyter kernel talks to nbclient over local ZMQ sockets
@pytest.mark.slow  # a kernel start and the MiniLM model: about 30 s on 2 cores
def test_llamaindex_cookbook_runs_offline():
    code = [c for c in execute_notebook(NOTEBOOK).cells if c.cell_type == "code"]
    output = outputs_text(code)
    events = outputs_text([c for c in code if "LLMEventCounter" in c.source])
    assert "5 documents" in output
    # One question each way through the query engine, with its decision.
    assert "decision: weak" in output and "decision: strong" in output
    assert "[weak-model] answer" in output and "[strong-model] answer" in output
    # One LLM call's events, from the chosen model only.
    assert "1 x LLMCompletionStartEvent weak-model" in events
    assert "1 x LLMCompletionEndEvent" in events
    assert "strong-model" not in events
    # The agent used its tool, with one task on each side.
    assert "[weak-model] The product is" in output
    assert "[strong-model] The product is" in output
    assert output.count("(tool calls: ['multiply'])") == 2
    # The router in use is stated; a missing default router is said loudly.
    assert "router: the shipped default" in output or "THE DEFAULT ROUTER IS MISSING" in output
