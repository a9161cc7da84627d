"""Make the int8 all-MiniLM-L6-v2 ONNX graph that ships in the package.

    python scripts/export_packaged_embedder.py   # needs the train extra (torch, onnx)

Writes ``model.onnx``, ``tokenizer.json`` and ``meta.json`` (with the file's SHA-256
and the versions that made it) into ``shared_core/embeddings/models/all-MiniLM-L6-v2-int8/``.
The export depends on the torch / onnx / onnxruntime versions of the day, which is
why the result is shipped rather than made on each user's machine: run this only
to change the shipped embedder, then retrain the shipped routers
(``scripts/train_default.py``), whose configs record the new hash.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from shared_core.embeddings import PACKAGED_DIR, SentenceTransformerEmbedder
from shared_core.embeddings.onnx_runtime import MODEL_FILE, export_onnx


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        exported = export_onnx(SentenceTransformerEmbedder(), "int8", Path(tmp))
        PACKAGED_DIR.mkdir(parents=True, exist_ok=True)
        for path in exported.iterdir():
            shutil.copy2(path, PACKAGED_DIR / path.name)
    size = (PACKAGED_DIR / MODEL_FILE).stat().st_size
    print(f"wrote {PACKAGED_DIR} ({size / 1e6:.1f} MB model)")
    print((PACKAGED_DIR / "meta.json").read_text())


if __name__ == "__main__":
    main()
