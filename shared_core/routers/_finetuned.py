"""What the fine-tuned routers (``bert``, ``causal_llm``) share.

They are Hugging Face model directories: ``config.json`` (the model's own config,
with this package's keys ``router``, ``format_version``, ``training``,
``reference_quantiles`` added beside the model's), ``model.safetensors`` and the
tokenizer files, so that the directory also loads with ``transformers`` alone, and
a RouteLLM checkpoint of the same layout loads here. Nothing is pickled.

torch and transformers come with the ``finetune`` extra and are imported only when
such a router is built. Their thread count is set for our calls only and restored
after (:func:`torch_threads`): the host application keeps its own setting.

Trained routers that do not ship in the package live in the cache directory,
``<cache>/routers/<name>`` (:func:`shared_core.cache.trained_router_dir`), where ``routellm train
<name> --recipe`` puts them by default.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from shared_core.errors import ArtifactError, ConfigError

#: Keys this package adds to a Hugging Face ``config.json``.
ROUTER_KEYS = ("router", "format_version", "scoring_pair", "training", "reference_quantiles", "routellm")
FINETUNE_HINT = "pip install 'routellm-integrations[finetune]'"


def require_transformers() -> None:
    """Raise a ConfigError naming the extra when torch or transformers is missing."""
    for module in ("torch", "transformers"):
        try:
            __import__(module)
        except ImportError as exc:
            raise ConfigError(f"the bert and causal_llm routers need {module} ({exc}); {FINETUNE_HINT}") from None


def default_threads() -> int:
    """Threads for our torch calls: the CPUs this process may use, at most 4."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(4, n))


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` inside the block, restored after."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n or default_threads())
    try:
        yield
    finally:
        torch.set_num_threads(old)


def check_threads(threads: Any) -> int | None:
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads must be a positive integer or None, got {threads!r}")
    return threads


def hf_layout(config: dict[str, Any]) -> str | None:
    """The router a Hugging Face ``config.json`` without a ``router`` key stands for:
    ``bert`` for a ``*ForSequenceClassification`` model, ``causal_llm`` for ``*ForCausalLM``."""
    archs = config.get("architectures")
    if not isinstance(archs, list) or not archs or not isinstance(archs[0], str):
        return None
    if archs[0].endswith("ForSequenceClassification"):
        return "bert"
    if archs[0].endswith("ForCausalLM"):
        return "causal_llm"
    return None


def router_fields(router: Any) -> dict[str, Any]:
    """The package's keys written into the model's ``config.json`` on save."""
    from shared_core.artifacts import FORMAT_VERSION, label_field, quantiles_to_config

    return {
        "router": router.name,
        **label_field(router),
        "format_version": FORMAT_VERSION,
        "scoring_pair": dict(router.scoring_pair_) if getattr(router, "scoring_pair_", None) else None,
        "training": dict(getattr(router, "training_", None) or {}),
        "reference_quantiles": quantiles_to_config(router.reference_quantiles),
    }


def read_router_fields(path: Path, config: dict[str, Any], name: str) -> dict[str, Any]:
    """Our keys from a model directory's config (absent in a RouteLLM checkpoint), checked."""
    from shared_core.artifacts import FORMAT_VERSION, quantiles_from_config

    if "router" in config:
        if config["router"] != name:
            raise ArtifactError(f"{str(path)!r} holds router {config['router']!r}, not {name!r}")
        if config.get("format_version") != FORMAT_VERSION:
            raise ArtifactError(
                f"{str(path)!r} has format_version {config.get('format_version')!r}; this package reads {FORMAT_VERSION}"
            )
    pair = config.get("scoring_pair")
    if pair is not None and not (isinstance(pair, dict) and all(isinstance(pair.get(k), str) for k in ("strong", "weak"))):
        raise ArtifactError(f"{str(path)!r}: config 'scoring_pair' must name 'strong' and 'weak', got {pair!r}")
    training = config.get("training")
    return {
        "scoring_pair_": pair,
        "training_": training if isinstance(training, dict) else {},
        "reference_quantiles_": quantiles_from_config(config, path),
    }


def write_router_fields(path: Path, fields: dict[str, Any]) -> None:
    """Add our keys to ``path/config.json`` as written by ``save_pretrained``."""
    import json

    from shared_core.artifacts import _jsonable

    cfg_path = path / "config.json"
    config = json.loads(cfg_path.read_text(encoding="utf-8"))
    config.update({k: v for k, v in fields.items() if v is not None})
    cfg_path.write_text(json.dumps(_jsonable(config), indent=2, ensure_ascii=False, allow_nan=False) + "\n",
                        encoding="utf-8")


def check_model_dir(path: str | Path, what: str) -> Path:
    directory = Path(path)
    if not directory.is_dir():
        raise ArtifactError(f"{what} directory {str(directory)!r} does not exist or is not a directory")
    if not (directory / "config.json").is_file():
        raise ArtifactError(f"{what} directory {str(directory)!r} has no config.json")
    if not any(directory.glob("*.safetensors")):
        raise ArtifactError(
            f"{what} directory {str(directory)!r} has no *.safetensors weights (pickled .bin weights are not loaded)"
        )
    return directory


def open_model_dir(path: str | Path, name: str, options: dict[str, Any]) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """``(directory, config, router fields)`` of a model directory to load as router ``name``;
    refuses options the router does not take and a missing ``finetune`` extra first."""
    import json

    if options:
        raise ConfigError(f"the {name} router takes no option(s) {sorted(options)}")
    require_transformers()
    directory = check_model_dir(path, f"{name} router")
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    return directory, config, read_router_fields(directory, config, name)


def save_dir(path: str | Path) -> Path:
    """The directory to save a router into, created; refused if a file is in the way."""
    directory = Path(path)
    if directory.exists() and not directory.is_dir():
        raise ArtifactError(f"cannot save a router to {str(directory)!r}: it exists and is not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def check_positive(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    return value


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def dir_size(path: str | Path) -> int:
    """Bytes of the files in a directory (for the size reported in docs)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
