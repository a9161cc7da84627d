"""Running a cookbook notebook in the tests (a name no other test directory uses)."""

from __future__ import annotations


def execute_notebook(path):
    """Execute a cookbook notebook top to bottom in a fresh kernel, from the repository's top
    (raises ``CellExecutionError`` on the first failing cell); the executed notebook."""
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parents[1])}})
    client.execute()
    return nb


def outputs_text(cells) -> str:
    """The text of the code ``cells``' outputs (streams and plain-text results)."""
    return "\n".join(
        o.get("text", "") or str(o.get("data", {}).get("text/plain", ""))
        for cell in cells if cell.cell_type == "code" for o in cell.outputs
    )


def run_notebook(path) -> str:
    """Execute a cookbook notebook top to bottom (raises on the first failing cell); its outputs' text."""
    return outputs_text(execute_notebook(path).cells)
