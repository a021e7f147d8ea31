#!/usr/bin/env bash
# The check of an offline GPU node: a bundle of wheels and data, then a short run of the whole
# pipeline there (not part of CI; docs/gpu.md):
#
#   NODE_PACKAGES=FILE bash bench/gpu_check.sh prepare
#                       WITH NETWORK: the wheels the node lacks -> .whl/, the data archive ->
#                       .gpudata/, and the bundle's size (refused over LIMIT_MIB, if set).
#                       FILE: `python3 -m pip list --format=freeze` as run on the node
#   bash bench/gpu_check.sh run
#                       ON THE NODE: install the bundled wheels, then the notebook-shaped study
#                       through `dvc repro` with an nvidia-smi trace, the unit tests, the
#                       benchmark's GPU rows; all results in $OUT (each step has a time limit)
#   bash bench/gpu_check.sh rehearse
#                       BEFORE THAT, HERE: `run` on the CPU, in a Python 3.12 venv holding only
#                       what the node provides, in a copy of the bundle (no .git); steps that
#                       need CUDA say so
#
# Copy the working tree with .whl/ and .gpudata/ to the node, then run
# `bash bench/gpu_check.sh run` there.
set -uo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/cifar10-jpeg.tar.gz}     # a local copy of CIFAR-10 (params.yaml's first source)
NODE_PACKAGES=${NODE_PACKAGES:-node-packages.txt}
LIMIT_MIB=${LIMIT_MIB:-}
SITE=${SITE:-${TMPDIR:-/var/tmp}/augvit-site}
FAILED=()

say() { printf '\n=== %s [%s]\n' "$*" "$(date +%H:%M:%S)"; }
step() {    # step NAME SECONDS CMD...: run, time, and record a failure without stopping
  local name=$1 limit=$2; shift 2
  say "$name"
  local t0=$SECONDS
  timeout "$limit" "$@"
  local rc=$?
  echo "--- $name: exit $rc after $((SECONDS - t0)) s"
  [ $rc -eq 0 ] || FAILED+=("$name (exit $rc)")
}

prepare() {
  python bench/gpu_check.py wheels .whl "$NODE_PACKAGES" || exit 1
  [ -f "$DATA" ] || { echo "gpu_check: no data archive at $DATA (set DATA=...)"; exit 1; }
  mkdir -p .gpudata && cp "$DATA" .gpudata/cifar10-jpeg.tar.gz
  python bench/gpu_check.py size ${LIMIT_MIB:+--limit-mib "$LIMIT_MIB"} .whl .gpudata || exit 1
}

run() {
  OUT=${OUT:-$(mktemp -d)}
  mkdir -p "$OUT"
  exec > >(tee -a "$OUT/check.log") 2>&1
  export DVC_NO_ANALYTICS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
  [ -d .whl ] && [ -d .gpudata ] || { echo "gpu_check: bring .whl and .gpudata (prepare)"; exit 1; }
  say "install the bundled wheels into $SITE"
  rm -rf "$SITE"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl || { echo "gpu_check: wheel install failed"; exit 1; }
  export PYTHONPATH="$SITE" PATH="$SITE/bin:$PATH"
  # dvc.yaml runs `python -m stages...`; the node may only have `python3`
  command -v python >/dev/null || ln -s "$(command -v python3)" "$SITE/bin/python"
  python3 bench/gpu_check.py check-carried "$SITE" || exit 1
  local dev
  dev=$(python3 -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
  { python3 -c "import sys, torch; from importlib.metadata import version
print('python', sys.version.split()[0], *(f'| {p} {version(p)}' for p in ('torch',
      'torchvision', 'transformers', 'lightning', 'torchmetrics', 'numpy', 'dvc', 'dvclive')))
print('device:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA')"
    nproc; command -v nvidia-smi >/dev/null && nvidia-smi; } > "$OUT/env.txt" 2>&1
  cat "$OUT/env.txt"

  local keep
  keep=$(mktemp -d)                    # the study edits both; the tests want the originals
  cp params.yaml .dvc/config "$keep/"
  step "study params (notebook-shaped, $dev)" 30 \
    python3 bench/gpu_check.py study-params params.yaml "$dev"
  [ -d .git ] || dvc config core.no_scm true    # the bundle holds the tree without .git
  local smi=""
  if [ "$dev" = cuda ]; then
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader \
      -lms 500 > "$OUT/gpu-util.csv" &
    smi=$!
  else
    say "nvidia-smi utilization trace: SKIPPED, no CUDA here"
  fi
  step "study: dvc repro (download, prepare, the control + 3 versions x 1 seed, frozen, evaluate, compare, plots)" \
    300 dvc repro
  [ -n "$smi" ] && kill "$smi" 2>/dev/null
  cp reports/comparison.md metrics/summary.json "$OUT/" 2>/dev/null
  if [ -n "$smi" ]; then
    python3 bench/gpu_check.py util "$OUT/gpu-util.csv" | tee "$OUT/util-summary.txt"
  fi
  cp "$keep/params.yaml" params.yaml && cp "$keep/config" .dvc/config
  step "unit tests under the node's versions" 100 \
    python3 -m pytest -m "not e2e" -q -p no:cacheprovider
  if [ "$dev" = cuda ]; then
    step "benchmark, GPU rows" 150 python3 -m bench.bench --device cuda --no-repro \
      --out "$OUT/bench-gpu.json"
  else
    say "benchmark, GPU rows: SKIPPED, no CUDA here; the quick CPU smoke run instead"
    step "benchmark smoke (CPU, --quick)" 200 python3 -m bench.bench --quick --no-repro \
      --out "$OUT/bench-cpu-quick.json"
  fi

  say "done"
  if [ ${#FAILED[@]} -gt 0 ]; then
    printf 'FAILED: %s\n' "${FAILED[@]}"
    exit 1
  fi
  echo "all steps passed"
}

rehearse() {
  local venv=${VENV:-.venv-gpu} tree=${TREE:-$(mktemp -d)/rehearsal}
  [ -f .whl/provided-by-node.txt ] || prepare
  if [ ! -x "$venv/bin/python3" ]; then
    say "a Python 3.12 venv with what the node provides, in $venv"
    local py312=${PY312:-python3.12}
    "$py312" --version >/dev/null 2>&1 || py312=$(ls ~/.pyenv/versions/3.12*/bin/python3.12 | head -1)
    "$py312" -m venv "$venv" || exit 1
    "$venv/bin/python3" -m pip install -q --upgrade pip
    # the node's own copies of what the project uses, at the node's versions
    "$venv/bin/python3" -m pip install -q packaging $(cat .whl/provided-by-node.txt) \
      -c .whl/node-pins.txt || exit 1
  fi
  say "a copy of the bundle as the node gets it (no .git): the tree, .whl and .gpudata"
  rm -rf "$tree" && mkdir -p "$tree/tree"
  git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$tree/tree"
  cp -r .whl .gpudata "$tree/tree/"
  local vbin
  vbin=$(cd "$venv/bin" && pwd)
  (cd "$tree/tree" && PATH="$vbin:$PATH" OUT="$tree/out" SITE="$tree/site" \
    bash bench/gpu_check.sh run)
  local rc=$?
  echo "rehearsal: exit $rc; its files in $tree/out/: $(ls "$tree/out" | tr '\n' ' ')"
  return $rc
}

case "${1:-}" in
  prepare) prepare ;;
  run) run ;;
  rehearse) rehearse ;;
  *) sed -n '2,20p' "$0"; exit 2 ;;
esac
