# Sourced by the peer tests: fetches SmolLM2 into the cache (sets $model) and makes the cache's
# virtual environment with the pinned peer packages (sets $python). Expects $src (source dir).
cache=${QFORGE_CACHE:-$HOME/.cache/qforge}
model=$(bash "$src/scripts/fetch-models.sh")
venv=$cache/venv
python=$venv/bin/python
[ -x "$python" ] || python3 -m venv "$venv"
"$python" -c "import gguf, numpy, tokenizers" 2>/dev/null ||
  "$venv/bin/pip" install --quiet gguf==0.19.0 numpy==2.4.6 tokenizers==0.23.3
