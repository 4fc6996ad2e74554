#!/usr/bin/env bash
# Builds and runs every test: Release (warnings as errors, CUDA compiled when nvcc is there),
# ASan+UBSan (no CUDA), bounded fuzzing; the Doxygen build runs first, inside the release stage. Prints each stage's time.
# QFORGE_FUZZ_SECONDS (default 30) bounds each fuzzer; QFORGE_REQUIRE_DATA=1 turns missing
# data files into failures (CI sets it).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d /usr/local/cuda/bin ] && export PATH="/usr/local/cuda/bin:$PATH"
jobs=$(nproc)
total_start=$SECONDS
stage() { stage_name=$1; stage_start=$SECONDS; echo; echo "=== stage: $1"; }
done_stage() { echo "=== stage '$stage_name' took $((SECONDS - stage_start)) s"; }

stage "dependencies"
bash scripts/deps.sh
done_stage

stage "models (SmolLM2 GGUF into the cache)"
bash scripts/fetch-models.sh
done_stage

stage "release build + tests (unit, consumers, peer)"
cuda_flags=()
if command -v nvcc >/dev/null; then cuda_flags=(-DQFORGE_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=80;90"); else cuda_flags=(-DQFORGE_CUDA=OFF); fi
cmake -S . -B build/ci-release -DCMAKE_BUILD_TYPE=Release -DQFORGE_WERROR=ON "${cuda_flags[@]}" >/dev/null
# Doxygen first: seconds, and a broken page should not wait for the builds to be reported
echo "--- docs (Doxygen, warnings are errors)"
cmake --build build/ci-release --target docs
cmake --build build/ci-release -j"$jobs"
(cd build/ci-release && ctest --output-on-failure -j"$jobs")
done_stage

stage "ASan+UBSan build + tests (no CUDA)"
san="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
# -O0 -g1 (line tables, enough for the sanitizers' stack traces): the stage's cost is mostly
# compilation. One test file with the sanitizers: 181 s at -O2 -g, 82 s at -O1 -g1 (2026-11),
# 78 s at -O1 and 45 s at -O0 (test_quantizer, 2026-12-05); the tests run a few times slower
# The instruction-set TUs at -O1 (QFORGE_DISPATCH_EXTRA_FLAGS): at -O0 every xsimd wrapper is a call
# and the tests on those kernels ran 263 s; 165 s at -O1, for ~25 s more compilation (2026-12-06)
cmake -S . -B build/ci-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O0 -g1 -DNDEBUG" \
      -DQFORGE_DISPATCH_EXTRA_FLAGS=-O1 -DQFORGE_WERROR=ON -DQFORGE_CUDA=OFF \
      -DQFORGE_BUILD_BENCH=OFF -DQFORGE_BUILD_EXAMPLES=OFF -DQFORGE_BUILD_DOCS=OFF \
      "-DCMAKE_CXX_FLAGS=$san" "-DCMAKE_EXE_LINKER_FLAGS=$san" >/dev/null
# Only the unit-test programs: the compile-only checks (compile_fail.*, doc.snippets, label
# "compile") ran in the release stage and run no code for the sanitizers to watch.
cmake --build build/ci-asan --target unit_tests -j"$jobs"
(cd build/ci-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j"$jobs" -L fast -LE compile)
done_stage

stage "fuzzers (libFuzzer, bounded)"
if command -v clang++ >/dev/null; then
  cmake -S . -B build/ci-fuzz -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQFORGE_CUDA=OFF \
        -DQFORGE_FUZZ=ON -DQFORGE_BUILD_BENCH=OFF -DQFORGE_BUILD_EXAMPLES=OFF -DQFORGE_BUILD_DOCS=OFF \
        "-DCMAKE_CXX_FLAGS=-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined" >/dev/null
  cmake --build build/ci-fuzz --target fuzzers -j"$jobs"
  seconds=${QFORGE_FUZZ_SECONDS:-30}
  for f in scheme llama2c quantize gguf safetensors tables; do
    corpus=build/ci-fuzz/corpus_$f
    mkdir -p "$corpus"
    ./build/ci-fuzz/tests/fuzz_$f -max_total_time="$seconds" -rss_limit_mb=2048 "$corpus" tests/fuzz/seeds/$f 2>&1 | tail -3
  done
else
  echo "clang++ not found: fuzzers not built"
fi
done_stage

echo
echo "=== all stages passed in $((SECONDS - total_start)) s"
