"""``routellm serve``: run the routing server with uvicorn.

Registered in the ``routellm.commands`` entry-point group, like ``routellm
demo``; ``python -m shared_core.server ...`` runs the same command.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import shutil
import sys
import tempfile
from typing import Any, Sequence

from shared_core.errors import ConfigError

#: Environment variable through which the parent hands its flags to uvicorn worker processes.
_FLAGS_ENV = "ROUTELLM_SERVE_FLAGS_JSON"
_FLAG_FIELDS = ("strong_base_url", "strong_model", "weak_base_url", "weak_model", "router", "threshold",
                "strong_fraction", "host", "port", "workers", "model_name", "fallback", "upstream_timeout",
                "max_body_bytes", "max_messages", "log_prompts", "prices", "target_strong_share", "controller_window",
                "strong_budget", "budget_period", "budget_reserve", "strong_max_output_tokens", "escalate_on",
                "stream_usage", "strong_responses", "weak_responses")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "serve",
        help="run an OpenAI-compatible server that routes each chat request to a strong or a weak upstream",
        description=(
            "An OpenAI-compatible routing server (POST /v1/chat/completions, POST /v1/responses, GET /v1/models, "
            "/health, /metrics). "
            "Settings come from flags, environment variables (ROUTELLM_STRONG_BASE_URL, ROUTELLM_SERVE_PORT, ...) "
            "or a .json/.toml config file (--config or ROUTELLM_SERVE_CONFIG); flags win. Upstream keys come only "
            "from ROUTELLM_STRONG_API_KEY / ROUTELLM_WEAK_API_KEY; client bearer tokens from "
            "ROUTELLM_SERVE_AUTH_TOKENS or the file's auth_tokens (none: loopback clients only). "
            "Cost controls (all opt-in; each flag also as ROUTELLM_SERVE_<FLAG> and as a config-file key): "
            "--prices, --target-strong-share, --strong-budget, --escalate-on. A share controller and a budget "
            "live in one process: they are refused with --workers above 1 and with --ray."
        ),
    )
    parser.add_argument("--config", default=None, help="a .json or .toml file of settings (env ROUTELLM_SERVE_CONFIG)")
    parser.add_argument("--strong-base-url", help="OpenAI-compatible base URL of the strong model, e.g. https://host/v1")
    parser.add_argument("--strong-model", help="model name to ask the strong endpoint for")
    parser.add_argument("--weak-base-url", help="OpenAI-compatible base URL of the weak model")
    parser.add_argument("--weak-model", help="model name to ask the weak endpoint for")
    parser.add_argument("--router", help="registry name, saved router directory or RouteLLM model string "
                                         "(default: the shipped default router)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--threshold", type=float, help="strong when score >= threshold, in [0, 1]")
    group.add_argument("--strong-fraction", type=float,
                       help="target share of strong calls (default 0.5 when no threshold is given)")
    group.add_argument("--target-strong-share", type=float, metavar="X",
                       help="hold the strong share at X in [0, 1] with a share controller that moves the threshold "
                            "online (starts from the threshold --strong-fraction X would give; /health and /metrics "
                            "show its threshold and realised share)")
    parser.add_argument("--host", help="address to bind (default 127.0.0.1; any other needs client tokens)")
    parser.add_argument("--port", type=int, help="port (default 6060)")
    parser.add_argument("--workers", type=int, help="uvicorn worker processes (default 1)")
    parser.add_argument("--model-name", help="model name clients send for the configured router (default routellm)")
    parser.add_argument("--fallback", action="store_true", default=None,
                        help="if the chosen upstream fails (unreachable, timeout, 429, 5xx), call the other one")
    parser.add_argument("--upstream-timeout", type=float, help="seconds to wait for an upstream (default 120)")
    parser.add_argument("--max-body-bytes", type=int, help="largest request body accepted (default 8 MiB)")
    parser.add_argument("--max-messages", type=int, help="most messages per request (default 1024)")
    parser.add_argument("--log-prompts", action="store_true", default=None,
                        help="include the request messages in the access log (off by default)")
    costs = parser.add_argument_group("cost controls")
    costs.add_argument("--prices", metavar="FILE",
                       help=".json/.toml price table: upstream model name -> [input, output] dollars per million "
                            "tokens (or {input, output}); both models must be priced. Adds cost counters to /metrics")
    costs.add_argument("--controller-window", type=int, metavar="N",
                       help="with --target-strong-share: decisions the realised share is measured over (default 500, "
                            "at least 50)")
    costs.add_argument("--strong-budget", type=float, metavar="DOLLARS",
                       help="cap the strong model's spend per period (needs --prices): each strong answer is charged "
                            "its usage at the prices; once spent, calls go weak with x-routellm-reason: "
                            "budget_exhausted. A strong answer without usage (an upstream that sends none in "
                            "streams, see --no-stream-usage; a stream the client left) is charged its request's "
                            "upper bound (its bytes and max_tokens); a request without max_tokens has none, so it is "
                            "charged --budget-reserve, or with none the period counts as spent. One budget per "
                            "process: not with --workers above 1")
    costs.add_argument("--budget-period", type=float, metavar="SECONDS",
                       help="the budget's period, aligned to the clock (default 3600)")
    costs.add_argument("--budget-reserve", type=float, metavar="DOLLARS",
                       help="held back per strong call in flight, so that concurrent calls cannot overshoot the cap "
                            "(default 0; at least one strong call's cost makes the cap hard)")
    costs.add_argument("--strong-max-output-tokens", type=int, metavar="N",
                       help="the most tokens the strong model can answer (its model card's maximum output, 16384 "
                            "for gpt-4o): bounds a strong answer without usage whose request sets no max_tokens, "
                            "which is then charged that bound instead of the reserve or the period")
    costs.add_argument("--escalate-on", metavar="CHECKS",
                       help="comma-separated checks (empty, refusal, length, tool_calls, structured, or all): a weak "
                            "answer that fails one is sent to the strong model (streams are buffered while checked); "
                            "headers x-routellm-escalated-from and x-routellm-escalation-reason say so")
    costs.add_argument("--stream-usage", action=argparse.BooleanOptionalAction, default=None,
                       help="ask the upstream for each stream's usage (stream_options.include_usage), so that "
                            "streams are priced and charged; a client that did not ask gets the stream without it "
                            "(default on; --no-stream-usage for an upstream that refuses stream_options: requests "
                            "go upstream as sent)")
    for role in ("strong", "weak"):
        parser.add_argument(f"--{role}-responses", choices=("native", "chat"),
                            help=f"how the {role} upstream serves POST /v1/responses: native (default: its own "
                                 "/responses) or chat (it has chat completions only: the server translates each "
                                 "Responses request and answer; what a chat completion cannot say goes to the other "
                                 "upstream if it is native, else is refused)")
    parser.add_argument("--ray", action="store_true",
                        help="deploy the same app on Ray Serve (a running cluster, else a local one) instead of uvicorn")
    parser.add_argument("--replicas", type=int, default=None, help="with --ray: Ray Serve replicas (default 1)")
    parser.set_defaults(func=run)
    return parser


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    return {f: getattr(args, f, None) for f in _FLAG_FIELDS}


def configure_logging() -> None:
    """Access log lines (JSON, one a request) and start-up messages to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in ("shared_core.server",):
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def app_from_env():
    """App factory for uvicorn worker processes: the parent's flags, this process's env."""
    from shared_core.server.app import create_app
    from shared_core.server.config import load_config

    configure_logging()
    flags = json.loads(os.environ.get(_FLAGS_ENV, "{}"))
    config_file = flags.pop("config", None)
    return create_app(load_config(flags, config_file=config_file))


