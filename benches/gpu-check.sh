#!/usr/bin/env bash
# GPU check: builds a release binary, runs the wgpu tests on the machine's real GPU, and
# compares `sclstm bench` training and inference throughput on wgpu and on the CPU for the
# paper configuration. Finishes in a few minutes; prints everything to standard output.
set -euo pipefail
cd "$(dirname "$0")/.."

export WGPU_BACKEND="${WGPU_BACKEND:-vulkan}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/sclstm-xdg}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 0700 "$XDG_RUNTIME_DIR"

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true

echo "== build (release)"
cargo build --release --quiet

echo "== wgpu tests"
cargo test --release --quiet -p sclstm-wgpu
cargo test --release --quiet --test main backends

echo "== throughput: paper config (SC-LSTM, 3 tasks, batch 10)"
for backend in wgpu cpu; do
    ./target/release/sclstm bench --backend "$backend" --model sc-lstm --json
done
