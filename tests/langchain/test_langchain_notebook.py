"""The cookbook notebook runs offline, top to bottom."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[2] / "cookbook" / "langchain_routellm.ipynb"


@pytest.mark.slow
@pytest.mark.enable_socket  # the Jupyter kernel talks to nbclient over local ZMQ sockets
def test_cookbook_runs_top_to_bottom():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parents[1])}})
    client.execute()  # raises CellExecutionError on the first failing cell
    text = "\n".join(
        o.get("text", "") or str(o.get("data", {}).get("text/plain", ""))
        for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs
    )
    assert "strong share:" in text
    assert "The tool said: It is sunny and 21 C in Lisbon." in text  # the agent finished its tool loop
    assert "'from': 'weak', 'model': 'small-model'" in text  # the fallback was recorded
