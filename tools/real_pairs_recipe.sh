#!/bin/bash
# The fixed recipe for comparing builds and precisions on a small set of real RGB-IR pairs (e.g. the
# 35 MSRS pairs of ../shared/data/msrs_mini, research use only: not in the repository, not in CI).
# It trains and validates on the same pairs (too few for a split), so it measures how well a build
# learns, not how well it generalises.
#
#   tools/real_pairs_recipe.sh DATA_DIR [SEEDS] [PRECISIONS] [BIN_DIR]
#     DATA_DIR    folder with images/, imagesIR/ (one channel), labels/ and classes.txt
#     SEEDS       comma separated (default 0,1,2)
#     PRECISIONS  comma separated fp32, fp16, bf16 (default fp32)
#     BIN_DIR     where train_dual and val_dual are (default .build/release)
#
# Each run: dual_yolov8n_mid, 320 px, batch 8, 100 epochs, configs/hyp/quick.yaml, optimizer auto
# (AdamW, lr0 0.001429 for 3 classes), the pairs cached in RAM, no per-epoch validation; then
# val_dual on the last weights. Prints one line per run and the mean and spread of mAP50 per
# precision. Runs go to runs/recipe/<precision>_s<seed>. EPOCHS=N shortens the runs (a smoke test).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:?usage: tools/real_pairs_recipe.sh DATA_DIR [SEEDS] [PRECISIONS] [BIN_DIR]}
seeds=${2:-0,1,2}
precisions=${3:-fp32}
bin=${4:-.build/release}
epochs=${EPOCHS:-100}
[ -d "$data" ] || { echo "error: $data: no such folder (expected a folder of pairs)" >&2; exit 2; }
data=$(cd "$data" && pwd)
for d in images imagesIR labels; do
    [ -d "$data/$d" ] || { echo "error: $data/$d: no such folder (expected images/, imagesIR/, labels/)" >&2; exit 2; }
done
[ -f "$data/classes.txt" ] || { echo "error: $data/classes.txt: missing (one class name a line)" >&2; exit 2; }
for tool in train_dual val_dual; do
    [ -x "$bin/$tool" ] || { echo "error: $bin/$tool: not built (swift build -c release)" >&2; exit 2; }
done
mkdir -p runs/recipe
yaml=runs/recipe/data.yaml
{
    echo "path: $data"
    echo "train: images"
    echo "val: images"
    echo "names:"
    i=0
    while IFS= read -r name || [ -n "$name" ]; do
        [ -n "$name" ] || continue
        echo "  $i: $name"
        i=$((i + 1))
    done < "$data/classes.txt"
    echo "ir_dir: imagesIR"
    echo "ir_channels: 1"
} > "$yaml"

summary=runs/recipe/summary.txt
: > "$summary"
for p in ${precisions//,/ }; do
    case $p in
        fp32) amp=(--no-amp) ;;
        fp16|bf16) amp=(--amp "$p") ;;
        *) echo "error: precision '$p': expected fp32, fp16 or bf16" >&2; exit 2 ;;
    esac
    for s in ${seeds//,/ }; do
        name=${p}_s$s
        start=$(date +%s)
        "$bin/train_dual" --data "$yaml" --cfg configs/models/dual_yolov8n_mid.yaml --hyp configs/hyp/quick.yaml \
            --epochs "$epochs" --batch 8 --imgsz 320 --seed "$s" --cache ram --no-val --no-plots --no-tb --patience 0 \
            "${amp[@]}" --project runs/recipe --name "$name" --exist-ok > "runs/recipe/$name.train.log" 2>&1 \
            || { echo "error: training $name failed: runs/recipe/$name.train.log" >&2; exit 1; }
        "$bin/val_dual" --data "$yaml" --weights "runs/recipe/$name/weights/last.safetensors" --imgsz 320 --batch 8 \
            --project runs/recipe/val --name "$name" --exist-ok > "runs/recipe/$name.val.log" 2>&1 \
            || { echo "error: validating $name failed: runs/recipe/$name.val.log" >&2; exit 1; }
        map=$(awk '/^mAP50 /{print $2}' "runs/recipe/$name.val.log")
        echo "$p seed $s: mAP50 $map ($(( $(date +%s) - start )) s)" | tee -a "$summary"
    done
done
awk '{ m[$1] += $5; n[$1]++; if (!($1 in lo) || $5 < lo[$1]) lo[$1] = $5; if ($5 > hi[$1]) hi[$1] = $5 }
     END { for (p in m) printf "%s: mean mAP50 %.4f over %d seeds (%.4f-%.4f, spread %.4f)\n", p, m[p] / n[p], n[p], lo[p], hi[p], hi[p] - lo[p] }' "$summary"
