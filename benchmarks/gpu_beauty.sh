#!/usr/bin/env bash
# The Beauty benchmark on one GPU (benchmarks/README.md), every seed side by side on the one card.
#
#   bash benchmarks/gpu_beauty.sh baselines   # SASRec-CE (RecBole's defaults) and GRU4Rec-CE per seed
#   bash benchmarks/gpu_beauty.sh cemg        # CEMG per seed, reading that seed's SASRec checkpoint as its
#                                             # collaborative source (pure generative row + score-fusion row)
#   bash benchmarks/gpu_beauty.sh all         # both, one after the other
#   bash benchmarks/gpu_beauty.sh cold        # cold start (cold_item_ratio=0.1, the held-out items chosen from the
#                                             # seed): SASRec per seed, then CEMG reading it, and ContentSimilarity
#
# VARIANTS="CEMG[code_loss=levels]|CEMG[joint_weight=0.1]" adds configuration variants (comparison syntax) to the
# cemg phase, for the first seed only, as rows of their own.
# Expects in the repo root: .devrun/data/Beauty/ (Beauty.inter, Beauty.item, Beauty.text.npz: see the README) and,
# on a machine without RecBole, .whl/ with wheels of recbole==1.2.1 colorlog==4.7.2 colorama texttable thop.
# The cemg phase reads the SASRec checkpoints from $CKPT (default: $OUT) as sasrec-<seed>.pth.
# Writes result files, checkpoints and a tarball of the logs under $OUT (default benchmarks/results/beauty-gpu).
set -uo pipefail
PHASE=${1:-all}
OUT=${OUT:-benchmarks/results/beauty-gpu}
CKPT=${CKPT:-$OUT}
SEEDS=${SEEDS:-"2020 2021 2022"}
CEMG_ARGS=${CEMG_ARGS:-}   # extra --key=value for CEMG
VARIANT_SET=${VARIANT_SET:-}   # the same as key=value pairs, for the variants
DATASET=${DATASET:-Beauty} DATA=${DATA:-.devrun/data} EXTRA=${EXTRA:-}   # EXTRA: --key=value for every run
CONFIG_FILES=${CONFIG_FILES:-}   # config files for every run
mkdir -p "$OUT" /tmp/bench/logs
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
(while sleep 20; do tar -czf /tmp/bench/logs.tgz -C /tmp/bench logs && mv /tmp/bench/logs.tgz "$OUT/logs.tgz"; done) &
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

variant() {   # a CEMG configuration variant as a row of its own (benchmarks/compare.py names it)
    local spec=$1 seed=$2 name
    name=$(echo "$spec" | tr -c 'A-Za-z0-9_.\n-' _)
    python3 benchmarks/compare.py --models="$spec" --dataset="$DATASET" --data_path="$DATA" \
        --feature_path="$DATA/$DATASET" --output="/tmp/bench/$name-$seed" ${CONFIG_FILES:+--config_files="$CONFIG_FILES"} --set seed="$seed" show_progress=False \
        eval_batch_size=4096 collab_source="$CKPT/sasrec-$seed.pth" checkpoint_dir="/tmp/saved/$name-$seed" $VARIANT_SET \
        > "/tmp/bench/logs/$name-$seed.log" 2>&1
    cp "/tmp/bench/$name-$seed.json" "$OUT/variant_$name-$seed.json"
}

if [ "$PHASE" != baselines ] && [ -n "${VARIANTS:-}" ]; then
    IFS='|' read -ra SPECS <<< "$VARIANTS"
    for spec in "${SPECS[@]}"; do
        if [ "$PHASE" = all ]; then (while [ ! -f "$CKPT/sasrec-${SEEDS%% *}.pth" ]; do sleep 10; done
                                     variant "$spec" "${SEEDS%% *}") &
        else variant "$spec" "${SEEDS%% *}" & fi
    done
fi
[ "$PHASE" = cemg ] || [ "$PHASE" = cold ] || gru4rec "${SEEDS%% *}" &   # a second baseline, one seed
for seed in $SEEDS; do
    case $PHASE in
        baselines) baselines "$seed" & ;;
        cemg) cemg "$seed" & ;;
        all) (baselines "$seed"; cemg "$seed") & ;;
        cold) cold "$seed" & ;;
    esac
done
wait $(jobs -p | grep -v "^$TARRING$")
kill $TARRING
tar -czf "$OUT/logs.tgz" -C /tmp/bench logs
# the table for the log; at home: python benchmarks/compare.py --merge <results>/*-*.json --output=<prefix>
python3 benchmarks/compare.py --merge "$OUT"/*-*.json --output=/tmp/bench/beauty | tail -n 24
