"""The cost-controls cookbook (ledger, controller, escalation over local SmolLM2) runs offline, top to bottom."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lc_support import run_notebook

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("llama_cpp")

NOTEBOOK = Path(__file__).resolve().parents[2] / "cookbook" / "cost_controls.ipynb"


@pytest.mark.slow
@pytest.mark.enable_socket  # the Jupyter kernel talks to nbclient over local ZMQ sockets
def test_cost_controls_cookbook_runs_top_to_bottom():
    text = run_notebook(NOTEBOOK)
    summary = re.search(r"^8 calls, (\d) strong \([\d.]+%\), cost \$[\d.]+ vs \$[\d.]+ all-strong", text, flags=re.M)
    assert summary, text[-2000:]  # the ledger priced all eight calls
    assert "'strong_share':" in text and "'savings':" in text
    assert "True" in text  # the controller's state round-trips
