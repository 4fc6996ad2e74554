# Sourced by the peer tests: sets $model (SmolLM2 in the cache) and $python (the cache's virtual
# environment). Both are made once by setup_env.sh (the ctest fixture "peer_env"), never here:
# tests that each made them raced under ctest -j. Expects $src (source dir).
cache=${QFORGE_CACHE:-$HOME/.cache/qforge}
model=$cache/SmolLM2-135M-Instruct.Q4_1.gguf
venv=$cache/venv
python=$venv/bin/python
if [ ! -f "$venv/.qforge-complete" ] || [ ! -s "$model" ]; then
  echo "peer environment missing in $cache: run tests/peer/setup_env.sh (ctest runs it as peer.setup)" >&2
  exit 1
fi
