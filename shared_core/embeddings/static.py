"""Static (model2vec) embeddings: a token-vector table, ~0.5 ms a prompt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shared_core.embeddings.base import Embedder, LazyModel, l2_normalize
from shared_core.embeddings.sentence_transformer import offline_load
from shared_core.errors import ConfigError, EmbeddingError


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
        self._model = LazyModel()

    def load(self) -> "Model2VecEmbedder":
        self._model.get(self._load_model)
        return self

    def _load_model(self) -> Any:
        try:
            from model2vec import StaticModel
        except ModuleNotFoundError as exc:
            raise EmbeddingError(
                f"embedder {self.name!r} needs the model2vec package; run: pip install model2vec"
            ) from exc
        try:
            with offline_load():
                return StaticModel.from_pretrained(self.path)
        except Exception as exc:  # noqa: BLE001 - model2vec raises many types; re-raised naming the directory
            raise EmbeddingError(f"could not load model2vec model {self.path!r}: {exc}") from exc

    @property
    def dim(self) -> int:
        return int(self._model.get(self._load_model).dim)

    def _embed(self, texts: list[str], show_progress: bool) -> np.ndarray:
        return l2_normalize(self._model.get(self._load_model).encode(texts, show_progress_bar=show_progress))

    def to_config(self) -> dict[str, Any]:
        return {"type": "model2vec", "name": self.name, "dim": self.dim, "path": self.path}
