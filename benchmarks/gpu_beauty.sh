#!/usr/bin/env bash
# The Beauty benchmark on one GPU (benchmarks/README.md), every seed side by side on the one card.
#
#   bash benchmarks/gpu_beauty.sh baselines   # SASRec-CE (RecBole's defaults) and GRU4Rec-CE per seed
#   bash benchmarks/gpu_beauty.sh cemg        # CEMG per seed, reading that seed's SASRec checkpoint as its
#                                             # collaborative source (pure generative row + score-fusion row)
#   bash benchmarks/gpu_beauty.sh all         # both, one after the other
#   bash benchmarks/gpu_beauty.sh side-by-side  # SASRec per seed (the baseline rows and the seconds CEMG's cost is
#                                             # measured against, on this machine) while CEMG per seed reads the
#                                             # checkpoints already in $CKPT (e.g. the committed CPU ones): one pass
#   bash benchmarks/gpu_beauty.sh cold        # cold start (cold_item_ratio=0.1, the held-out items chosen from the
#                                             # seed): SASRec per seed, then CEMG reading it, and ContentSimilarity
#
# VARIANTS="codes8x256-codewords codes8x256-llm128x4@2020,2021" adds CEMG variants, named by their lines in
# $VARIANT_LIST (default benchmarks/configs/beauty-ablations.txt, the CPU ablations' list), for the seeds after '@'
# (default: the first seed), as <name>-<seed>.json beside the other results: the file names of the CPU ablations.
# Expects in the repo root: .devrun/data/Beauty/ (Beauty.inter, Beauty.item, Beauty.text.npz: see the README) and,
# on a machine without RecBole, .whl/ with wheels of recbole==1.2.1 colorlog==4.7.2 colorama texttable thop.
# The cemg phases read the SASRec checkpoints from $CKPT (default: $OUT) as sasrec-<seed>.pth.
# Writes result files (with their per-user results), each CEMG run's codes file, checkpoints and a tarball of the logs
# under $OUT (default benchmarks/results/beauty-gpu); BUNDLE=<file.tgz> also packs $OUT but its checkpoints into that
# one file, refreshed while the runs go on, for a machine that returns few files of limited size.
set -uo pipefail
PHASE=${1:-all}
OUT=${OUT:-benchmarks/results/beauty-gpu}
CKPT=${CKPT:-$OUT}
SEEDS=${SEEDS:-"2020 2021 2022"}
CEMG_ARGS=${CEMG_ARGS:-}   # extra --key=value for CEMG
VARIANT_SET=${VARIANT_SET:-}   # the same as key=value pairs, for the variants
VARIANT_LIST=${VARIANT_LIST:-benchmarks/configs/beauty-ablations.txt}
BUNDLE=${BUNDLE:-}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}   # a dozen runs share the machine's cores
DATASET=${DATASET:-Beauty} DATA=${DATA:-.devrun/data} EXTRA=${EXTRA:-}   # EXTRA: --key=value for every run
CONFIG_FILES=${CONFIG_FILES:-}   # config files for every run
mkdir -p "$OUT" /tmp/bench/logs
case $PHASE in
    cemg|side-by-side) for seed in $SEEDS; do [ -f "$CKPT/sasrec-$seed.pth" ] || {
        echo "no SASRec checkpoint $CKPT/sasrec-$seed.pth: set CKPT to the folder of sasrec-<seed>.pth" >&2; exit 1; }
        done ;;
    baselines|all|cold) ;;
    *) echo "unknown phase '$PHASE': baselines, cemg, all, side-by-side or cold" >&2; exit 1 ;;
