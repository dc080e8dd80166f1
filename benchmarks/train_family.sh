#!/usr/bin/env bash
# Train one tokenizer preset and then the generator presets that use it, each with its preset's
# defaults, into RUNS/<preset>/. A run interrupted (Ctrl-C, kill, a session that ends) continues
# from its last checkpoint when the script is started again; finished runs are skipped.
#
#   benchmarks/train_family.sh msvq-fmnist var-fmnist
#   benchmarks/train_family.sh vq-fmnist raster-fmnist maskgit-fmnist
#   benchmarks/train_family.sh kl-fmnist mar-fmnist mar-flow-fmnist
#
# Environment: RUNS (default runs), THREADS (torch threads per run, default 2), ARGEN (default .venv/bin/argen).
set -euo pipefail
RUNS=${RUNS:-runs}
THREADS=${THREADS:-2}
ARGEN=${ARGEN:-.venv/bin/argen}
[ $# -ge 1 ] || { echo "usage: $0 TOKENIZER_PRESET [GENERATOR_PRESET ...]" >&2; exit 2; }

done_run() { [ -f "$1/metrics.json" ]; }  # train_preset writes metrics.json after the last step

run() {  # run KIND PRESET [extra args]
    local kind=$1 preset=$2; shift 2
    local out="$RUNS/$preset"
    if done_run "$out"; then echo "$preset: done ($out/metrics.json)"; return; fi
    local resume=()
    [ -f "$out/train_state.safetensors" ] && resume=(--resume)
    echo "$preset: training into $out ${resume[*]}"
    "$ARGEN" train "$kind" --preset "$preset" --out "$out" --threads "$THREADS" --quiet "${resume[@]}" "$@"
}

tokenizer=$1; shift
run tokenizer "$tokenizer"
for generator in "$@"; do
    run generator "$generator" --tokenizer "$RUNS/$tokenizer"
done
