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
# trained by different commits each get their own COMMIT. Only finished runs are copied (every
# planned epoch, or `patience` epochs without a better dev average, as `sclstm sweep --status`
# counts them); PARTIAL=1 copies unfinished ones too (`sclstm report` marks them partial). A copy
# whose metrics.jsonl is the run's own is left as it is, provenance included, so that collecting
# a seed again never relabels it with another COMMIT.
set -euo pipefail
root=${1:?usage: collect-results.sh RUNS_ROOT PLAN [RESULTS]}
plan=${2:?usage: collect-results.sh RUNS_ROOT PLAN [RESULTS]}
results=${3:-results}
commit=${COMMIT:-$(git -C "$(dirname "$0")" rev-parse --short HEAD)}
cpu=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')
# Epochs recorded in a metrics.jsonl: one dev "average" line per epoch.
epochs() { if [ -f "$1" ]; then grep -c '"task":"average","split":"dev"' "$1" || true; else echo 0; fi; }
# A config.toml key's value (empty when absent).
key() { sed -n "s/^$1 = //p" "$2"; }
# Whether the run in directory $1 is finished: its dev averages reach the planned epochs, or the
# best of them is `patience` epochs old.
finished() {
    local planned patience
    planned=$(key epochs "$1/config.toml")
    patience=$(key patience "$1/config.toml")
    grep '"task":"average","split":"dev"' "$1/metrics.jsonl" |
        sed 's/.*"score":\([-0-9.eE+]*\).*/\1/' |
        awk -v planned="${planned:-0}" -v patience="${patience:-0}" '
            { n++; if (n == 1 || $1 > best) { best = $1; at = n } }
            END { exit !(n > 0 && (n >= planned || (patience > 0 && n - at >= patience))) }'
}
n=0
for dir in "$root/$plan"/*/seed-*/; do
    dir=${dir%/}
    [ -f "$dir/metrics.jsonl" ] || continue
    seed=${dir##*/}
    run=$(basename "$(dirname "$dir")")
    if [ -n "${RUNS:-}" ] && [[ " $RUNS " != *" $run "* ]]; then continue; fi
    out="$results/$plan/$run/$seed"
    if [ -z "${PARTIAL:-}" ] && ! finished "$dir"; then
        echo "skipped $dir: partial ($(epochs "$dir/metrics.jsonl") of $(key epochs "$dir/config.toml") epochs; PARTIAL=1 copies it)"
        continue
    fi
    if [ -f "$out/metrics.jsonl" ] && cmp -s "$dir/metrics.jsonl" "$out/metrics.jsonl"; then
        echo "unchanged $out"
        continue
    fi
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
    threads=$(key threads "$dir/config.toml")
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
