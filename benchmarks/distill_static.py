"""Distill the packaged all-MiniLM-L6-v2 into a static model2vec embedder, offline.

    HF_HUB_OFFLINE=1 python benchmarks/distill_static.py ~/.cache/routellm/model2vec/minilm-pca128-int8
    python benchmarks/distill_static.py OUT --pca-dims 256 --dtype float16

Runs every vocabulary token through MiniLM once (~2-4 min on 2 cores), reduces
the vectors with PCA and stores them quantized. 128 dims in int8 is 3.8 MB of
weights plus a 0.45 MB tokenizer. Load the result with
``Model2VecEmbedder(OUT)`` or ``get_embedder(OUT)``. Needs ``model2vec[distill]``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported: never download


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="output directory")
    parser.add_argument("--pca-dims", type=int, default=128, help="dimensions kept (default: 128)")
    parser.add_argument("--dtype", default="int8", choices=["float32", "float16", "int8"], help="stored type (default: int8)")
    args = parser.parse_args(argv)

    from model2vec.distill import distill

    from shared_core.embeddings import default_model_path

    model = distill(model_name=str(default_model_path()), pca_dims=args.pca_dims, quantize_to=args.dtype, device="cpu")
    out = Path(args.out).expanduser()
    model.save_pretrained(str(out))
    sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()}
    print(f"wrote {out}: " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sizes.items()))
    print(f"total {sum(sizes.values()) / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
