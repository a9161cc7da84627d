"""The ``routellm`` command: a thin layer over library functions.

Subcommands live next to the code they drive: ``route`` and ``calibrate`` here,
``train`` in :mod:`shared_core.training.cli`, ``evaluate`` in
:mod:`shared_core.evaluation.cli`. Integration packages add commands (``demo``)
through the ``routellm.commands`` entry-point group, so shared_core never
imports them.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Sequence

from shared_core.errors import ConfigError, RouteLLMError
from shared_core.files import existing_file, json_lines

#: Built-in subcommand modules, each exposing ``add_parser(subparsers)``.
_COMMAND_MODULES = ("shared_core.training.cli", "shared_core.evaluation.cli", "shared_core.labeling.cli")
_TEXT_COLUMNS = ("prompt", "text", "question")


def read_prompts(path: str | Path) -> list[str]:
    """Prompts from a file: ``.jsonl`` (a ``prompt``/``text`` field or a string per
    line), ``.csv`` (a ``prompt``/``text``/``question`` column), else one prompt a line."""
    p = existing_file(path, "prompt file")
    suffix = p.suffix.lower()
    prompts: list[str] = []
    if suffix == ".jsonl":
        lines = p.read_text(encoding="utf-8").splitlines()
        for n, item in json_lines(lines, p, ConfigError):
            if isinstance(item, str):
                prompts.append(item)
            elif isinstance(item, dict) and any(isinstance(item.get(k), str) for k in _TEXT_COLUMNS):
                prompts.append(next(item[k] for k in _TEXT_COLUMNS if isinstance(item.get(k), str)))
            else:
                raise ConfigError(
                    f"{str(p)!r} line {n}: expected a string or an object with one of {_TEXT_COLUMNS}, got {lines[n - 1][:60]!r}"
                )
    elif suffix == ".csv":
        with p.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            column = next((c for c in _TEXT_COLUMNS if c in (reader.fieldnames or [])), None)
            if column is None:
                raise ConfigError(
                    f"{str(p)!r} has columns {reader.fieldnames}; expected one named {' or '.join(_TEXT_COLUMNS)}"
                )
            prompts = [row[column] for row in reader]
    else:
        prompts = [line for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ConfigError(f"prompt file {str(p)!r} holds no prompts")
    return prompts


def _add_router_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--router",
        default=None,
        help="registry name (random, mf, sw_ranking, ...), a saved router directory, or a RouteLLM model "
        "string such as router-mf-0.11593 (default: the shipped default router)",
    )


def _cmd_route(args: argparse.Namespace) -> int:
    from shared_core.engine import RoutingEngine
    from shared_core.thresholds import format_threshold

    if (args.prompt is None) == (args.file is None):
        raise ConfigError("give either one prompt or --file PATH, not both and not neither")
    prompts = [args.prompt] if args.prompt is not None else read_prompts(args.file)
    settings = dict(router=args.router, threshold=args.threshold, strong_fraction=args.strong_fraction,
                    on_no_text=args.on_no_text)
    if args.ray:
        from shared_core.ray_batch import decide_texts_on_ray

        decisions = decide_texts_on_ray(prompts, **settings)
    else:
        # Each prompt is a one-message conversation, so that the routing policy of the
        # wrappers applies here too: an empty prompt has no text and goes to on_no_text.
        decisions = RoutingEngine.from_settings(**settings).decide([[("user", prompt)] for prompt in prompts])
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            for prompt, d in zip(prompts, decisions):
                fh.write(json.dumps({"prompt": prompt, **d.to_dict()}, ensure_ascii=False) + "\n")
        print(f"{len(decisions)} decisions written to {args.out}; strong: {sum(d.is_strong for d in decisions)}")
    elif args.json:
        for prompt, d in zip(prompts, decisions):
            print(json.dumps({"prompt": prompt, **d.to_dict()}, ensure_ascii=False))
    else:
        for prompt, d in zip(prompts, decisions):
            preview = " ".join(prompt.split())
            preview = preview if len(preview) <= 60 else preview[:57] + "..."
            score = f"score={d.score:.4f}" if d.score is not None else f"({d.reason})"
            print(f"{d.role.value:6}  {score}  threshold={format_threshold(d.threshold)}  router={d.router}  {preview}")
        if len(decisions) > 1:
            strong = sum(d.is_strong for d in decisions)
            print(f"strong: {strong}/{len(decisions)} ({strong / len(decisions):.1%})")
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from shared_core.engine import resolve_router, threshold_for_fraction
    from shared_core.thresholds import NEVER_STRONG, calibrate, check_fraction, end_threshold, format_threshold

    fraction = check_fraction(args.strong_fraction)
    router = resolve_router(args.router)
    if args.prompts_file is not None:
        prompts = read_prompts(args.prompts_file)
        result = calibrate(router.score(prompts), fraction).to_dict()
        result["source"] = str(args.prompts_file)
    else:
        at_end = end_threshold(fraction) is not None
        if router.reference_quantiles is None and not at_end:
            raise ConfigError(
                f"router {router.label!r} ships no reference score quantiles; give --prompts-file with your own prompts"
            )
        result = {
            "threshold": threshold_for_fraction(router, fraction),
            "target_fraction": fraction,
            "source": "the end of the range (no scores needed)" if at_end
            else "reference quantiles shipped with the router",
        }
    result["router"] = router.label
    if args.json:
        print(json.dumps(result))
    else:
        line = f"threshold={format_threshold(result['threshold'], 6)} for strong fraction {fraction:.3f}"
        if "achieved_fraction" in result:
            line += f" (achieved {result['achieved_fraction']:.3f} on {result['n_prompts']} prompts)"
        print(f"{line}  [router={router.label}, {result['source']}]")
        if result["threshold"] == NEVER_STRONG:
            print(f"use it as: --router {args.router or 'default'} --strong-fraction 0")
        else:
            print(f"use it as: --router {args.router or 'default'} --threshold {result['threshold']:.6f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="routellm", description="Route LLM calls between a strong and a weak model.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    route = sub.add_parser("route", help="score prompts and print each decision")
    route.add_argument("prompt", nargs="?", help="one prompt (or use --file)")
    route.add_argument("--file", help="prompts from a .txt (one a line), .jsonl or .csv file")
    _add_router_args(route)
    group = route.add_mutually_exclusive_group()
    group.add_argument("--threshold", type=float, help="strong when score >= threshold, in [0, 1]")
    group.add_argument(
        "--strong-fraction", type=float,
        help="target share of strong calls, via the router's reference quantiles (0: never strong, 1: always)"
    )
    route.add_argument(
        "--on-no-text", choices=("strong", "weak"), default="strong",
        help="where a prompt with no text (empty or only whitespace) goes, as in the wrappers (default: strong)",
    )
    route.add_argument("--json", action="store_true", help="one JSON object per prompt")
    route.add_argument("--out", help="write the decisions as JSON lines to this file, in input order")
    route.add_argument("--ray", action="store_true", help="score on Ray Data in parallel map batches (extra 'ray')")
    route.set_defaults(func=_cmd_route)

    cal = sub.add_parser("calibrate", help="threshold that sends a target fraction of prompts to the strong model")
    _add_router_args(cal)
    cal.add_argument("--strong-fraction", type=float, required=True, help="target share of strong calls in [0, 1] (0: never strong, 1: always)")
    cal.add_argument(
        "--prompts-file", help="your own prompts (.txt/.jsonl/.csv); default: the router's shipped reference set"
    )
    cal.add_argument("--json", action="store_true")
    cal.set_defaults(func=_cmd_calibrate)

    for module_name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.add_parser(sub)
    for ep in entry_points(group="routellm.commands"):
        try:
            add = ep.load()
        except ImportError as exc:  # the integration's extra is not installed
            missing = sub.add_parser(ep.name, help=f"(unavailable: {exc})")
            missing.set_defaults(func=_unavailable(ep.name, exc))
            continue
        add(sub)
    return parser


def _unavailable(name: str, exc: Exception):
    def run(args: argparse.Namespace) -> int:
        raise ConfigError(f"'routellm {name}' needs an optional dependency that is not installed: {exc}")

    return run


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except RouteLLMError as exc:
        print(f"routellm {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
