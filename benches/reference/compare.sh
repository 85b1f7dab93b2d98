#!/usr/bin/env bash
# Runs the PyTorch reference scripts and `sclstm bench` in alternation, N rounds, then
# prints the median of every figure and the sclstm / PyTorch ratios (summarize.py).
#
# Alternating (reference, sclstm, reference, sclstm, …) spreads the noise of a shared
# machine over both sides instead of letting it land on one.
#
# Usage: benches/reference/compare.sh [options]
#   -n N            rounds (default 3)
#   --python PY     Python with torch and pytorch-crf (default: $PYTHON or python3)
#   --sclstm BIN    the sclstm binary (default: $SCLSTM or target/release/sclstm)
#   --threads N     threads on both sides (default 2)
#   --criterion     also run the criterion `cpu_crf` group each round (CRF ratios)
#   --precision P   sclstm's inference products, f32 (default), bf16 or int8; with bf16
#                   the PyTorch scripts also time inference under bf16 autocast, with
#                   int8 their layers dynamically quantized to int8 (extra rows)
#   --infer-batch N sentences per inference batch of the PyTorch scripts (default 10;
#                   sclstm tags in batches of up to 64 sentences and 2,048 tokens)
#   --isa avx2      both sides on AVX2 alone, as on a CPU without AVX-512: sclstm's AVX2
#                   kernels (SCLSTM_KERNELS=avx2) and PyTorch's (ATEN_CPU_CAPABILITY,
#                   MKL_ENABLE_INSTRUCTIONS, ONEDNN_MAX_CPU_ISA, FBGEMM_ENABLE_INSTRUCTIONS);
#   --isa avxvnni   the same with AVX-VNNI as well, as on Intel's cores without AVX-512
#                   (12th generation on): sclstm SCLSTM_KERNELS=avxvnni, oneDNN AVX2_VNNI,
#                   MKL AVX2_E1 (PyTorch's ATen and FBGEMM have no AVX-VNNI level: AVX2);
#                   matrixmultiply, which computes sclstm's weight gradients, keeps its own
#                   choice (it has no run-time switch; benches/README.md measures the
#                   difference); default: each side picks its best
#   --quick         fewer batches per script (a smoke run, not a measurement)
#   --out FILE      keep the raw JSON lines in FILE (default: a temporary file)
# The environment reaches every script, e.g. OMP_WAIT_POLICY=PASSIVE on a busy machine
# (on a quiet one it slows PyTorch's multi-thread runs; the default is the fair baseline).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
REF="$ROOT/benches/reference"
ROUNDS=3
PY="${PYTHON:-python3}"
SCLSTM="${SCLSTM:-$ROOT/target/release/sclstm}"
THREADS=2
CRITERION=0
PRECISION=f32
MODEL_OPTS=()
QUICK=()
OUT=""
ISA=""

while [[ $# -gt 0 ]]; do
  case "$1" in
    -n) ROUNDS="$2"; shift 2 ;;
    --python) PY="$2"; shift 2 ;;
    --sclstm) SCLSTM="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --criterion) CRITERION=1; shift ;;
    --precision) PRECISION="$2"; shift 2 ;;
    --infer-batch) MODEL_OPTS+=(--infer-batch "$2"); shift 2 ;;
    --isa) ISA="$2"; shift 2 ;;
    --quick) QUICK=(--warmup 2 --train-batches 5 --infer-batches 5); shift ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,26p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "compare.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done

if ! "$PY" -c 'import torch, torchcrf' 2>/dev/null; then
  echo "compare.sh: '$PY' cannot import torch and torchcrf." >&2
  echo "  Install them:  $PY -m pip install -r benches/reference/requirements.txt" >&2
  echo "  or point --python (or PYTHON=) at a Python that has them." >&2
  exit 1
fi

HAVE_SCLSTM=0
if [[ -x "$SCLSTM" ]] && "$SCLSTM" bench --help >/dev/null 2>&1; then
  HAVE_SCLSTM=1
else
  echo "compare.sh: no usable sclstm at '$SCLSTM' (missing, or without the 'bench'"
  echo "  subcommand). Build it with 'cargo build --release' or pass --sclstm BIN."
  echo "  Measuring the PyTorch side only; the ratio column stays empty."
fi

case "$PRECISION" in
  f32) ;;
  bf16) MODEL_OPTS+=(--bf16) ;;
  int8) MODEL_OPTS+=(--int8) ;;
  *) echo "compare.sh: --precision must be f32, bf16 or int8, not '$PRECISION'" >&2; exit 2 ;;