esac
declare -A SPEC VARIANT_SEEDS
for entry in ${VARIANTS:-}; do
    name=${entry%%@*}
    SPEC[$name]=$(awk -v n="$name" '$1 == n { sub(/^[^ ]+ /, ""); print; exit }' "$VARIANT_LIST")
    [ -n "${SPEC[$name]}" ] || { echo "no variant '$name' in $VARIANT_LIST" >&2; exit 1; }
    seeds=${entry#"$name"} seeds=${seeds#@}
    VARIANT_SEEDS[$name]=${seeds:-${SEEDS%% *}}
done
if ! python3 -c "import recbole" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > /tmp/bench/logs/gpu.txt 2>&1
COMMON=(--dataset="$DATASET" --data_path="$DATA" --feature_path="$DATA/$DATASET" --show_progress=False
        --eval_batch_size=4096 ${CONFIG_FILES:+--config_files="$CONFIG_FILES"} $EXTRA)

# The logs leave the machine as one file, refreshed while the runs go on (a run cut short keeps its log).
pack() {
    tar -czf /tmp/bench/logs.tgz -C /tmp/bench logs && mv /tmp/bench/logs.tgz "$OUT/logs.tgz"
    [ -z "$BUNDLE" ] || { tar -czf "$BUNDLE.tmp" --exclude='*.pth' -C "$(dirname "$OUT")" "$(basename "$OUT")" && mv "$BUNDLE.tmp" "$BUNDLE"; }
}
(while sleep 20; do pack; done) &
TARRING=$!

baselines() {
    local seed=$1
    python3 run_cemg.py --model=SASRec "${COMMON[@]}" --seed="$seed" --checkpoint_dir="/tmp/saved/sasrec-$seed" \
        --result_file="$OUT/sasrec-$seed.json" > "/tmp/bench/logs/sasrec-$seed.log" 2>&1
    # weights and config only (no optimizer state): CEMG's collaborative source for this seed
    python3 benchmarks/weights_only.py "$(ls /tmp/saved/sasrec-"$seed"/SASRec-*.pth | grep -v resume | head -1)" \
        "$OUT/sasrec-$seed.pth" "$OUT/sasrec-$seed.json"
}

gru4rec() {
    python3 run_cemg.py --model=GRU4Rec "${COMMON[@]}" --seed="$1" --checkpoint_dir=/tmp/saved/gru4rec \
        --result_file="$OUT/gru4rec-$1.json" > "/tmp/bench/logs/gru4rec-$1.log" 2>&1
}

cemg() {
    local seed=$1
    python3 run_cemg.py --model=CEMG "${COMMON[@]}" --seed="$seed" --collab_source="$CKPT/sasrec-$seed.pth" \
        --checkpoint_dir="/tmp/saved/cemg-$seed" --result_file="$OUT/cemg-$seed.json" $CEMG_ARGS \
        > "/tmp/bench/logs/cemg-$seed.log" 2>&1
    # the codes file, for benchmarks/same_day_pairs.py --codes
    mkdir -p "$OUT/codes" && cp /tmp/saved/cemg-"$seed"/*.codes.json "$OUT/codes/cemg-$seed.json"
}

cold() {   # the same runs with 10% of the items held out of training for every model of the seed
    local seed=$1
    python3 run_cemg.py --model=SASRec "${COMMON[@]}" --seed="$seed" --cold_item_ratio=0.1 \
        --checkpoint_dir="/tmp/saved/cold-sasrec-$seed" --result_file="$OUT/cold-sasrec-$seed.json" \
        > "/tmp/bench/logs/cold-sasrec-$seed.log" 2>&1
    python3 run_cemg.py --model=ContentSimilarity "${COMMON[@]}" --seed="$seed" --cold_item_ratio=0.1 \
        --checkpoint_dir="/tmp/saved/cold-content-$seed" --result_file="$OUT/cold-content-$seed.json" \
        > "/tmp/bench/logs/cold-content-$seed.log" 2>&1
    python3 run_cemg.py --model=CEMG "${COMMON[@]}" --seed="$seed" --cold_item_ratio=0.1 \
        --collab_source="$(ls /tmp/saved/cold-sasrec-"$seed"/SASRec-*.pth | grep -v resume | head -1)" \
        --checkpoint_dir="/tmp/saved/cold-cemg-$seed" --result_file="$OUT/cold-cemg-$seed.json" $CEMG_ARGS \
        > "/tmp/bench/logs/cold-cemg-$seed.log" 2>&1
}

variant() {   # a named CEMG variant of $VARIANT_LIST as a row of its own
    local name=$1 seed=$2
    python3 benchmarks/compare.py --models="${SPEC[$name]}" --dataset="$DATASET" --data_path="$DATA" \
        --feature_path="$DATA/$DATASET" --output="$OUT/$name-$seed" ${CONFIG_FILES:+--config_files="$CONFIG_FILES"} \
        --set seed="$seed" show_progress=False eval_batch_size=4096 collab_source="$CKPT/sasrec-$seed.pth" \
        checkpoint_dir="/tmp/saved/$name-$seed" $VARIANT_SET > "/tmp/bench/logs/$name-$seed.log" 2>&1
}

for name in "${!SPEC[@]}"; do
    [ "$PHASE" != baselines ] || break
    for seed in ${VARIANT_SEEDS[$name]//,/ }; do
        if [ "$PHASE" = all ]; then (while [ ! -f "$CKPT/sasrec-$seed.pth" ]; do sleep 10; done; variant "$name" "$seed") &
        else variant "$name" "$seed" & fi
    done
done
case $PHASE in baselines|all) gru4rec "${SEEDS%% *}" & ;; esac   # a second baseline, one seed
for seed in $SEEDS; do
    case $PHASE in
        baselines) baselines "$seed" & ;;
        cemg) cemg "$seed" & ;;
        all) (baselines "$seed"; cemg "$seed") & ;;
        side-by-side) baselines "$seed" & cemg "$seed" & ;;
        cold) cold "$seed" & ;;
    esac
done
wait $(jobs -p | grep -v "^$TARRING$")
kill $TARRING
pack
# the table for the log; at home: python benchmarks/compare.py --merge <results>/*-*.json --output=<prefix>
python3 benchmarks/compare.py --merge "$OUT"/*-*.json --output=/tmp/bench/beauty | tail -n 24
