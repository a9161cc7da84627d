"""``routellm demo``: a handful of real prompts through an LCEL chain with RouteLLMChat.

The weak model is SmolLM2-135M-Instruct run in-process by llama-cpp-python
(:class:`langchain_routellm.examples.local.LlamaCppChat`). The strong model is any
OpenAI-compatible endpoint (``--strong-base-url``/``--strong-model``/
``--strong-api-key-env``, or ``ROUTELLM_STRONG_BASE_URL``/``ROUTELLM_STRONG_MODEL``/
``ROUTELLM_STRONG_API_KEY``); with none given the demo runs offline with the
local model on both sides, and says so.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Optional, Sequence, TextIO

from shared_core.errors import ConfigError, RouteLLMError

DEMO_PROMPTS = (
    "What is the capital of France?",
    "Say hello to a new colleague in one sentence.",
    "Translate 'good morning' into Spanish.",
    "Prove that the square root of 2 is irrational.",
    "Write a Python function that returns the n-th Fibonacci number using memoization, and explain its complexity.",
    "A train leaves at 3:15 pm and travels 210 km at 84 km/h. When does it arrive? Show your reasoning.",
)
SYSTEM = "You are a helpful assistant. Answer in at most two sentences."


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo",
        help="route a handful of prompts between a strong endpoint and local SmolLM2 through LangChain",
        description=(
            "A handful of prompts through an LCEL chain with RouteLLMChat: each decision, score and answer, "
            "then the strong share. Weak model: SmolLM2-135M-Instruct, local (llama-cpp-python). Strong model: "
            "an OpenAI-compatible endpoint (--strong-base-url/--strong-model, or ROUTELLM_STRONG_BASE_URL/"
            "ROUTELLM_STRONG_MODEL, API key from ROUTELLM_STRONG_API_KEY); with none, the demo runs offline "
            "with the local model on both sides and says so."
        ),
    )
    parser.add_argument("--router", default=None,
                        help="registry name, saved router directory or RouteLLM model string "
                             "(default: the shipped default router)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--threshold", type=float, default=None, help="strong when score >= threshold")
    group.add_argument("--strong-fraction", type=float, default=None,
                       help="share of calls for the strong model (default 0.5 when no threshold is given)")
    parser.add_argument("--strong-base-url", default=os.environ.get("ROUTELLM_STRONG_BASE_URL"),
                        help="OpenAI-compatible base URL of the strong model (env ROUTELLM_STRONG_BASE_URL)")
    parser.add_argument("--strong-model", default=os.environ.get("ROUTELLM_STRONG_MODEL"),
                        help="model name at that endpoint (env ROUTELLM_STRONG_MODEL)")
    parser.add_argument("--strong-api-key-env", default="ROUTELLM_STRONG_API_KEY",
                        help="environment variable holding the endpoint's API key (default ROUTELLM_STRONG_API_KEY)")
    parser.add_argument("--max-tokens", type=int, default=64, help="most tokens per answer (default 64)")
    parser.add_argument("--prompt", action="append", default=None, dest="prompts",
                        help="a prompt to route (repeatable; default: the built-in handful)")
    parser.set_defaults(func=run)
    return parser


def _strong_model(args: argparse.Namespace, weak: Any, out: TextIO) -> tuple[Any, str]:
    if not args.strong_base_url:
        out.write(
            "No strong endpoint given (--strong-base-url or ROUTELLM_STRONG_BASE_URL): running OFFLINE with "
            "local SmolLM2-135M-Instruct on BOTH sides.\nThe decisions are real; the answers show routing, "
            "not a quality difference.\n\n"
        )
        weak._model()  # load once; the copy shares the loaded model and its lock
        return weak.model_copy(update={"model_name": "smollm2-135m-instruct (as strong)"}), "local (offline)"
    if not args.strong_model:
        raise ConfigError("--strong-base-url needs --strong-model (or ROUTELLM_STRONG_MODEL)")
    try:
        from langchain_openai import ChatOpenAI
    except ImportError:
        raise ConfigError("a strong endpoint needs langchain-openai: pip install langchain-openai") from None
    key = os.environ.get(args.strong_api_key_env) or "unused"
    strong = ChatOpenAI(model=args.strong_model, base_url=args.strong_base_url, api_key=key,
                        max_tokens=args.max_tokens, temperature=0.0, max_retries=1, timeout=120)
    return strong, f"{args.strong_model} at {args.strong_base_url}"


def _router_label(spec: Any, kind: str) -> str:
    """The shipped name the user asked for (``default`` named by its alias), and the router's kind."""
    from shared_core.engine import shipped_aliases

    name, aliases = ("default" if spec is None else spec), shipped_aliases()
    if isinstance(name, str) and name in aliases:
        name = f"{aliases[name]}, the default"
    return kind if not isinstance(name, str) or name == kind else f"{name} ({kind} router)"


