"""The LlamaIndex cookbook runs top to bottom offline and shows what it claims."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "cookbook" / "llamaindex_routellm.ipynb"


def _text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", "") or out.get("data", {}).get("text/plain", ""))
    return "".join(parts)


@pytest.mark.enable_socket  # the Jupyter kernel talks to nbclient over local ZMQ sockets
@pytest.mark.slow  # a kernel start and the MiniLM model: about 30 s on 2 cores
def test_llamaindex_cookbook_runs_offline(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    code = [c for c in nb.cells if c.cell_type == "code"]
    output = "\n".join(_text(c) for c in code)
    events = next(_text(c) for c in code if "LLMEventCounter" in c.source)
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
