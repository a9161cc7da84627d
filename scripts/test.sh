#!/usr/bin/env bash
# The test command: every tier that fits CI's time. It starts the local
# SmolLM2 OpenAI-compatible servers on 127.0.0.1 for the real-model tests
# (llama-cpp-python's, and llama.cpp's llama-server for the Responses API when
# scripts/build_llama_server.sh has built it) and stops them afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
export OPENBLAS_NUM_THREADS=1
port="${ROUTELLM_TEST_PORT:-8765}"
responses_port="${ROUTELLM_TEST_RESPONSES_PORT:-$((port + 1))}"
started=()
stop_all() { for p in "${started[@]}"; do scripts/llama_server.sh stop "$p"; done; }
trap stop_all EXIT
if [ -x scripts/llama_server.sh ] && [ -z "${ROUTELLM_TEST_SERVER_URL:-}" ]; then
  scripts/llama_server.sh start "$port"
  started+=("$port")
  export ROUTELLM_TEST_SERVER_URL="http://127.0.0.1:${port}/v1"
fi
bin="$(python -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
if [ -x "$bin/llama-server" ] && [ -z "${ROUTELLM_TEST_RESPONSES_URL:-}" ]; then
  scripts/llama_server.sh start "$responses_port" cpp
  started+=("$responses_port")
  export ROUTELLM_TEST_RESPONSES_URL="http://127.0.0.1:${responses_port}/v1"
fi
python -m pytest "$@"
