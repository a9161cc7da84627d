"""Saved routers: a directory of ``config.json`` + ``model.safetensors``.

Never pickle: tensors go to safetensors, everything else to JSON. ``config.json``
holds:

* ``router``: the registry name (``mf``, ``sw_ranking``, ...);
* ``format_version``: :data:`FORMAT_VERSION`;
* ``embedder``: ``embedder.to_config()`` (type, name, dim, ...), from which the
  embedder is rebuilt at load time;
* ``models`` and ``scoring_pair`` (``{"strong": ..., "weak": ...}``) for pairwise routers;
* ``training``: data, split, seed, epochs and held-out metrics, as known;
* ``reference_quantiles`` (optional): 101 score quantiles (0%, 1%, ..., 100%) on a
  reference prompt set, which let a strong fraction become a threshold without
  the user's own prompts.

:func:`router_config`, :func:`save_router` and :func:`saved_quantiles` are the
parts every router writes and reads the same way; each router adds its own keys
and tensors. Routers that keep training prompts store their embeddings with
:func:`quantize_rows`.

Every problem at load time raises :class:`~shared_core.errors.ArtifactError` naming
the file and the bad value.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from shared_core.errors import ArtifactError, ConfigError
from shared_core.routers import read_config
from shared_core.routers._models import same_pair

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
N_QUANTILES = 101
#: How a router may store its training prompts' embeddings (see :func:`quantize_rows`).
STORAGE = ("int8", "float16", "float32")


# Writing ---------------------------------------------------------------------------
def write_artifact(path: str | Path, config: dict[str, Any], tensors: dict[str, np.ndarray]) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into directory ``path`` (created)."""
    from safetensors.numpy import save_file

    directory = Path(path)
    if directory.exists() and not directory.is_dir():
        raise ArtifactError(f"cannot save a router to {str(directory)!r}: it exists and is not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    check_finite(arrays, directory / WEIGHTS_NAME, "cannot save")
    save_file(arrays, str(directory / WEIGHTS_NAME), metadata={"format": "np"})
    text = json.dumps(_jsonable(config), indent=2, ensure_ascii=False, allow_nan=False)
    (directory / CONFIG_NAME).write_text(text + "\n", encoding="utf-8")
    return directory


def router_config(router: Any, **fields: Any) -> dict[str, Any]:
    """``config.json`` of a fitted router: the keys every router writes, with its own ``fields`` in the middle."""
    return {
        "router": router.name,
        **label_field(router),
        "format_version": FORMAT_VERSION,
        "embedder": router.embedder.to_config(),
        **fields,
        "training": dict(getattr(router, "training_", None) or {}),
        "reference_quantiles": quantiles_to_config(router.reference_quantiles),
    }


def label_field(router: Any) -> dict[str, str]:
    """``{"label": ...}`` when the router answers to another name than its registry name, else ``{}``."""
    label = getattr(router, "label", router.name)
    return {} if label == router.name else {"label": label}


def save_router(path: str | Path, config: dict[str, Any], tensors: dict[str, np.ndarray]) -> Path:
    """:func:`write_artifact` without the config's ``None`` values (an optional key left out)."""
    return write_artifact(path, {k: v for k, v in config.items() if v is not None}, tensors)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# Reading ---------------------------------------------------------------------------
def read_artifact(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(config, tensors)`` of a saved router directory; raises ArtifactError.

    A tensor holding NaN or an infinity is refused here, naming the file and the
    tensor: such weights load, but every score computed with them is NaN, so
    each call would fail instead of the load.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    config = read_config(path)
    weights = Path(path) / WEIGHTS_NAME
    if not weights.is_file():
        raise ArtifactError(f"router directory {str(path)!r} has no {WEIGHTS_NAME}")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ArtifactError(f"{str(weights)!r} is not a readable safetensors file: {exc}") from None
    check_finite(tensors, weights, "refusing to load")
    return config, tensors


def check_finite(tensors: dict[str, np.ndarray], weights: str | Path, action: str) -> None:
    """Raise ArtifactError naming ``weights`` and the first tensor with a NaN or infinite value."""
    for name in sorted(tensors):
        value = tensors[name]
        if value.dtype.kind not in "fc":
            continue
        bad = ~np.isfinite(value)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ArtifactError(
                f"{action} {str(weights)!r}: tensor {name!r} holds {int(bad.sum())} NaN or infinite "
                f"value(s) of {value.size} (first at index {first}: {value[first]!r}); weights must be finite"
            )


def check_router_config(config: dict[str, Any], router: str, path: str | Path) -> None:
    """The config names ``router`` and a format version this code reads."""
    if config.get("router") != router:
        raise ArtifactError(f"{str(path)!r} holds router {config.get('router')!r}, not {router!r}")
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{str(path)!r} has format_version {version!r}; this version of the package reads {FORMAT_VERSION}"
        )


def config_number(config: Any, key: str, path: str | Path, block: str | None = None) -> float:
    """``config[key]`` as a float (``config`` is the block ``block`` of a router config, if given);
    :class:`ArtifactError` naming the file and the key if it is not a finite number."""
    value = config.get(key) if isinstance(config, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        if block is None:
            raise ArtifactError(f"{str(path)!r}: config {key!r} must be a number, got {value!r}")
        raise ArtifactError(f"{str(path)!r}: config {block!r} needs a number {key!r}, got {config!r}")
    return float(value)


def require_tensor(
    tensors: dict[str, np.ndarray], name: str, shape: Sequence[int | None], path: str | Path
) -> np.ndarray:
    """Tensor ``name`` with the expected ``shape`` (``None`` = any size on that axis)."""
    if name not in tensors:
        raise ArtifactError(
            f"{str(Path(path) / WEIGHTS_NAME)!r} has no tensor {name!r}; it has {sorted(tensors)}"
        )
    value = tensors[name]
    ok = value.ndim == len(shape) and all(s is None or s == d for s, d in zip(shape, value.shape))
    if not ok:
        want = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
        raise ArtifactError(
            f"tensor {name!r} in {str(Path(path) / WEIGHTS_NAME)!r} has shape {tuple(value.shape)}, expected {want}"
        )
    return value


def saved_quantiles(
    config: dict[str, Any], path: str | Path, pair: tuple[str, str], saved_pair: tuple[str, str]
) -> np.ndarray | None:
    """The config's reference quantiles (checked) if the router scores the ``saved_pair``
    (strong, weak); ``None`` if it scores another ``pair``: they belong to the saved one."""
    quantiles = quantiles_from_config(config, path)
    return quantiles if same_pair(pair, saved_pair) else None


# Embedding storage -------------------------------------------------------------------
def quantize_rows(x: np.ndarray, storage: str) -> tuple[np.ndarray, np.ndarray]:
    """``(stored, scales)``: int8 with a per-row scale, or float16/float32 with scale 1."""
    x = np.asarray(x, dtype=np.float32)
    if storage == "int8":
        scale = np.maximum(np.abs(x).max(axis=1), 1e-12) / 127.0
        return np.round(x / scale[:, None]).astype(np.int8), scale.astype(np.float32)
    return x.astype(np.float16 if storage == "float16" else np.float32), np.ones(len(x), dtype=np.float32)


def dequantize_rows(stored: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Unit-norm float32 rows from :func:`quantize_rows`' output."""
    x = stored.astype(np.float32) * scales.astype(np.float32)[:, None]
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


# Embedders -------------------------------------------------------------------------
def resolve_embedder(config: dict[str, Any], path: str | Path, embedder=None, *, cache: bool = False):
    """The embedder a saved router needs.

    ``embedder`` is checked against the config's embedder name and dimension (and,
    for an ONNX embedder, the SHA-256 of its model file when the config records
    one); without one, the embedder is rebuilt from the config with
    :func:`shared_core.embeddings.embedder_from_config`, which checks that hash when
    it loads. A config naming a remote embeddings endpoint is never followed: the
    caller must pass that embedder (a saved file never chooses where prompts go).
    ``cache=True`` wraps it in the on-disk :class:`~shared_core.embeddings.CachedEmbedder`
    (serving does not cache by default: every prompt is new).
    """
    from shared_core.embeddings import CachedEmbedder, embedder_from_config

    spec = config.get("embedder")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not isinstance(spec.get("dim"), int):
        raise ArtifactError(f"{str(path)!r}: config 'embedder' must be an object with 'name' and 'dim', got {spec!r}")
    if embedder is None:
        try:
            embedder = embedder_from_config(spec)
        except (ConfigError, KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{str(path)!r}: cannot rebuild embedder {spec.get('name')!r}: {exc}") from None
    else:
        if embedder.name != spec["name"]:
            raise ArtifactError(
                f"embedder {embedder.name!r} does not match the embedder {spec['name']!r} that router "
                f"{str(path)!r} was trained with"
            )
        if embedder.dim != spec["dim"]:
            raise ArtifactError(
                f"embedder {embedder.name!r} has dimension {embedder.dim}, but router {str(path)!r} needs {spec['dim']}"
            )
        inner = embedder.inner if isinstance(embedder, CachedEmbedder) else embedder
        given_sha = getattr(inner, "sha256", None) if spec.get("sha256") else None
        if given_sha is not None and given_sha != spec["sha256"]:
            raise ArtifactError(
                f"embedder {embedder.name!r} runs a model file of SHA-256 {given_sha}, but router {str(path)!r} "
                f"was trained with SHA-256 {spec['sha256']}: its vectors would differ"
            )
    if cache and not isinstance(embedder, CachedEmbedder):
        embedder = CachedEmbedder(embedder)
    return embedder


# Reference quantiles ------------------------------------------------------------------
def check_reference_quantiles(values: Iterable[Any], where: str = "reference_quantiles") -> np.ndarray:
    """101 non-decreasing numbers in [0, 1]."""
    try:
        q = np.asarray(list(values), dtype=np.float64)
    except (TypeError, ValueError):
        raise ArtifactError(f"{where} must be a list of {N_QUANTILES} numbers") from None
    if q.shape != (N_QUANTILES,):
        raise ArtifactError(f"{where} must hold {N_QUANTILES} numbers (0%..100%), got {q.shape[0] if q.ndim else q!r}")
    if not np.isfinite(q).all() or q.min() < 0 or q.max() > 1:
        raise ArtifactError(f"{where} must be numbers in [0, 1], got min {q.min()!r} max {q.max()!r}")
    if (np.diff(q) < 0).any():
        i = int(np.flatnonzero(np.diff(q) < 0)[0])
        raise ArtifactError(f"{where} must be non-decreasing, but entry {i + 1} ({q[i + 1]}) < entry {i} ({q[i]})")
    return q


def reference_quantiles(scores: np.ndarray) -> np.ndarray:
    """The 101 quantiles (0%, 1%, ..., 100%) of ``scores``."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        raise ConfigError("reference quantiles need at least one score")
    return np.quantile(scores, np.linspace(0.0, 1.0, N_QUANTILES))


def quantiles_to_config(quantiles: Any) -> list[float] | None:
    """``reference_quantiles`` as stored in ``config.json`` (``None`` when absent)."""
    return None if quantiles is None else check_reference_quantiles(quantiles).tolist()


def quantiles_from_config(config: dict[str, Any], path: str | Path) -> np.ndarray | None:
    values = config.get("reference_quantiles")
    if values is None:
        return None
    return check_reference_quantiles(values, f"{str(path)!r} config 'reference_quantiles'")