def build_llm(args: argparse.Namespace, prompts: Sequence[str], out: TextIO) -> Any:
    """RouteLLMChat for the demo; the router is resolved before any model loads."""
    from langchain_routellm import RouteLLMChat
    from langchain_routellm.examples.local import LlamaCppChat
    from shared_core.engine import is_model_string, resolve_router

    router: Any = args.router
    calibration = None
    if not is_model_string(router):
        try:
            router = resolve_router(router)
        except ConfigError as exc:
            if args.router is None:
                raise ConfigError(
                    f"the shipped default router is not available ({exc}). Run the demo with another router, "
                    "e.g. 'routellm demo --router random --threshold 0.5', or a trained router directory"
                ) from None
            raise
        if args.threshold is None and router.reference_quantiles is None:
            calibration = list(prompts)  # no shipped score quantiles: calibrate on the demo's own prompts
    weak = LlamaCppChat(max_tokens=args.max_tokens)
    strong, strong_label = _strong_model(args, weak, out)
    llm = RouteLLMChat(strong=strong, weak=weak, router=router, threshold=args.threshold,
                       strong_fraction=args.strong_fraction, calibration_prompts=calibration)
    out.write(f"strong: {strong_label}\nweak:   smollm2-135m-instruct (local, llama-cpp-python)\n"
              f"router: {_router_label(args.router, llm.engine.router.name)}, threshold {llm.engine.threshold:.4f}"
              f"{' (calibrated on these prompts)' if calibration else ''}\n\n")
    return llm


def run(args: argparse.Namespace, out: Optional[TextIO] = None) -> int:
    out = out or sys.stdout
    prompts = list(args.prompts or DEMO_PROMPTS)
    try:
        llm = build_llm(args, prompts, out)
    except RouteLLMError as exc:
        out.write(f"routellm demo: {exc}\n")
        return 2
    except ValueError as exc:  # other configuration errors (ConfigError is a ValueError too)
        out.write(f"routellm demo: {exc}\n")
        return 2
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnableLambda, RunnableParallel

    chain = ChatPromptTemplate.from_messages([("system", SYSTEM), ("human", "{question}")]) | llm | RunnableParallel(
        answer=StrOutputParser(), decision=RunnableLambda(lambda m: m.response_metadata["routellm"])
    )
    start = time.perf_counter()
    # One router call for all prompts; a failing endpoint is reported per prompt, not as a traceback.
    results = chain.batch([{"question": p} for p in prompts], return_exceptions=True)
    strong = failed = 0
    for prompt, result in zip(prompts, results):
        if isinstance(result, Exception):
            failed += 1
            d = {**llm.route(prompt).to_dict(), "model": "?"}
            answer = f"ERROR {type(result).__name__}: {result}"
        else:
            d, answer = result["decision"], " ".join(result["answer"].split())
        strong += d["role"] == "strong"
        score = "n/a " if d["score"] is None else f"{d['score']:.3f}"
        cmp = ">=" if d["role"] == "strong" else "< "
        out.write(f"[{d['role']:6}] score {score} {cmp} {d['threshold']:.3f}  {d['model']}\n")
        out.write(f"  Q: {prompt}\n  A: {answer}\n\n")
    out.write(f"strong share: {strong}/{len(prompts)} ({strong / len(prompts):.0%}) "
              f"in {time.perf_counter() - start:.1f} s\n")
    if failed:
        out.write(f"{failed} call(s) failed; see the errors above\n")
        return 1
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="routellm")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
