"""Embed every prompt of the router data once, into the on-disk embedding cache.

Training and evaluation then get cache hits instead of re-embedding ~16k prompts.
The texts are exactly those the readers in :mod:`shared_core.datasets` return:
MMLU ``prompt`` columns (57 csv files), GSM8K ``prompt``s, MT-Bench turn 1 and
turn 2, arena-bench ``turns[0]``, and, where they are in the data directory or
installed, the MMLU-Pro and AlpacaEval prompts and the chat-corpus openings.

    OPENBLAS_NUM_THREADS=1 python benchmarks/warm_cache.py            # default MiniLM
    python benchmarks/warm_cache.py --embedder openai:text-embedding-3-small
    python benchmarks/warm_cache.py --data-dir ../shared/data --cache-dir /tmp/cache

The cache lives in ``$ROUTELLM_CACHE_DIR`` or ``~/.cache/routellm``; several
processes may warm or read it at the same time.

Needs the router data (not shipped with the package): RouteLLM's public
evaluation files (lm-sys/RouteLLM: MMLU, GSM8K, MT-Bench) and arena-hard-auto's
arena prompts (lmarena/arena-hard-auto), read from ``--data-dir``, else
``$ROUTELLM_DATA_DIR``, else ``../shared/data``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: BLAS threads slow embedding down

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from shared_core.datasets import resolve_data_dir  # noqa: E402
from shared_core.embeddings import CachedEmbedder, SentenceTransformerEmbedder, get_embedder  # noqa: E402


def _jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def data_prompts(data_dir: str | Path | None = None) -> dict[str, list[str]]:
    """Every prompt of the router data directory, by source."""
    root = resolve_data_dir(data_dir)
    mmlu = [
        p
        for f in sorted((root / "routellm" / "mmlu" / "responses").glob("mmlu_*.csv"))
        for p in pd.read_csv(f)["prompt"].astype(str)
    ]
    gsm8k = list(pd.read_csv(root / "routellm" / "gsm8k" / "gsm8k_responses.csv")["prompt"].astype(str))
    mt_bench = [t for q in _jsonl(root / "routellm" / "mt_bench" / "question.jsonl") for t in q["turns"][:2]]
    arena = [q["turns"][0] for q in _jsonl(root / "arena-bench-v1" / "question.jsonl")]
    out = {"mmlu": mmlu, "gsm8k": gsm8k, "mt_bench": mt_bench, "arena_bench": arena}
    from shared_core import datasets

    if (root / "mmlu_pro").is_dir():
        out["mmlu_pro"] = datasets.load_mmlu_pro(root)["prompt"].tolist()
    if (root / "alpaca_eval").is_dir():
        out["alpaca_eval"] = datasets.load_alpaca_eval(root)[0]["prompt"].tolist()
    try:
        out["chat_corpus"] = datasets.load_chat_corpus()["prompt"].tolist()
    except datasets.DataError:  # the chatterbot-corpus package is not installed: nothing to warm
        pass
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="router data directory (default: ../shared/data)")
    parser.add_argument("--embedder", default=None, help="embedder spec (default: minilm)")
    parser.add_argument("--cache-dir", default=None, help="cache directory (default: $ROUTELLM_CACHE_DIR or ~/.cache/routellm)")
    parser.add_argument("--chunk", type=int, default=512, help="texts per cache write (default: 512)")
    parser.add_argument(
        "--torch-threads", type=int, default=1,
        help="torch threads for a local model (default: 1; on a busy 2-core machine 2 threads were 5x slower)",
    )
    parser.add_argument(
        "--reverse", action="store_true",
        help="walk the texts last to first, to share the work with a warm run already going forward",
    )
    args = parser.parse_args(argv)

    sources = data_prompts(args.data_dir)
    texts = list(dict.fromkeys(t for ts in sources.values() for t in ts))
    if args.reverse:
        texts.reverse()
    inner = get_embedder(args.embedder)
    if isinstance(inner, SentenceTransformerEmbedder):
        inner.torch_threads = args.torch_threads  # a setting, applied when the model loads
    embedder = CachedEmbedder(inner, args.cache_dir, strict=True)  # warming a cache that cannot be written is an error
    print(
        ", ".join(f"{k}: {len(v)}" for k, v in sources.items()) + f"; {len(texts)} unique texts",
        f"-> {embedder.name} cache in {embedder.cache.path}",
        file=sys.stderr,
    )
    start = time.perf_counter()
    # Chunks, so that an interrupted run keeps what it embedded and other
    # processes get hits while it is still running.
    with tqdm(total=len(texts), desc=f"embedding with {embedder.name}", unit="text", dynamic_ncols=True) as bar:
        for i in range(0, len(texts), args.chunk):
            chunk = texts[i : i + args.chunk]
            embedder.embed(chunk)
            bar.update(len(chunk))
    print(
        f"{len(texts)} texts of dim {embedder.dim} cached in {time.perf_counter() - start:.1f} s "
        f"({embedder.cache.count(embedder.space)} in this embedder's space)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
