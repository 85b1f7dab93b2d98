#!/usr/bin/env bash
# Copies the logs of a plan's run directories into results/ (never weights), with where they
# came from, so that `sclstm report --root results` can tabulate them.
#
#   scripts/collect-results.sh RUNS_ROOT PLAN [RESULTS]      (RESULTS defaults to results)
#
# For every RUNS_ROOT/PLAN/<run>/seed-<k>/ holding a metrics.jsonl, writes
# RESULTS/PLAN/<run>/seed-<k>/ with metrics.jsonl, config.toml, datasets.json, coverage.txt,
# grads.jsonl (when logged), train.log (from RUNS_ROOT/PLAN/logs/<run>-seed-<k>.log, as
# `sclstm sweep --run` writes it) and provenance.json: the commit of the code that trained it
# (COMMIT, default: this checkout's HEAD), the CPU model, the threads, and the command that
# resumes it. A run whose copy in RESULTS already holds more epochs (trained elsewhere, or
# before this run directory was restarted) is kept as it is and named. RUNS (space-separated
# run names, default: every run of the plan) limits the copy to those runs, so that runs
# trained by different commits each get their own COMMIT.
set -euo pipefail
root=${1:?usage: collect-results.sh RUNS_ROOT PLAN [RESULTS]}
plan=${2:?usage: collect-results.sh RUNS_ROOT PLAN [RESULTS]}
results=${3:-results}
commit=${COMMIT:-$(git -C "$(dirname "$0")" rev-parse --short HEAD)}
cpu=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')
# Epochs recorded in a metrics.jsonl: one dev "average" line per epoch.
epochs() { if [ -f "$1" ]; then grep -c '"task":"average","split":"dev"' "$1" || true; else echo 0; fi; }
n=0
for dir in "$root/$plan"/*/seed-*/; do
    dir=${dir%/}
    [ -f "$dir/metrics.jsonl" ] || continue
    seed=${dir##*/}
    run=$(basename "$(dirname "$dir")")
    if [ -n "${RUNS:-}" ] && [[ " $RUNS " != *" $run "* ]]; then continue; fi
    out="$results/$plan/$run/$seed"
    if [ "$(epochs "$out/metrics.jsonl")" -gt "$(epochs "$dir/metrics.jsonl")" ]; then
        echo "kept $out: it holds $(epochs "$out/metrics.jsonl") epochs, $dir $(epochs "$dir/metrics.jsonl")"
        continue
    fi
    mkdir -p "$out"
    for f in metrics.jsonl config.toml datasets.json coverage.txt grads.jsonl; do
        if [ -f "$dir/$f" ]; then cp "$dir/$f" "$out/$f"; fi
    done
    log="$root/$plan/logs/$run-$seed.log"
    if [ -f "$log" ]; then cp -L "$log" "$out/train.log"; fi
    threads=$(sed -n 's/^threads = //p' "$dir/config.toml")
    cat > "$out/provenance.json" <<JSON
{
  "commit": "$commit",
  "cpu": "$cpu",
  "threads": $threads,
  "resume": "sclstm train --resume $dir"
}
JSON
    n=$((n + 1))
done
echo "collected $n run(s) of $plan into $results/$plan"
