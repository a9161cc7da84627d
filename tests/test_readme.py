"""The README's code runs as written.

Every ``python`` block compiles (fast tier); the LangChain and LlamaIndex blocks run for
real in a fresh interpreter against the local SmolLM2 server (``server`` tier): its URL
stands in for both OpenAI's (``OPENAI_BASE_URL``) and the weak model's. The ``routellm``
commands the README shows without a model run too.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
#: Where the README says the local SmolLM2 server listens (``scripts/llama_server.sh start``).
README_SERVER = "http://127.0.0.1:8765/v1"


def blocks(language: str) -> list[tuple[str, str]]:
    """``(section heading, code)`` of every fenced block in ``language``."""
    text = README.read_text(encoding="utf-8")
    out = []
    for match in re.finditer(rf"^```{language}\n(.*?)^```", text, flags=re.M | re.S):
        heading = re.findall(r"^## (.+)$", text[: match.start()], flags=re.M)
        out.append((heading[-1] if heading else "", match.group(1)))
    return out


def section(name: str) -> str:
    found = [code for heading, code in blocks("python") if heading == name]
    assert len(found) == 1, f"README section {name!r} should hold one python block, found {len(found)}"
    return found[0]


def test_every_python_block_compiles() -> None:
    found = blocks("python")
    assert {h for h, _ in found} >= {"LangChain", "LlamaIndex"}
    for heading, code in found:
        compile(code, f"README.md ({heading})", "exec")


@pytest.mark.slow
def test_route_and_calibrate_commands_run() -> None:
    commands = [line.split("#")[0].strip() for _, code in blocks("bash") for line in code.splitlines()]
    shown = [c for c in commands if c.startswith(("routellm route ", "routellm calibrate "))]
    text = README.read_text(encoding="utf-8")
    shown += [m for m in re.findall(r"`(routellm (?:route|calibrate) [^`]+)`", text) if "PROMPT" not in m and "F]" not in m]
    runnable = [c for c in dict.fromkeys(shown) if "--prompts-file" not in c and "--file" not in c]
    assert any(c.startswith("routellm route") for c in runnable) and any("calibrate" in c for c in runnable)
    for command in runnable:
        done = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{command}: {done.stderr[-1500:]}"
        assert done.stdout.strip(), command


def _run_block(code: str) -> str:
    url = os.environ["ROUTELLM_TEST_SERVER_URL"].rstrip("/")
    env = {**os.environ, "OPENAI_BASE_URL": url, "OPENAI_API_KEY": "sk-local"}
    done = subprocess.run(
        [sys.executable, "-c", code.replace(README_SERVER, url)], capture_output=True, text=True, env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


needs_server = pytest.mark.skipif(
    not os.environ.get("ROUTELLM_TEST_SERVER_URL"), reason="ROUTELLM_TEST_SERVER_URL is not set (scripts/test.sh sets it)"
)


@pytest.mark.server
@needs_server
def test_langchain_block_runs() -> None:
    out = _run_block(section("LangChain"))
    assert "'role'" in out and "'score'" in out and "Decision(" in out


@pytest.mark.server
@needs_server
def test_llamaindex_block_runs() -> None:
    out = _run_block(section("LlamaIndex"))
    assert "Decision(" in out or "'role'" in out
