"""The cost-controls cookbook (ledger, controller, escalation over local SmolLM2) runs offline, top to bottom."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from notebook_support import run_notebook

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
    left = re.search(r"^left a stream after its first chunk: spent \$([\d.]+)$", text, flags=re.M)
    assert left and float(left.group(1)) > 0, text[-2000:]  # a stream left early is charged, not held
    assert re.search(r"^weak   budget_exhausted ", text, flags=re.M)  # the cap was reached: calls then go weak
    assert "within the cap: True" in text
