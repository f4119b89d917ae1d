#!/usr/bin/env bash
# The exact commands that produce benchmarks/results/bench/ (CPU). Run on a quiet machine from the
# repository root, with equitensor installed with its bench extra (pip install -e '.[bench]'):
#
#   bash benchmarks/run_bench_cpu.sh            # full sizes -> benchmarks/results/bench/
#   QUICK=1 bash benchmarks/run_bench_cpu.sh    # tiny sizes, a smoke test -> a temporary folder
#   MEDIUM=1 bash benchmarks/run_bench_cpu.sh   # reduced sizes (~20 min on 2 cores) -> results/bench/
#
# Environment: OUT (output folder), THREADS (torch threads; default all usable cores), ONLY (names
# of the benchmarks to run, e.g. ONLY="product model_cell": mace-torch pins e3nn 0.4.4, so its
# peers are measured by running those with a Python that has mace-torch, the others without).
# Every command checks each implementation against the cg reference before timing it and exits
# non-zero when one disagrees; the script then stops (a wrong result is a bug, not a timing).
set -euo pipefail

THREADS=${THREADS:-$(python -c "import os; print(len(os.sched_getaffinity(0)))")}
if [[ "${QUICK:-0}" == "1" ]]; then
    OUT=${OUT:-$(mktemp -d /tmp/equitensor-bench-quick.XXXXXX)}
    # tiny sizes: every subcommand and output path runs in about a minute or two
    TIMING=(--reps 2 --warmup 1 --min-rep-s 0 --no-probe)
    TP_L=1-2; TP_C_MANY=4; TP_BATCH=16
    CONV_L=1-2; CONV_C=4; EDGES=64
    PRODUCT_L=1-2; PRODUCT_C=4; NODES=16
    MODEL_L=1-2; MODEL_C=8; ATOMS=8
elif [[ "${MEDIUM:-0}" == "1" ]]; then
    OUT=${OUT:-benchmarks/results/bench}
    # what the committed results were made with: fewer channels/edges than the full profile
    TIMING=(--reps 5 --warmup 1 --min-rep-s 0.05 --max-seconds 20)
    TP_L=1-6; TP_C_MANY=16; TP_BATCH=1000
    CONV_L=1-3; CONV_C=32; EDGES=5000
    PRODUCT_L=1-3; PRODUCT_C=32; NODES=500
    MODEL_L=1-2; MODEL_C=32; ATOMS=108
else
    OUT=${OUT:-benchmarks/results/bench}
    TIMING=(--reps 10 --warmup 2 --min-rep-s 0.05 --max-seconds 60)
    TP_L=1-6; TP_C_MANY=32; TP_BATCH=1000
    CONV_L=1-3; CONV_C=64; EDGES=20000
    PRODUCT_L=1-3; PRODUCT_C=64; NODES=1000
    MODEL_L=1-3; MODEL_C=64; ATOMS=108
fi
mkdir -p "$OUT/plots"
COMMON=(--threads "$THREADS" --device cpu "${TIMING[@]}")
echo "writing to $OUT (torch threads: $THREADS)"

run() {  # run NAME ARGS...: one benchmark, its JSON, CSV, plots and terminal table
    local name=$1
    shift
    if [[ -n "${ONLY:-}" && " $ONLY " != *" $name "* ]]; then
        return
    fi
    equitensor bench "$@" "${COMMON[@]}" \
        --json "$OUT/$name.json" --csv "$OUT/$name.csv" --plot "$OUT/plots/$name" |
        tee "$OUT/$name.txt"
}

# Gaunt product (cg / gaunt / grid vs e3nn), outputs up to 2L: single channel and C channels
run tp_gaunt_c1 tp --op gaunt --lmax "$TP_L" --channels 1 --batch "$TP_BATCH" --passes fwd,fwd+bwd
run tp_gaunt_cmany tp --op gaunt --lmax "$TP_L" --channels "$TP_C_MANY" --batch "$TP_BATCH" \
    --passes fwd,fwd+bwd
# full tensor product of single-channel inputs (Price-of-Freedom "MIMO"), cg vs e3nn vs cuEquivariance
run tp_full tp --op full --backends cg,cp --lmax "$TP_L" --channels 1 --batch "$TP_BATCH" --passes fwd,fwd+bwd
# MACE edge convolution (cg / so2 vs e3nn, cuEquivariance), with the double backward of force training
run conv conv --lmax "$CONV_L" --channels "$CONV_C" --edges "$EDGES" --passes fwd,fwd+bwd,fwd+bwd+dbwd
# MACE product basis (symmetric contraction, correlation 3)
run product product --lmax "$PRODUCT_L" --channels "$PRODUCT_C" --batch "$NODES" --correlation 3 \
    --passes fwd,fwd+bwd,fwd+bwd+dbwd
# whole models: energy, energy + forces, and a training step's parameter gradient
run model_cell model --models mace,tensornet --lmax "$MODEL_L" --channels "$MODEL_C" --system cell \
    --atoms "$ATOMS" --passes fwd,fwd+bwd,fwd+bwd+dbwd
run model_molecule model --models mace,tensornet --lmax "$MODEL_L" --channels "$MODEL_C" \
    --system molecule --molecule CH3CH2OH --dtype float64 --passes fwd,fwd+bwd,fwd+bwd+dbwd

echo "done: $OUT"