def _require_server_extra() -> None:
    for module in ("fastapi", "uvicorn", "prometheus_client"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            raise ConfigError(
                f"'routellm serve' needs {module!r}, which is not installed: "
                'pip install "routellm-integrations[server]"'
            ) from exc


def run(args: argparse.Namespace) -> int:
    _require_server_extra()
    import uvicorn

    from shared_core.server.app import build_engines, create_app
    from shared_core.server.config import load_config

    config = load_config(_flags(args), config_file=args.config)
    configure_logging()
    log = logging.getLogger("shared_core.server")
    if args.replicas is not None and not args.ray:
        raise ConfigError("--replicas is for --ray; without Ray, use --workers N")
    default, aliases = build_engines(config)  # fail here, before binding, on a bad router
    log.info("routellm serve: router %s, threshold %.6f; strong %r at %s, weak %r at %s; listening on http://%s:%d/v1",
             default.router.label, default.threshold, config.strong_model, config.strong_base_url,
             config.weak_model, config.weak_base_url, config.host, config.port)
    controls = [f"{name} {getattr(config, name)!r}" for name in
                ("target_strong_share", "strong_budget", "budget_period", "budget_reserve", "strong_max_output_tokens",
                 "escalate_on") if getattr(config, name)]
    if config.prices is not None or controls:
        log.info("routellm serve: cost controls: %s", ", ".join(
            (["prices for " + ", ".join(sorted(config.prices))] if config.prices else []) + controls))
    if config.strong_budget is not None and not config.budget_reserve and not config.strong_max_output_tokens:
        log.warning("routellm serve: a strong answer without usage (a stream whose client leaves before its usage, an "
                    "upstream that sends none) whose request sets no max_tokens has no bound on its cost, so it ends "
                    "the budget's period; --strong-max-output-tokens N (the strong model's maximum output) bounds it, "
                    "--budget-reserve DOLLARS charges that instead")
    if not config.stream_usage:
        log.info("routellm serve: --no-stream-usage: streams go upstream as the client sent them, so a stream whose "
                 "client did not ask for usage has no usage to price")
    if not config.auth_tokens:
        log.info("routellm serve: no client tokens configured, so this server accepts loopback clients only "
                 "(set ROUTELLM_SERVE_AUTH_TOKENS or auth_tokens in the config file to serve other hosts)")
    if args.ray:
        return _run_ray(args, config)
    common = dict(host=config.host, port=config.port, access_log=False, log_level="info",
                  timeout_graceful_shutdown=config.shutdown_timeout)
    if config.workers == 1:
        uvicorn.run(create_app(config, default, aliases), **common)
        return 0
    flags = {k: v for k, v in _flags(args).items() if v is not None}
    flags["config"] = args.config
    os.environ[_FLAGS_ENV] = json.dumps(flags)
    made = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # the workers' metrics, summed at /metrics
        made = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="routellm-metrics-")
    try:
        uvicorn.run("shared_core.server.cli:app_from_env", factory=True, workers=config.workers, **common)
    finally:
        if made:
            shutil.rmtree(made, ignore_errors=True)
    return 0


def _run_ray(args: argparse.Namespace, config) -> int:
    from shared_core.server import ray_serve

    if args.workers not in (None, 1):
        raise ConfigError(f"--workers {args.workers} is for uvicorn; with --ray, use --replicas N")
    ray_serve.check_controls(config)
    replicas = 1 if args.replicas is None else args.replicas
    log = logging.getLogger("shared_core.server")
    log.info("routellm serve --ray: %d replica(s) on Ray Serve, listening on http://%s:%d/v1",
             replicas, config.host, config.port)
    flags = {k: v for k, v in _flags(args).items() if v is not None}
    ray_serve.run(flags, args.config, config.host, config.port, replicas)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from shared_core.errors import RouteLLMError

    parser = argparse.ArgumentParser(prog="routellm")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_parser(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except RouteLLMError as exc:
        print(f"routellm {args.command}: error: {exc}", file=sys.stderr)
        return 2

