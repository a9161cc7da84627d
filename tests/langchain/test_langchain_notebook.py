"""The cookbook notebook runs offline, top to bottom."""

from __future__ import annotations

from pathlib import Path

import pytest

from notebook_support import run_notebook

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[2] / "cookbook" / "langchain_routellm.ipynb"


@pytest.mark.slow
@pytest.mark.enable_socket  # the Jupyter kernel talks to nbclient over local ZMQ sockets
def test_cookbook_runs_top_to_bottom():
    text = run_notebook(NOTEBOOK)
    assert "strong share:" in text
    assert "The tool said: It is sunny and 21 C in Lisbon." in text  # the agent finished its tool loop
    assert "'from': 'weak', 'model': 'small-model'" in text  # the fallback was recorded
