"""``routellm train``: fit a router on battle/outcome files or with the project's recipe.

    routellm train mf --data battles.csv --output my-router/
    routellm train mf --data arena.json --format arena --epochs 20 --output my-router/
    routellm train sw_ranking --data outcomes.csv --format outcomes --strong gpt-4 --weak llama --output r/
    routellm train mf --recipe --data-dir ../shared/data --output my-router/   # MMLU-train + arena-bench

The saved directory loads with ``--router my-router/`` everywhere a router is taken.
"""

from __future__ import annotations

import argparse
import inspect
import json
import time
from pathlib import Path
from typing import Any

from shared_core.errors import ConfigError

FORMATS = ("battles", "arena", "outcomes")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``train`` on an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "train",
        help="train a router (mf, sw_ranking, ...) on battles or per-model outcomes",
        description="Fit a router on battle or outcome files, or with the project's recipe, and save it to a directory.",
    )
    p.add_argument("router", help="router to train: mf, sw_ranking, or another registered recipe")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", nargs="+", metavar="FILE", help="training data files (.csv, .jsonl, .json)")
    src.add_argument(
        "--recipe",
        action="store_true",
        help="train with the project's recipe on --data-dir (MMLU train half + arena-bench battles)",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="battles",
        help="layout of --data: battles (prompt, model_a, model_b, winner), arena (Chatbot Arena's), "
        "outcomes (prompt + one column per model: correct flag or 1-10 score); default: battles",
    )
    p.add_argument("--data-dir", default=None, help="router data directory for --recipe (default: ../shared/data)")
    p.add_argument(
        "--embedder",
        default="minilm-onnx-int8",
        help="embedder: minilm-onnx-int8 (default, as the shipped routers), minilm (torch), openai:<model>, "
        "a sentence-transformers name or path",
    )
    p.add_argument("--no-cache", action="store_true", help="do not use the on-disk embedding cache")
    p.add_argument("--output", "-o", required=True, help="directory to write config.json + model.safetensors to")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (routers that train by epochs: mf)")
    p.add_argument("--strong", default=None, help="strong model of the scoring pair (default: gpt-4-1106-preview)")
    p.add_argument("--weak", default=None, help="weak model of the scoring pair (default: Mixtral-8x7B-Instruct-v0.1)")
    p.add_argument(
        "--reference-prompts",
        default=None,
        metavar="FILE",
        help="prompts whose score quantiles ship with the router (enables --strong-fraction without calibration); "
        "default with --recipe: its MMLU training-half + arena-bench prompts",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


def _options(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """Router constructor options from the arguments; refuse ones the router does not take."""
    given = {"strong": args.strong, "weak": args.weak, "epochs": args.epochs, "seed": args.seed}
    accepted = inspect.signature(cls.__init__).parameters
    options = {}
    for key, value in given.items():
        if value is None:
            continue
        if key not in accepted:
            if key == "seed":
                continue  # routers without randomness ignore the seed
            takes = ", ".join(p for p in accepted if p not in ("self", "embedder"))
            raise ConfigError(f"router {cls.name!r} has no option --{key} (it takes: {takes})")
        options[key] = value
    if args.epochs is not None and args.epochs < 1:
        raise ConfigError(f"--epochs must be a positive integer, got {args.epochs}")
    return options


def run(args: argparse.Namespace) -> int:
    from shared_core.artifacts import reference_quantiles
    from shared_core.embeddings import CachedEmbedder, get_embedder
    from shared_core.routers import get_router_class

    cls = get_router_class(args.router)
    if args.data is not None and args.data_dir is not None:
        raise ConfigError("--data-dir is for --recipe; with --data give the files only")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output {str(out)!r} exists and is not a directory")
    options = _options(cls, args)
    reference = None
    if args.reference_prompts is not None:  # read before training, so a bad file fails fast
        from shared_core.cli import read_prompts

        reference = read_prompts(args.reference_prompts)
    embedder = get_embedder(args.embedder)
    if not args.no_cache:
        embedder = CachedEmbedder(embedder)
    progress = not args.no_progress
    started = time.perf_counter()
    if args.recipe:
        from shared_core.training.recipes import train_recipe

        router = train_recipe(
            args.router,
            data_dir=args.data_dir,
            embedder=embedder,
            seed=args.seed,
            progress=progress,
            options={k: v for k, v in options.items() if k != "seed"},
        )
    else:
        from shared_core.training.data import read_training_data

        if not hasattr(cls, "fit"):
            raise ConfigError(f"router {args.router!r} cannot be trained from data files; use --recipe")
        battles = read_training_data(args.data, args.format)
        if "progress" in inspect.signature(cls.__init__).parameters:
            options["progress"] = progress
        router = cls(embedder, **options).fit(battles)
        router.training_ = {
            "data": [str(p) for p in args.data],
            "format": args.format,
            "seed": args.seed,
            **(getattr(router, "training_", None) or {}),
        }
    if reference is not None:
        router.reference_quantiles_ = reference_quantiles(router.score(reference))
    elif args.recipe:  # the recipe's reference set: the arena-bench chat prompts
        from shared_core.training.recipes import router_reference_quantiles

        router.reference_quantiles_ = router_reference_quantiles(router, args.data_dir)
    path = router.save(out)
    info = getattr(router, "training_", {}) or {}
    summary = {
        "router": router.label,
        "output": str(path),
        "models": len(getattr(router, "models_", []) or []),
        "battles": info.get("battles"),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(summary))
    return 0
