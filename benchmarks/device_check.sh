#!/usr/bin/env bash
# The one prepared script for a GPU machine: GPU tests, the kernel benchmark and the train-step
# benchmark at the key sizes, all logs and results under one folder. Target: under 8 minutes on an H100.
#
#   bash benchmarks/device_check.sh [OUT_DIR]      # default: $OUT if set, else benchmarks/results/device_check
#
# Needs python3 with torch, triton, numpy, pytest, scikit-learn, matplotlib and tqdm (the project's
# dev extras); runs from the repository root without installing it (PYTHONPATH).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-benchmarks/results/device_check}}"
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TRITON_INTERPRET=0 FASTGAN_AUTOTUNE=1
status=0

step() {  # step NAME TIMEOUT_S COMMAND...: run, log to $OUT_DIR/NAME.log, remember failures
    local name=$1 limit=$2; shift 2
    echo "=== $name ($(date -u +%H:%M:%S), limit ${limit}s): $*"
    local start=$SECONDS
    timeout "$limit" "$@" > "$OUT_DIR/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$OUT_DIR/$name.log"
    echo "=== $name: exit $rc after $((SECONDS - start))s"
    [ "$rc" -eq 0 ] || status=1
}

{ nvidia-smi; python3 -c "import torch, triton, numpy; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'| triton', triton.__version__, '| numpy', numpy.__version__, '|', torch.cuda.get_device_name())"; } \
    > "$OUT_DIR/environment.txt" 2>&1
cat "$OUT_DIR/environment.txt"

# The tests compile one config per kernel variant (FASTGAN_AUTOTUNE=0): the test grid has many shapes
# and autotuning each would spend the lease compiling. The benchmarks autotune. Compilation is
# CPU-bound: with pytest-xdist (in the GPU image) 8 workers compile side by side.
parallel=""
python3 -c "import xdist" 2>/dev/null && parallel="-n 8"
step gpu_tests 180 env FASTGAN_AUTOTUNE=0 python3 -m pytest -q -x $parallel -p no:cacheprovider \
    tests/test_ops_linear.py tests/test_ops_bce.py tests/test_ops_head.py tests/test_graph.py
step kernels 120 python3 benchmarks/kernels.py --quick --out "$OUT_DIR"
step train_step 180 python3 benchmarks/train_step.py --quick --out "$OUT_DIR"
# Each benchmark writes its JSON/markdown after every group of rows: a step stopped by its time limit
# still leaves what it measured.
echo "device_check: results under $OUT_DIR; exit $status"
exit $status
