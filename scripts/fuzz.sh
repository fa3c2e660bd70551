#!/usr/bin/env bash
# Fuzz the GGUF parser (and the config/tokenizer readers behind it) for N seconds.
# usage: scripts/fuzz.sh [SECONDS]
# cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP lets the stable toolchain
# provide them, and --sanitizer none avoids needing a sanitizer runtime.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-300}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
mkdir -p fuzz/corpus/gguf_parse
python3 scripts/fuzz-seeds.py fuzz/corpus/gguf_parse
RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none gguf_parse -- -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048
