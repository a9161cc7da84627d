"""Settings to embedders: :func:`get_embedder` and :func:`embedder_from_config`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from shared_core.embeddings.base import Embedder, looks_like_path
from shared_core.embeddings.hashing import HashEmbedder
from shared_core.embeddings.onnx_runtime import OnnxEmbedder
from shared_core.embeddings.remote import OPENAI_BASE_URL, OpenAICompatibleEmbedder
from shared_core.embeddings.sentence_transformer import SentenceTransformerEmbedder
from shared_core.embeddings.static import Model2VecEmbedder
from shared_core.errors import ConfigError

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


def embedder_from_config(cfg: dict[str, Any], *, allow_remote: bool = False) -> Embedder:
    """Rebuild the embedder described by ``to_config()`` (as stored in a router's config.json).

    A config naming a remote endpoint (``type: openai``) is refused unless
    ``allow_remote``: a file never decides where prompts go. Callers pass
    ``allow_remote=True`` only for a config the user wrote or handed over themselves.
    An ``onnx`` config's ``sha256`` is checked when the embedder loads.
    """
    if not isinstance(cfg, dict):
        raise ConfigError(f"embedder config must be a dict, got {type(cfg).__name__}: {cfg!r}")
    kind = cfg.get("type")
    if kind in ("sentence-transformers", "sentence_transformers"):
        return SentenceTransformerEmbedder(
            _config_model(cfg), name=cfg.get("name"), max_seq_length=cfg.get("max_seq_length")
        )
    if kind == "onnx":
        emb = OnnxEmbedder(
            _config_model(cfg), quantize=cfg.get("quantize"), max_seq_length=cfg.get("max_seq_length"),
            sha256=cfg.get("sha256"),
        )
        if emb.name != cfg.get("name"):
            raise ConfigError(f"onnx embedder config names {cfg.get('name')!r}, but its settings give {emb.name!r}: {cfg!r}")
        return emb
    if kind == "model2vec":
        if not cfg.get("path"):
            raise ConfigError(f"model2vec embedder config needs 'path', got {cfg!r}")
        return Model2VecEmbedder(cfg["path"], name=cfg.get("name"))
    if kind == "openai":
        if not allow_remote:
            raise ConfigError(
                f"embedder config {cfg.get('name')!r} sends every prompt to {cfg.get('base_url', OPENAI_BASE_URL)!r}; "
                "a saved file never chooses where prompts go: build the embedder yourself "
                "(OpenAICompatibleEmbedder(model, base_url=..., api_key=...)) and pass it as embedder="
            )
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

    * ``None`` or ``"minilm-onnx-int8"``: the int8 all-MiniLM-L6-v2 :class:`OnnxEmbedder`
      shipped in the package (the shipped routers' embedder; no torch);
    * ``"minilm"`` or ``"sentence-transformers/all-MiniLM-L6-v2"``: all-MiniLM-L6-v2 under
      torch, :class:`SentenceTransformerEmbedder` (the ``train`` extra);
    * ``"minilm-onnx"`` (same space as ``"minilm"``) or ``"<model>:onnx-int8"``:
      :class:`OnnxEmbedder`, exported once into the cache;
    * ``"openai:<model>"``: :class:`OpenAICompatibleEmbedder` against OpenAI;
    * ``"hash"`` or ``"hash-<dim>-<seed>"``: :class:`HashEmbedder`;
    * a path to a model2vec directory: :class:`Model2VecEmbedder`;
    * any other string or a path: a sentence-transformers model name or local path;
    * a dict: :func:`embedder_from_config`; an :class:`Embedder`: returned as is.
    """
    if spec is None:
        return OnnxEmbedder(quantize="int8")
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
    return _local_embedder(value) if looks_like_path(value) else SentenceTransformerEmbedder(value)


def _local_embedder(path: str | Path) -> Embedder:
    """A model directory: model2vec when its config.json says so, else sentence-transformers."""
    directory = Path(path).expanduser()
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        modules = (directory / "modules.json").read_text(encoding="utf-8") if (directory / "modules.json").is_file() else ""
        if config.get("model_type") == "model2vec" or "StaticEmbedding" in modules:
            return Model2VecEmbedder(path)
    except (OSError, ValueError, UnicodeDecodeError, AttributeError):
        pass  # not ours to judge: sentence-transformers reports a missing or broken directory
    return SentenceTransformerEmbedder(path)
