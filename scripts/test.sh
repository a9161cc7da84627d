#!/usr/bin/env bash
# The test command: every tier that fits CI's time. It starts the local
# SmolLM2 OpenAI-compatible server on 127.0.0.1 for the real-model tests and
# stops it afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
export OPENBLAS_NUM_THREADS=1
port="${ROUTELLM_TEST_PORT:-8765}"
if [ -x scripts/llama_server.sh ] && [ -z "${ROUTELLM_TEST_SERVER_URL:-}" ]; then
  scripts/llama_server.sh start "$port"
  trap 'scripts/llama_server.sh stop "$port"' EXIT
  export ROUTELLM_TEST_SERVER_URL="http://127.0.0.1:${port}/v1"
fi
python -m pytest "$@"
