"""Running a cookbook notebook in the tests (a name no other test directory uses)."""

from __future__ import annotations


def run_notebook(path) -> str:
    """Execute a cookbook notebook top to bottom (raises on the first failing cell); its outputs' text."""
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parents[1])}})
    client.execute()
    return "\n".join(
        o.get("text", "") or str(o.get("data", {}).get("text/plain", ""))
        for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs
    )

