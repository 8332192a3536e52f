#!/usr/bin/env bash
# The Beauty benchmark as run on the lent GPU machine (see benchmarks/README.md). Expects, in the repo root:
#   .whl/      wheels of recbole==1.2.1 colorlog==4.7.2 texttable thop (the GPU image lacks them)
#   .devrun/data/Beauty/  Beauty.inter, Beauty.item and Beauty.text.npz (dataset_scripts/encode_text.py)
# and writes its results under $OUT (or benchmarks/results/ when OUT is unset).
set -uo pipefail
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT" /tmp/bench
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
COMMON=(--dataset=Beauty --data_path=.devrun/data --feature_path=.devrun/data/Beauty
        --set checkpoint_dir=/tmp/saved show_progress=False epochs=60 stopping_step=5 eval_batch_size=1024)
timeout 500 python3 benchmarks/compare.py "${COMMON[@]}" --models=GRU4Rec --output=/tmp/bench/beauty-gru4rec > "$OUT/gru4rec.log" 2>&1 &
timeout 500 python3 benchmarks/compare.py "${COMMON[@]}" --models=SASRec,CEMG --output=/tmp/bench/beauty-sasrec-cemg \
    --cemg_set epochs=30 eval_step=2 eval_batch_size=512 tokenizer_epochs=300 > "$OUT/sasrec-cemg.log" 2>&1
wait
python3 benchmarks/compare.py --merge /tmp/bench/beauty-sasrec-cemg /tmp/bench/beauty-gru4rec --output="$OUT/beauty"
