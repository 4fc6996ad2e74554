#!/usr/bin/env bash
# The peer tests' shared setup, run once before them (ctest fixture "peer_env"): fetches SmolLM2
# into the cache and makes the cache's virtual environment with the pinned packages of
# requirements.txt and llama-cpp-python built from source (llama.cpp: minutes on 2 cores).
# Safe to run concurrently and again: one flock serialises it; a stamp file holding the hash of
# requirements.txt and of this script marks a complete environment, so a half-made one (a run
# that was killed) is made again instead of used. Usage: setup_env.sh SOURCE_DIR
set -euo pipefail
src=$1
cache=${QFORGE_CACHE:-$HOME/.cache/qforge}
mkdir -p "$cache"
exec 9>"$cache/.peer-setup.lock"
flock 9
bash "$src/scripts/fetch-models.sh" >/dev/null
venv=$cache/venv
stamp=$venv/.qforge-complete
want=$(cat "$src/tests/peer/requirements.txt" "$0" | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "peer environment ready: $venv"
  exit 0
fi
start=$SECONDS
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$src/tests/peer/requirements.txt"
echo "building llama-cpp-python 0.3.36 (llama.cpp from source) into $venv"
# Without AMX: ggml's native build uses AMX tiles wherever the CPU lists them, and in this
# project's VMs (Xeon model 207) its Q4_1 matmul died on SIGILL there (why is not known: AMX tile
# loads after arch_prctl(ARCH_REQ_XCOMP_PERM) do run in a test program on the same VM). Explicit -mno-amx-* flags win over -march=native in GCC. --no-cache-dir:
# pip keeps the wheels it builds from source and reuses one for the same sdist whatever
# CMAKE_ARGS say, so the AMX build made before these flags kept coming back (CI, 2026-12-01).
CMAKE_ARGS="-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
-DCMAKE_C_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16' -DCMAKE_CXX_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'" \
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir --no-deps --no-binary llama-cpp-python llama-cpp-python==0.3.36
"$venv/bin/python" -c "import gguf, numpy, tokenizers, llama_cpp"
if "$venv/bin/python" -c "import llama_cpp; print(llama_cpp.llama_print_system_info().decode())" | grep -q "AMX"; then
  echo "llama-cpp-python was built with AMX (its Q4_1 matmul dies on SIGILL in these VMs): see the comment above" >&2
  exit 1
fi
echo "$want" > "$stamp"
echo "peer environment made in $((SECONDS - start)) s: $venv"
