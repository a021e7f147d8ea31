#!/usr/bin/env bash
# The GPU checks in one command (for a machine with a CUDA GPU; not part of CI):
#   1. the throughput benchmark (CPU and GPU rows), as JSON;
#   2. the seed notebook's study shape on the GPU: ViT-B/16 at 224, frozen backbone, bf16, with
#      random init (`model.pretrained` needs the hub or a local copy of the weights), one epoch
#      of the three versions, while nvidia-smi samples GPU utilization every 0.5 s.
# Usage: DATA=path/to/cifar10-jpeg.tar.gz OUT=results/ bash bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/cifar10-jpeg.tar.gz}
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

python -m bench.bench --no-repro --out "$OUT/bench-gpu.json" | tee "$OUT/bench-gpu.txt"

nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader -lms 500 \
  > "$OUT/gpu-util.csv" &
SMI=$!
trap 'kill $SMI 2>/dev/null || true' EXIT
( time dvc exp run -n gpu-vitb16-random -S "data.source=$DATA" -S data.train_size=null \
    -S model.image_size=224 -S model.patch_size=16 -S model.hidden_size=768 \
    -S model.num_layers=12 -S model.num_heads=12 -S 'model.freeze_backbone=[true]' \
    -S 'train.seeds=[0]' -S train.epochs=1 -S train.batch_size=256 -S train.lr=0.001 \
    -S train.warmup_epochs=0.1 ) 2>&1 | tee "$OUT/gpu-study.log"
kill $SMI 2>/dev/null || true
python - "$OUT/gpu-util.csv" <<'PY'
import sys
u = [int(l.split(",")[1].strip().split()[0]) for l in open(sys.argv[1]) if l.strip()]
busy = [x for x in u if x > 0]
print(f"GPU utilization: {len(u)} samples, mean {sum(u)/max(1,len(u)):.1f}%, "
      f"mean while busy {sum(busy)/max(1,len(busy)):.1f}%, "
      f"share of samples >= 90%: {sum(x >= 90 for x in u)/max(1,len(u)):.0%}")
PY
cat reports/comparison.md
