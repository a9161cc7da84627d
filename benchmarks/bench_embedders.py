"""Speed levers of the embedding step, and how far each moves the vectors.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_embedders.py
    python benchmarks/bench_embedders.py --variants fp32-b8,onnx,onnx-int8 --single 100 --json results/levers.json
    python benchmarks/bench_embedders.py --static-model path/to/model2vec-dir   # adds a static embedder

Every variant embeds the same MMLU prompts. Variants are interleaved prompt by
prompt (and batch by batch), so a load spike on a shared machine hits them all
alike. Reported per variant: single-prompt p50/p95 latency, batched throughput
(texts/s on batches of ``--batch-size``), and closeness to the fp32
sentence-transformers vectors: mean cosine per text (same dimension only) and
the Spearman correlation of all pairwise similarities (any dimension).

Variants (all all-MiniLM-L6-v2 from the packaged weights unless noted):

* ``fp32-b1``, ``fp32-b8``, ``fp32-b16``, ``fp32-b64``: torch fp32, length-sorted batches
  of 1/8/16/64 (on a batch of 64 texts, ``fp32-b64`` is one padded batch);
* ``int8``: torch dynamic int8 quantization of the Linear layers (per-channel weights;
  per-tensor weights moved the vectors 3x more: mean cosine 0.934 vs 0.979);
* ``onnx``, ``onnx-int8``: :class:`shared_core.embeddings.OnnxEmbedder` (ONNX Runtime on a
  local ``torch.onnx`` export; int8 weights per channel: mean cosine 0.994 vs 0.952 per tensor);
* ``static``: a model2vec static model given with ``--static-model``.

``--torch-threads`` sets torch's (and ONNX Runtime's) intra-op threads.

Needs the router data (not shipped with the package): RouteLLM's public MMLU
answer files (lm-sys/RouteLLM), read from ``--data-dir``, else
``$ROUTELLM_DATA_DIR``, else ``../shared/data``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

Embed = Callable[[list[str]], np.ndarray]
ALL_VARIANTS = ("fp32-b1", "fp32-b8", "fp32-b16", "fp32-b64", "int8", "onnx", "onnx-int8", "static")


def _sorted_batches(embed_batch: Embed, batch_size: int) -> Embed:
    def embed(texts: list[str]) -> np.ndarray:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: np.ndarray | None = None
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            vecs = embed_batch([texts[i] for i in idx])
            if out is None:
                out = np.empty((len(texts), vecs.shape[1]), dtype=np.float32)
            out[idx] = vecs
        assert out is not None
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    return embed


def build_variants(names: list[str], args: argparse.Namespace) -> dict[str, Embed]:
    import torch

    from shared_core.embeddings import SentenceTransformerEmbedder

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    st = SentenceTransformerEmbedder(batch_size=8).load()
    model = st.model

    def st_batch(m: Any) -> Embed:
        return lambda batch: m.encode(batch, batch_size=len(batch), show_progress_bar=False, convert_to_numpy=True)

    out: dict[str, Embed] = {}
    for name in names:
        if name == "fp32-b1":
            out[name] = _sorted_batches(st_batch(model), 1)
        elif name == "fp32-b8":
            out[name] = _sorted_batches(st_batch(model), 8)
        elif name == "fp32-b16":
            out[name] = _sorted_batches(st_batch(model), 16)
        elif name == "fp32-b64":
            out[name] = _sorted_batches(st_batch(model), 64)
        elif name == "int8":
            import copy

            qconfig = {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}
            qmodel = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), qconfig, dtype=torch.qint8)
            out[name] = _sorted_batches(st_batch(qmodel), 8)
        elif name in ("onnx", "onnx-int8"):
            from shared_core.embeddings import OnnxEmbedder

            onnx = OnnxEmbedder(quantize="int8" if name == "onnx-int8" else None, threads=args.torch_threads).load()
            out[name] = onnx.embed
        elif name == "static":
            if not args.static_model:
                raise SystemExit("variant 'static' needs --static-model DIR (a model2vec directory)")
            from model2vec import StaticModel

            sm = StaticModel.from_pretrained(args.static_model)
            out[name] = lambda batch, sm=sm: _norm(sm.encode(batch, batch_size=1024))
        else:
            raise SystemExit(f"unknown variant {name!r}; expected some of: {', '.join(ALL_VARIANTS)}")
    return out


def _norm(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def measure(variants: dict[str, Embed], single: list[str], batches: list[list[str]], reference: np.ndarray,
            quality_texts: list[str]) -> dict[str, dict[str, float]]:
    names = list(variants)
    for name in names:  # warm-up
        variants[name](single[:4])
    lat: dict[str, list[float]] = {n: [] for n in names}
    for k, p in enumerate(single):
        for name in names[k % len(names):] + names[: k % len(names)]:
            start = time.perf_counter()
            variants[name]([p])
            lat[name].append(time.perf_counter() - start)
    busy = {n: 0.0 for n in names}
    count = {n: 0 for n in names}
    for k, batch in enumerate(batches):
        for name in names[k % len(names):] + names[: k % len(names)]:
            start = time.perf_counter()
            variants[name](batch)
            busy[name] += time.perf_counter() - start
            count[name] += len(batch)
    iu = np.triu_indices(len(quality_texts), 1)
    ref_sims = (reference @ reference.T)[iu]
    result = {}
    for name in names:
        vecs = variants[name](quality_texts)
        ms = [x * 1000 for x in lat[name]]
        result[name] = {
            "single_p50_ms": statistics.median(ms),
            "single_p95_ms": float(np.percentile(ms, 95)),
            "batched_texts_per_s": count[name] / busy[name],
            "mean_cosine": float(np.mean(np.sum(vecs * reference, axis=1))) if vecs.shape == reference.shape else None,
            "min_cosine": float(np.min(np.sum(vecs * reference, axis=1))) if vecs.shape == reference.shape else None,
            "pairwise_spearman": spearman((vecs @ vecs.T)[iu], ref_sims),
            "dim": int(vecs.shape[1]),
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="fp32-b1,fp32-b8,fp32-b16,fp32-b64,int8,onnx,onnx-int8")
    parser.add_argument("--static-model", default=None, help="model2vec directory for the 'static' variant")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--single", type=int, default=60, help="prompts timed one at a time (default: 60)")
    parser.add_argument("--batches", type=int, default=3, help="batches timed (default: 3)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--quality", type=int, default=500, help="prompts for the closeness numbers (default: 500)")
    parser.add_argument("--torch-threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    from shared_core.datasets import load_mmlu
    from shared_core.embeddings import SentenceTransformerEmbedder

    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    if args.static_model and "static" not in names:
        names.append("static")
    prompts = sorted(set(load_mmlu(args.data_dir)["prompt"]))
    rng = np.random.default_rng(args.seed)
    pick = [prompts[i] for i in rng.choice(len(prompts), args.single + args.batches * args.batch_size + args.quality, replace=False)]
    single = pick[: args.single]
    rest = pick[args.single : args.single + args.batches * args.batch_size]
    batches = [rest[i : i + args.batch_size] for i in range(0, len(rest), args.batch_size)]
    quality_texts = pick[len(pick) - args.quality :]

    variants = build_variants(names, args)
    reference = SentenceTransformerEmbedder().embed(quality_texts)
    import torch

    result = {"torch_threads": torch.get_num_threads(), "load_average": os.getloadavg()[0],
              "variants": measure(variants, single, batches, reference, quality_texts)}
    head = f"{'variant':<11} {'p50 ms':>7} {'p95 ms':>7} {'texts/s':>8} {'mean cos':>9} {'min cos':>8} {'pair rho':>8} {'dim':>4}"
    print(f"torch threads {result['torch_threads']}, load average {result['load_average']:.2f}, "
          f"{args.single} single prompts, {len(batches)}x{args.batch_size} batched, {args.quality} for closeness")
    print(head)
    for name, r in result["variants"].items():
        cos = "n/a" if r["mean_cosine"] is None else f"{r['mean_cosine']:.4f}"
        mn = "n/a" if r["min_cosine"] is None else f"{r['min_cosine']:.4f}"
        print(f"{name:<11} {r['single_p50_ms']:>7.1f} {r['single_p95_ms']:>7.1f} {r['batched_texts_per_s']:>8.0f} "
              f"{cos:>9} {mn:>8} {r['pairwise_spearman']:>8.4f} {r['dim']:>4}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
