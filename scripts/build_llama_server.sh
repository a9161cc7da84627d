#!/usr/bin/env bash
# Build llama.cpp's own server (llama-server) into this Python environment's bin/, from
# the llama.cpp source that llama-cpp-python's sdist vendors (PyPI), at the installed
# llama-cpp-python version. It is the real local model behind the tests of the routing
# server's Responses API (/v1/responses): llama-cpp-python's server has no such endpoint,
# llama-server has. CPU only, static; about 6 minutes on 2 cores. Skipped when that
# version is already built (a marker file beside the binary).
set -euo pipefail
python="${PYTHON:-python}"
version="$("$python" -c 'import llama_cpp; print(llama_cpp.__version__)')"
bin="$("$python" -c 'import sys, sysconfig; print(sysconfig.get_path("scripts"))')"
marker="$bin/.llama-server-$version"
if [ -x "$bin/llama-server" ] && [ -f "$marker" ]; then
  echo "llama-server $version already built: $bin/llama-server"
  exit 0
fi
work="$(mktemp -d -t llama-server-build-XXXXXX)"
trap 'rm -rf "$work"' EXIT
"$python" -m pip download --no-deps --no-binary :all: -q -d "$work" "llama-cpp-python==$version"
tar -xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
src="$(echo "$work"/llama_cpp_python-*/vendor/llama.cpp)"
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON >"$work/cmake.log" 2>&1 \
  || { tail -30 "$work/cmake.log" >&2; exit 1; }
cmake --build "$work/build" --target llama-server -j "$(nproc)" >"$work/build.log" 2>&1 \
  || { tail -30 "$work/build.log" >&2; exit 1; }
install -m 0755 "$work/build/bin/llama-server" "$bin/llama-server"
rm -f "$bin"/.llama-server-*
touch "$marker"
echo "llama-server $version built: $bin/llama-server"
