#!/usr/bin/env bash
# The Beauty benchmark on a CPU machine, one seed per call, resumable across sessions (benchmarks/README.md).
#
#   bash benchmarks/beauty_cpu.sh sasrec 2020      # SASRec-CE at RecBole's defaults (~2.8 h on the 2-core VM); run
#                                                  # again after an interruption and it continues from its last epoch
#   bash benchmarks/beauty_cpu.sh ablations 2020   # the CEMG variants of benchmarks/configs/beauty-ablations.txt,
#                                                  # each reading that seed's SASRec checkpoint (~12 min each)
#   bash benchmarks/beauty_cpu.sh cold 2020        # cold start (cold_item_ratio 0.1): SASRec trained without the
#                                                  # held-out items, then the CEMG variants of
#                                                  # benchmarks/configs/beauty-cold.txt reading it
#   bash benchmarks/beauty_cpu.sh ablations 2020 popularity   # only the listed variants (names of the list); a
#                                                  # variant cut short continues from its last epoch (its run folder
#                                                  # in $RUNS must survive: `park` keeps only SASRec runs)
#   bash benchmarks/beauty_cpu.sh park sasrec-2021  # before a session ends: copy that unfinished SASRec's state to
#                                                   # $OUT/unfinished/ and commit it; the next session's call continues it
#
# Expects .devrun/data/Beauty/ (Beauty.inter, Beauty.item, Beauty.text.npz, Beauty.title_categories.npz: see
# benchmarks/README.md). Every SASRec leaves a weights-only checkpoint, $OUT/<name>.pth (about 3.5 MB): commit it, so
# that a later session's CEMG experiments cost only the tokenizer and the generator. Finished results are skipped.
set -uo pipefail
PHASE=$1 SEED=$2
ONLY=("${@:3}")   # variant names to run (default: the whole list)
OUT=${OUT:-benchmarks/results/beauty-cpu}
RUNS=${RUNS:-.devrun/ckpt}   # training states of interrupted runs (kept out of git)
PARKED=$OUT/unfinished       # the same, committed by `park`: a session's work tree does not outlive it
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
COMMON=(--dataset=Beauty --data_path=.devrun/data --feature_path=.devrun/data/Beauty --show_progress=False
        --eval_batch_size=1024 --seed="$SEED")
mkdir -p "$OUT/logs"

sasrec() {   # name, extra --key=value: trains (or resumes) one SASRec and exports its weights
    local name=$1; shift
    [ -f "$OUT/$name.pth" ] && return
    mkdir -p "$RUNS"   # one process per run: a second one would continue the same state and overwrite it
    exec {lock}>"$RUNS/$name.lock"
    flock -n "$lock" || { echo "$name is training in another process ($RUNS/$name.lock): wait for it" >&2; return 1; }
    local state resume=()
    state=$(ls "$RUNS/$name"/SASRec-*.resume.pth 2>/dev/null | head -1)
    if [ -z "$state" ] && [ -d "$PARKED/$name" ]; then   # a run an earlier session parked
        mkdir -p "$RUNS/$name" && cp "$PARKED/$name"/* "$RUNS/$name"/
        state=$(ls "$RUNS/$name"/SASRec-*.resume.pth | head -1)
    fi
    [ -n "$state" ] && resume=(--resume="${state%.resume.pth}.pth")
    python run_cemg.py --model=SASRec "${COMMON[@]}" "$@" --checkpoint_dir="$RUNS/$name" "${resume[@]}" \
        --result_file="$OUT/$name.json" >> "$OUT/logs/$name.log" 2>&1 || return 1
    python benchmarks/weights_only.py "$(ls "$RUNS/$name"/SASRec-*.pth | grep -v '\.resume\.pth$' | head -1)" \
        "$OUT/$name.pth" "$OUT/$name.json" && rm -rf "${PARKED:?}/$name"
}

park() {   # name: the state of an unfinished run (resume state + best checkpoint so far) into $PARKED/<name>/
    local name=$1
    [ -n "$(ls "$RUNS/$name"/*.resume.pth 2>/dev/null)" ] || { echo "no unfinished run $RUNS/$name" >&2; return 1; }
    mkdir -p "$PARKED/$name" && cp "$RUNS/$name"/*.pth "$PARKED/$name"/
    echo "parked in $PARKED/$name: commit it; \`$0 sasrec <seed>\` (or cold) continues it"
}

variants() {   # output prefix, models (comparison syntax), extra key=value for every model; an interrupted run
              # continues from its last epoch, its finished stages read back from $RUNS/<name>/
    local prefix=$1 models=$2 state resume=(); shift 2
    [ -f "$prefix.json" ] && return
    state=$(ls "$RUNS/$(basename "$prefix")"/CEMG-*.resume.pth 2>/dev/null | grep -v '\.collab\.resume\.pth$' | head -1)
    [ -n "$state" ] && resume=(resume="${state%.resume.pth}.pth")
    python benchmarks/compare.py --models="$models" --dataset=Beauty --data_path=.devrun/data \
        --feature_path=.devrun/data/Beauty --output="$prefix" --set seed="$SEED" show_progress=False \
        eval_batch_size=1024 checkpoint_dir="$RUNS/$(basename "$prefix")" "${resume[@]}" "$@" < /dev/null \
        >> "$OUT/logs/$(basename "$prefix").log" 2>&1 \
        && return
    mv "$prefix.json" "$prefix.failed.json" 2>/dev/null   # so that the next call runs it again
    echo "$(basename "$prefix") failed: $OUT/logs/$(basename "$prefix").log" >&2
    return 1
}

variant_list() {   # file of 'name spec' lines, output folder, extra key=value for every model: one result each
    local file=$1 folder=$2 name spec; shift 2
    while read -r name spec; do
        [ -z "$name" ] || [ "${name:0:1}" = "#" ] && continue
        [ ${#ONLY[@]} -eq 0 ] || [[ " ${ONLY[*]} " == *" $name "* ]] || continue
        variants "$folder/$name-$SEED" "$spec" "$@"
    done < "$file"
}

case $PHASE in
    park) park "$SEED" ;;   # here the second argument is a run name (sasrec-<seed>, cold-sasrec-<seed>)
    sasrec) sasrec "sasrec-$SEED" ;;
    ablations)
        sasrec "sasrec-$SEED" || exit 1
        variant_list benchmarks/configs/beauty-ablations.txt "$OUT/ablations" collab_source="$OUT/sasrec-$SEED.pth" ;;
    cold)
        sasrec "cold-sasrec-$SEED" --cold_item_ratio=0.1 || exit 1
        variant_list benchmarks/configs/beauty-cold.txt "$OUT/cold" cold_item_ratio=0.1 \
            collab_source="$OUT/cold-sasrec-$SEED.pth" ;;
    *) echo "usage: $0 sasrec|ablations|cold <seed> | park <run name>" >&2; exit 2 ;;
esac
