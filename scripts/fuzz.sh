#!/usr/bin/env bash
# Fuzz the GGUF parser (and the config/tokenizer readers behind it) for N
# seconds under a memory limit, so an allocation abort or runaway memory is a
# finding (saved under fuzz/artifacts/gguf_parse/), not a pass.
# usage: scripts/fuzz.sh [SECONDS]
# env: FUZZ_RSS_LIMIT_MB (default 2048), FUZZ_MALLOC_LIMIT_MB (default 512:
# twice the parser's 256 MiB header budget; no input of at most 64 KiB needs
# a tenth of it).
# cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP lets the stable toolchain
# provide them, and --sanitizer none avoids needing a sanitizer runtime (the
# target enforces the malloc limit itself, as the sanitizer's hook would).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
rss_limit_mb=${FUZZ_RSS_LIMIT_MB:-2048}
export FUZZ_MALLOC_LIMIT_MB=${FUZZ_MALLOC_LIMIT_MB:-512}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
mkdir -p fuzz/corpus/gguf_parse
python3 scripts/fuzz-seeds.py fuzz/corpus/gguf_parse
RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none gguf_parse -- -max_total_time="$seconds" -max_len=65536 \
  -rss_limit_mb="$rss_limit_mb" -malloc_limit_mb="$FUZZ_MALLOC_LIMIT_MB"
