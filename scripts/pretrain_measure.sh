#!/usr/bin/env bash
# What self-supervised pretraining is worth on NEU-DET, on a CPU (docs/training.md, "Measuring what
# pretraining is worth"; the result is in docs/model-card.md). Run from the repository root:
#
#   scripts/pretrain_measure.sh            # the short CPU schedule of the model card's table
#   IMGSZ=256 EPOCHS=150 BATCH=32 PRE_EPOCHS=200 PRE_BATCH=128 DEVICE=cuda scripts/pretrain_measure.sh   # the full one
#
# 1. pretrains the backbone (SimCLR) on the 1,152 training images without their labels (train.txt,
#    never val.txt);
# 2. fine-tunes 12 cells: {scratch, pretrained} x {10, 25, 100 %} of the labels (the committed
#    class-stratified lists docs/ablation/label-subsets/neu-det-train-{10,25,100}.txt) x seeds {0, 1},
#    every cell with the same schedule (the same epochs: a smaller subset makes fewer steps), the
#    smallest subsets first;
# 3. evaluates each cell's last-epoch checkpoint on val.txt (runs/ssl-cpu/<cell>/eval.json) and writes
#    the table (scripts/pretrain_table.py).
# Run again after an interruption, it skips the pretraining and the cells already evaluated (an
# interrupted cell starts over).
#
# Two lanes run side by side, each single-threaded, taking cells from one queue: one lane first
# pretrains, the other meanwhile fine-tunes scratch cells (which do not need the backbone).
set -euo pipefail

D=${D:-../shared/datasets/neu-det}
PY=${PY:-python}
OUT=${OUT:-runs/ssl-cpu}
IMGSZ=${IMGSZ:-128}
EPOCHS=${EPOCHS:-3}
BATCH=${BATCH:-8}
PRE_EPOCHS=${PRE_EPOCHS:-3}
PRE_BATCH=${PRE_BATCH:-32}
DEVICE=${DEVICE:-cpu}
SEEDS=${SEEDS:-"0 1"}
PCTS=${PCTS:-"10 25 100"}
NICE=${NICE:-19}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}

mkdir -p "$OUT"
BACKBONE=$OUT/backbone.pt
for pct in $PCTS; do
  printf 'path: %s\ntrain: %s\nval: val.txt\nnames: [crazing, inclusion, patches, pitted_surface, rolled-in_scale, scratches]\n' \
    "$(realpath "$D")" "$(realpath "docs/ablation/label-subsets/neu-det-train-$pct.txt")" > "$OUT/neu-$pct.yaml"
done

run() { nice -n "$NICE" "$PY" -m models "$@"; }

cell() {  # cell ARM PCT SEED: fine-tune one cell and evaluate its last epoch on val.txt
  local arm=$1 pct=$2 seed=$3 name=$1-$2-s$3 extra=()
  [ "$arm" = pretrained ] && extra=(--backbone "$BACKBONE")
  if [ ! -s "$OUT/$name/eval.json" ]; then
    local started=$SECONDS
    run train --data "$OUT/neu-$pct.yaml" --imgsz "$IMGSZ" --epochs "$EPOCHS" --batch "$BATCH" \
      --device "$DEVICE" --workers 1 --cache --anchors fit --seed "$seed" --val-interval 100000 --no-plots \
      --project "$OUT" --name "$name" --exist-ok "${extra[@]}" > "$OUT/$name.log" 2>&1
    run evaluate --model "$OUT/$name/weights/last.pt" --data "$D/data.yaml" --device "$DEVICE" --json \
      > "$OUT/$name/eval.tmp" 2>> "$OUT/$name.log"
    mv "$OUT/$name/eval.tmp" "$OUT/$name/eval.json"
    echo "$name $((SECONDS - started)) s" >> "$OUT/times.txt"
  fi
}

pretrain_backbone() {
  if [ ! -s "$BACKBONE" ]; then
    local started=$SECONDS
    run pretrain --images "$D/train.txt" --imgsz "$IMGSZ" --epochs "$PRE_EPOCHS" --batch "$PRE_BATCH" \
      --device "$DEVICE" --workers 1 --seed 0 --out "$BACKBONE" > "$OUT/pretrain.log" 2>&1
    echo "pretrain $((SECONDS - started)) s" >> "$OUT/times.txt"
  fi
}

# the cells in the order they are taken: the smallest subsets first
CELLS=()
for pct in $PCTS; do
  for arm in scratch pretrained; do for seed in $SEEDS; do CELLS+=("$arm $pct $seed"); done; done
done

lane() {  # take the next cell nobody has taken (a pretrained one only once the backbone exists)
  mkdir -p "$OUT/claims"
  while :; do
    local left=0 took=0 c
    for c in "${CELLS[@]}"; do
      set -- $c
      [ -d "$OUT/claims/$1-$2-s$3" ] && continue
      left=1
      [ "$1" = pretrained ] && [ ! -s "$BACKBONE" ] && continue
      mkdir "$OUT/claims/$1-$2-s$3" 2>/dev/null || continue
      cell "$1" "$2" "$3"; took=1; break
    done
    [ "$left" = 0 ] && return 0
    [ "$took" = 0 ] && sleep 10
  done
}

rm -rf "$OUT/claims"
(pretrain_backbone; lane) & a=$!
lane & b=$!
wait "$a"; wait "$b"
"$PY" scripts/pretrain_table.py "$OUT"
