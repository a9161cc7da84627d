"""``routellm label``: LLM-judge battles for your own prompts, from OpenAI-compatible endpoints.

    routellm label prompts.txt -o labels/ \\
        --strong-url https://api.openai.com/v1 --strong-model gpt-4o --strong-key-env OPENAI_API_KEY \\
        --weak-url http://127.0.0.1:8000/v1 --weak-model llama-3.1-8b \\
        --judge-url https://api.openai.com/v1 --judge-model gpt-4o --judge-key-env OPENAI_API_KEY
    routellm label prompts.txt -o labels/ ... --dry-run --prices prices.json   # cost estimate, no call
    routellm train mf --data labels/battles.jsonl --strong gpt-4o --weak llama-3.1-8b -o my-router/

Running the same command again resumes: finished prompts and calls are not repeated.
API keys are read from the environment variables named by ``--*-key-env``, never from a file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from shared_core.errors import ConfigError

ROLES = ("strong", "weak", "judge")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``label`` on an ``argparse`` subparsers object."""
    from shared_core.labeling.judge import MODES

    p = subparsers.add_parser(
        "label",
        help="label your prompts with an LLM judge (strong vs weak answers) into battles for 'routellm train'",
        description="Collect the strong and the weak model's answers to each prompt, ask a judge model which is "
        "better, and append battles to OUTPUT/battles.jsonl (resumable).",
    )
    p.add_argument("prompts", help="prompt file: .txt (one a line), .jsonl or .csv (a prompt/text/question column)")
    p.add_argument("--output", "-o", required=True, help="run directory (battles.jsonl, unparsed.jsonl, calls.jsonl)")
    for role in ROLES:
        p.add_argument(f"--{role}-url", help=f"OpenAI-compatible base URL of the {role} model (e.g. http://host/v1)")
        p.add_argument(f"--{role}-model", required=True, help=f"model name the {role} endpoint serves")
        p.add_argument(f"--{role}-key-env", default=None, metavar="VAR",
                       help=f"environment variable holding the {role} endpoint's API key (default: none sent)")
    p.add_argument("--strong-name", default=None, help="name of the strong model in the battles (default: --strong-model)")
    p.add_argument("--weak-name", default=None, help="name of the weak model in the battles (default: --weak-model)")
    p.add_argument("--mode", choices=MODES, default="pairwise",
                   help="pairwise: judge both orders, a win only when they agree (default); "
                   "grade: 1-5 grade of the weak answer against the strong one, as RouteLLM")
    p.add_argument("--weak-wins-at", type=int, default=4, help="grade mode: weak wins at this grade or above (default 4)")
    p.add_argument("--max-tokens", type=int, default=512, help="answer length limit of strong and weak (default 512)")
    p.add_argument("--judge-max-tokens", type=int, default=512, help="judge answer length limit (default 512)")
    p.add_argument("--judge-extra-body", default=None, metavar="JSON",
                   help="JSON object added to every judge request, e.g. a provider's response_format that constrains "
                   "the judge to a verdict (docs/finetuned_routers.md has one for llama.cpp); not model/messages")
    p.add_argument("--concurrency", type=int, default=4, help="prompts in flight at once (default 4)")
    p.add_argument("--retries", type=int, default=4, help="retries of a call on provider errors (default 4)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per call (default 120)")
    p.add_argument("--limit", type=int, default=None, help="label only the first N prompts of the file")
    p.add_argument("--dry-run", action="store_true", help="print the calls, tokens and cost it would take; call nothing")
    p.add_argument("--prices", default=None, metavar="FILE",
                   help='price table JSON: {"model": {"input": $/1M tokens, "output": $/1M tokens}}')
    p.add_argument("--price", action="append", default=[], metavar="MODEL=IN,OUT",
                   help="price of one model in dollars per million input and output tokens (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def _prices(args: argparse.Namespace):
    from shared_core.labeling.run import Prices

    table = dict(Prices.from_json(args.prices).table) if args.prices else {}
    for item in args.price:
        model, sep, values = item.rpartition("=")
        parts = values.split(",")
        try:
            if not sep or not model or len(parts) != 2:
                raise ValueError
            table[model] = (float(parts[0]), float(parts[1]))
        except ValueError:
            raise ConfigError(f"--price must be MODEL=INPUT,OUTPUT in dollars per million tokens, got {item!r}") from None
    return Prices(table)


def _extra_body(text: str | None) -> dict | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--judge-extra-body must be a JSON object, got {text!r} ({exc})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"--judge-extra-body must be a JSON object, got {type(value).__name__}: {text!r}")
    return value


def _model(args: argparse.Namespace, role: str, max_tokens: int, extra_body: dict | None = None):
    from shared_core.labeling.chat import OpenAIChat

    url = getattr(args, f"{role}_url")
    if url is None:
        raise ConfigError(f"--{role}-url is required (an OpenAI-compatible base URL such as http://127.0.0.1:8765/v1)")
    env = getattr(args, f"{role}_key_env")
    key = None
    if env is not None:
        key = os.environ.get(env)
        if not key:
            raise ConfigError(f"--{role}-key-env names {env!r}, but that environment variable is empty or unset")
    return OpenAIChat(url, getattr(args, f"{role}_model"), api_key=key, max_tokens=max_tokens, timeout=args.timeout,
                      extra_body=extra_body)


def run(args: argparse.Namespace) -> int:
    from shared_core.cli import read_prompts
    from shared_core.labeling.run import estimate_cost, label_prompts

    judge_extra = _extra_body(args.judge_extra_body)  # a bad flag fails before any file is read
    prompts = read_prompts(args.prompts)
    if args.limit is not None:
        if args.limit < 1:
            raise ConfigError(f"--limit must be a positive integer, got {args.limit}")
        prompts = prompts[: args.limit]
    prices = _prices(args)
    strong_name = args.strong_name or args.strong_model
    weak_name = args.weak_name or args.weak_model
    if args.dry_run:
        estimate = estimate_cost(
            prompts, strong_name=strong_name, weak_name=weak_name, judge_name=args.judge_model, mode=args.mode,
            answer_tokens=args.max_tokens, judge_tokens=args.judge_max_tokens, prices=prices, output_dir=args.output,
        )
        print(estimate.format())
        return 0
    summary = label_prompts(
        prompts,
        strong=_model(args, "strong", args.max_tokens),
        weak=_model(args, "weak", args.max_tokens),
        judge=_model(args, "judge", args.judge_max_tokens, judge_extra),
        output_dir=args.output,
        strong_name=strong_name,
        weak_name=weak_name,
        judge_name=args.judge_model,
        mode=args.mode,
        weak_wins_at=args.weak_wins_at,
        concurrency=args.concurrency,
        retries=args.retries,
        prices=prices,
        progress=not args.no_progress,
    )
    result = summary.to_dict()
    dollars = summary.usage.dollars(prices)
    if dollars is not None:
        result["dollars"] = round(dollars, 6)
    print(json.dumps(result))
    for index, error in summary.failed[:10]:
        print(f"routellm label: prompt {index} failed: {error}", file=sys.stderr)
    return 1 if summary.failed else 0
