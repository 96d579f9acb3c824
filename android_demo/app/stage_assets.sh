#!/usr/bin/env bash
# Copy a conversion's TFLite base and deltas into the app's assets.
#
#   android_demo/app/stage_assets.sh SHIP_DIR
#
# SHIP_DIR is an `edgepatch convert` output (base.tflite + <task>.delta files). The files
# land in app/src/main/assets/edgepatch/ (git-ignored); the Gradle build stores them
# uncompressed so the app can memory-map the base.
set -euo pipefail
if [ "$#" -ne 1 ] || [ ! -f "$1/base.tflite" ]; then
    echo "usage: $0 SHIP_DIR   (a directory holding base.tflite and <task>.delta files)" >&2
    exit 2
fi
dest="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/src/main/assets/edgepatch"
mkdir -p "$dest"
rm -f "$dest"/*.tflite "$dest"/*.delta
cp "$1/base.tflite" "$dest/"
shopt -s nullglob
deltas=("$1"/*.delta)
[ "${#deltas[@]}" -gt 0 ] || { echo "$1 holds no .delta files" >&2; exit 1; }
cp "${deltas[@]}" "$dest/"
echo "staged base.tflite and ${#deltas[@]} deltas in $dest"
