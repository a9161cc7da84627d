"""``routellm demo``: wiring, clear errors, and real runs with local SmolLM2."""

from __future__ import annotations

import argparse
import io
import os

import pytest

from langchain_routellm.examples import demo

TWO = ["--prompt", "What is the capital of France?", "--prompt", "Say hello to a new colleague in one sentence."]


def _run(argv: list[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="routellm")
    demo.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["demo", *argv])
    out = io.StringIO()
    return demo.run(args, out=out), out.getvalue()


def test_add_parser_registers_demo(monkeypatch):
    monkeypatch.delenv("ROUTELLM_STRONG_BASE_URL", raising=False)
    parser = argparse.ArgumentParser(prog="routellm")
    demo.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["demo", "--router", "random", "--threshold", "0.3"])
    assert args.func is demo.run and args.threshold == 0.3 and args.strong_base_url is None
    with pytest.raises(SystemExit):  # threshold and strong fraction exclude each other
        parser.parse_args(["demo", "--threshold", "0.3", "--strong-fraction", "0.5"])


def test_bad_router_is_reported_not_raised():
    code, out = _run(["--router", "no-such-router", *TWO])
    assert code == 2 and "unknown router 'no-such-router'" in out


def test_strong_url_without_model_is_reported(monkeypatch):
    monkeypatch.delenv("ROUTELLM_STRONG_MODEL", raising=False)
    code, out = _run(["--router", "random", "--threshold", "0.5", "--strong-base-url", "http://127.0.0.1:9/v1", *TWO])
    assert code == 2 and "--strong-base-url needs --strong-model" in out


def test_missing_default_router_says_so(monkeypatch, tmp_path):
    # A broken install: the package's checkpoints folder holds no default router.
    import shared_core.engine as engine

    monkeypatch.setattr(engine, "CHECKPOINTS", tmp_path)
    engine._load_shipped.cache_clear()
    code, out = _run(TWO)
    assert code == 2
    assert "shipped default router is not available" in out and "--router random --threshold 0.5" in out


@pytest.mark.slow
def test_demo_offline_with_local_model(monkeypatch):
    monkeypatch.delenv("ROUTELLM_STRONG_BASE_URL", raising=False)
    code, out = _run(["--router", "random", "--threshold", "0.5", "--max-tokens", "8", *TWO])
    assert code == 0, out
    assert "running OFFLINE with local SmolLM2-135M-Instruct on BOTH sides" in out
    # random router scores: 0.706 for the first prompt, 0.209 for the second
    assert "[strong] score 0.706 >= 0.500" in out and "[weak  ] score 0.209 <  0.500" in out
    assert "strong share: 1/2 (50%)" in out
    answers = [line for line in out.splitlines() if line.startswith("  A: ")]
    assert len(answers) == 2 and all(len(a) > len("  A: ") for a in answers)


@pytest.mark.slow
def test_demo_default_router(monkeypatch):
    monkeypatch.delenv("ROUTELLM_STRONG_BASE_URL", raising=False)
    code, out = _run(["--max-tokens", "8", *TWO])
    assert code == 0, out
    assert "strong share: " in out and out.count("  A: ") == 2


@pytest.mark.server
@pytest.mark.skipif(not os.environ.get("ROUTELLM_TEST_SERVER_URL"), reason="ROUTELLM_TEST_SERVER_URL is not set")
def test_demo_with_a_strong_endpoint(monkeypatch):
    monkeypatch.setenv("ROUTELLM_STRONG_BASE_URL", os.environ["ROUTELLM_TEST_SERVER_URL"])
    monkeypatch.setenv("ROUTELLM_STRONG_MODEL", "smollm2-at-server")
    code, out = _run(["--router", "random", "--threshold", "0.5", "--max-tokens", "8", *TWO])
    assert code == 0, out
    assert "OFFLINE" not in out and "strong: smollm2-at-server at http://127.0.0.1" in out
    assert "[strong] score 0.706 >= 0.500  smollm2-at-server" in out


@pytest.mark.slow
@pytest.mark.enable_socket  # connects to a closed local port, on purpose
def test_unreachable_strong_endpoint_is_reported_per_prompt(monkeypatch):
    monkeypatch.setenv("ROUTELLM_STRONG_MODEL", "nowhere")
    code, out = _run(["--router", "random", "--threshold", "0.5", "--max-tokens", "4",
                      "--strong-base-url", "http://127.0.0.1:9/v1", *TWO])
    assert code == 1
    assert "[strong] score 0.706 >= 0.500  ?" in out and "ERROR OpenAIConnectionError: Connection error." in out
    assert "[weak  ] score 0.209 <  0.500  smollm2-135m-instruct" in out  # the weak call still answered
    assert "1 call(s) failed" in out


def test_the_routellm_demo_entry_point_names_the_examples_module():
    tomllib = pytest.importorskip("tomllib")
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text(encoding="utf-8"))
    target = pyproject["project"]["entry-points"]["routellm.commands"]["demo"]
    module, _, attr = target.partition(":")
    assert module == "langchain_routellm.examples.demo"  # the demo is an example, not the integration
    assert getattr(__import__(module, fromlist=[attr]), attr) is demo.add_parser


def test_demo_names_the_router_the_user_asked_for():
    from langchain_routellm.examples.demo import _router_label
    from shared_core.engine import shipped_aliases

    assert _router_label(None, "adaptive_ensemble") == f"{shipped_aliases()['default']}, the default (adaptive_ensemble router)"
    assert _router_label("irt", "irt") == "irt"
    assert _router_label("/x/saved", "mf") == "/x/saved (mf router)"