esac

case "$ISA" in
  "") ;;
  avx2)
    export SCLSTM_KERNELS=avx2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
      ONEDNN_MAX_CPU_ISA=AVX2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2 ;;
  avxvnni)
    export SCLSTM_KERNELS=avxvnni ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2_E1 \
      ONEDNN_MAX_CPU_ISA=AVX2_VNNI FBGEMM_ENABLE_INSTRUCTIONS=AVX2 ;;
  *) echo "compare.sh: --isa takes avx2 or avxvnni (or is left out), not '$ISA'" >&2; exit 2 ;;
esac

export PYTHONDONTWRITEBYTECODE=1
RESULTS="${OUT:-$(mktemp -t sclstm-compare.XXXXXX)}"
: > "$RESULTS"
echo "compare.sh: $ROUNDS round(s), $THREADS thread(s); raw results in $RESULTS"
echo "compare.sh: timings on a shared or busy machine are noisy; compare medians, not single runs."
echo "compare.sh: OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-unset, the PyTorch default: threads spin between operations}${SCLSTM_KERNELS:+; SCLSTM_KERNELS=$SCLSTM_KERNELS}"

# Appends the JSON lines of stdin to the results, tagged with the round and extra fields.
tag() {
  "$PY" -c '
import json, sys
extra = json.loads(sys.argv[1])
for line in sys.stdin:
    line = line.strip()
    if line.startswith("{"):
        rec = json.loads(line)
        rec.update(extra)
        print(json.dumps(rec, sort_keys=True))
' "$1" | tee -a "$RESULTS"
}

reference() {
  local round="$1"; shift
  echo "--- round $round: python $*" >&2
  "$PY" "$@" --threads "$THREADS" | tag "{\"round\": $round}"
}

ours() {
  local round="$1" model="$2"
  if [[ $HAVE_SCLSTM -eq 0 ]]; then return 0; fi
  echo "--- round $round: sclstm bench --model $model" >&2
  # Only the last JSON line counts: the command may print progress before it.
  if ! "$SCLSTM" bench --json --backend cpu --model "$model" --batch 10 --threads "$THREADS" \
      --precision "$PRECISION" \
      | grep '^{' | tail -n 1 \
      | tag "{\"round\": $round, \"source\": \"sclstm\", \"model\": \"$model\"}"; then
    echo "compare.sh: 'sclstm bench --model $model' failed; continuing" >&2
  fi
}

criterion_crf() {
  local round="$1"
  echo "--- round $round: cargo bench --bench kernels -- cpu_crf" >&2
  (cd "$ROOT" && cargo bench --bench kernels -- cpu_crf >/dev/null 2>&1) || {
    echo "compare.sh: the criterion run failed; skipping the CRF ratios this round" >&2
    return 0
  }
  "$PY" - "$ROOT/target/criterion/cpu_crf" "$round" <<'EOF' | tee -a "$RESULTS"
import json, os, sys
base, rnd = sys.argv[1], int(sys.argv[2])
tokens = 30 * 10
for tags in (9, 23):
    rec = {"source": "criterion", "model": "crf", "tags": tags, "round": rnd}
    for kind in ("nll_grad", "viterbi"):
        path = os.path.join(base, kind, str(tags), "new", "estimates.json")
        ns = json.load(open(path))["median"]["point_estimate"]
        rec[f"{kind}_tokens_per_s"] = round(tokens / (ns * 1e-9), 1)
    print(json.dumps(rec, sort_keys=True))
EOF
}

for ((r = 1; r <= ROUNDS; r++)); do
  reference "$r" "$REF/lstm_s.py" --variant packed "${QUICK[@]}" "${MODEL_OPTS[@]}"
  ours "$r" lstm-s
  reference "$r" "$REF/lstm_s.py" --variant padded "${QUICK[@]}" "${MODEL_OPTS[@]}"
  reference "$r" "$REF/sc_lstm.py" "${QUICK[@]}" "${MODEL_OPTS[@]}"
  ours "$r" sc-lstm
  reference "$r" "$REF/crf.py"
  if [[ $CRITERION -eq 1 ]]; then criterion_crf "$r"; fi
  reference "$r" "$REF/gemm.py"
done >/dev/null

echo
"$PY" "$REF/summarize.py" "$RESULTS"
