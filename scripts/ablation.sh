#!/usr/bin/env bash
# The NEU-DET ablation and the shipped model, as run for docs/model-card.md.
# Usage: scripts/ablation.sh DATA.yaml SHORT_EPOCHS LONG_EPOCHS DEVICE OUT_DIR [WORKERS]
# Runs every row concurrently (one process each); on a 16-core GPU machine this keeps the GPU busy.
set -uo pipefail
DATA=$1; SHORT=$2; LONG=$3; DEVICE=$4; OUT=$5; WORKERS=${6:-2}
PY=${PYTHON:-python3}
COMMON=(--data "$DATA" --imgsz 256 --batch 32 --device "$DEVICE" --workers "$WORKERS" --seed 0
        --project "$OUT" --exist-ok --cache --no-plots --val-interval 5)
FOCAL=(--set fl_gamma=1.5 --set "fl_terms=[cls]" --set fl_alpha=-1)
run() { local name=$1; shift; $PY -m models train "${COMMON[@]}" --name "$name" "$@" >"$OUT/$name.log" 2>&1; echo "$name exit $?"; }
mkdir -p "$OUT"
run a_baseline      --epochs "$SHORT" --cfg yolov5s.yaml      --anchors default &
run b_kmeans        --epochs "$SHORT" --cfg yolov5s.yaml      --anchors fit &
run c_cbam          --epochs "$SHORT" --cfg yolov5s-cbam.yaml --anchors default &
run d_focal         --epochs "$SHORT" --cfg yolov5s.yaml      --anchors default "${FOCAL[@]}" &
run d2_focal_classic --epochs "$SHORT" --cfg yolov5s.yaml     --anchors default --set fl_gamma=1.5 &
run e_all           --epochs "$SHORT" --cfg yolov5s-cbam.yaml --anchors fit "${FOCAL[@]}" --workers 4 &
[ "$LONG" -gt 0 ] && run shipped --epochs "$LONG" --cfg yolov5s-cbam.yaml --anchors fit "${FOCAL[@]}" --workers 4 &
wait
