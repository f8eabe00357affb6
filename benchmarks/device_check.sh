#!/usr/bin/env bash
# The one prepared script for a GPU machine: GPU tests, the train-step benchmark and the kernel benchmark,
# each under a hard time limit, then a summary a person reads in 30 seconds.
#
#   bash benchmarks/device_check.sh [OUT_DIR]          # default run: 555 s of limits (see BUDGET)
#   bash benchmarks/device_check.sh --full [OUT_DIR]   # the wide sweep (no lease-sized limits)
#   bash benchmarks/device_check.sh --quality [OUT_DIR]  # issue #14 at PacGAN's length: ring and grid, 10 seeds
#                                                       # as replicas in a CUDA graph, to 400k steps (<= 9.5 min)
#
# OUT_DIR (default: $OUT if set, else benchmarks/results/device_check) receives exactly two files, because a
# leased device returns only a few: summary.txt (what the run found) and device_check.tar.gz (every log and
# every result file: results/<card>/runs.jsonl with the latest files and runs/, environment.txt, *.log). Unpack
# the archive and add its runs to benchmarks/results/<card>/ with `python benchmarks/common.py merge
# UNPACKED/results` (appended to runs.jsonl, the latest files redrawn; never copy its runs.jsonl over ours); the
# logs go under benchmarks/results/<card>/runs/<date>-device_check/. Then, on the commit the run measured,
# `python tools/perf_model.py --refit --card <card>` refits the performance model to its step times.
#
# BUDGET (default run; by construction each step is killed at its limit, 10 s after a TERM, and the
# benchmarks start no row that would end past theirs, writing their JSON after every row):
#   environment 15 s + native_build 30 s + gpu_tests 160 s + train_step_b128 130 s + train_step_b4096 100 s
#   + kernels 40 s + host_cost 25 s + profile 55 s = 555 s of limits (a device call may run 600 s). The first run (H200,
#   2026-11-27) sized it: the build took 10 s; the 506 GPU tests need about 150 s on 8 workers (that run gave
#   them 95 s and 100 did not run), so they get 16 workers; the batch-128 row of every backend took 106 s,
#   most of it autotuning (triton 34 s, triton-mlp 30 s); a batch-4096 row of every backend did not finish
#   in 135 s, while six backends took 59 s (28 s of it autotuning, which the Triton backends share), so
#   batch 4096 is a step of its own over the issue's backends (eager, eager+graph, both compile modes,
#   triton with and without graph, k = 8 and FlatAdam); a one-row step is lost whole if killed, so each has
#   its margin. The kernels time the batch-16,384 rows against the ceilings (the GAN-layer rows: --full).
#   The K-replica sweep and the pytest-benchmark set did not finish in 35 s and 40 s: --full only.
#   Expected about 7.5 minutes.
#
# Needs python3 with torch, triton, numpy, pytest, scikit-learn, matplotlib and tqdm (the project's dev
# extras; pytest-xdist is used when present); runs from the repository root without installing (PYTHONPATH).
set -uo pipefail
cd "$(dirname "$0")/.."
FULL=0; QUALITY=0
while [ "${1:-}" = "--full" ] || [ "${1:-}" = "--quality" ]; do
    if [ "$1" = "--full" ]; then FULL=1; else QUALITY=1; fi
    shift
done
OUT_DIR="${1:-${OUT:-benchmarks/results/device_check}}"
mkdir -p "$OUT_DIR"
WORK=$(mktemp -d)          # logs and results gather here, then go into the archive
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TRITON_INTERPRET=0 FASTGAN_AUTOTUNE=1
STEPS_FILE="$WORK/steps.tsv"
: > "$STEPS_FILE"

step() {  # step NAME LIMIT_S COMMAND...: run under a hard limit, log to $WORK/NAME.log, record the outcome
    local name=$1 limit=$2; shift 2
    echo "=== $name ($(date -u +%H:%M:%S), limit ${limit}s): $*"
    local start=$SECONDS
    timeout -k 10 "$limit" "$@" > "$WORK/$name.log" 2>&1
    local rc=$?
    tail -n 15 "$WORK/$name.log"
    echo "=== $name: exit $rc after $((SECONDS - start))s"
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" "$limit" >> "$STEPS_FILE"
}

if [ "$FULL" = 1 ]; then
    T_ENV=20; T_BUILD=120; T_TESTS=900; T_TRAIN=3600; L_TRAIN=3500; T_KERNELS=1800; L_KERNELS=1700; T_PROFILE=300
    T_MICRO=900; T_REPLICAS=900; L_REPLICAS=850; REPLICA_KS="1 2 4 8 16 32 64 128 256"; T_HOST=60
else
    T_ENV=15; T_BUILD=30; T_TESTS=160; T_KERNELS=40; L_KERNELS=30; T_PROFILE=55
    T_B128=130; T_B4096=100; T_HOST=25
fi

step environment "$T_ENV" bash -c "nvidia-smi; python3 benchmarks/device_summary.py --environment"
cp "$WORK/environment.log" "$WORK/environment.txt"
if [ "$QUALITY" = 1 ]; then
    # the quality protocol at its own length, each curve saved after every checkpoint (a step stopped at its
    # limit keeps the checkpoints it reached): EMA + pack 2, ring at lr 2e-4 and grid at 3e-4, both rates halved
    # from 200k steps and a tenth from 300k (the CPU's best recipes: seeds 0-9 to 400k met both goals on the means
    # with a D calibrated at the run's final rate, docs/notes/2026-11-28-mixture-probes-3.md; the ring's
    # fresh seeds 10-19 fell just short, 98.4% HQ and KL 0.026); each
    # checkpoint also with rejection sampling (reported apart); time to quality per seed. The trainer is saved at
    # each checkpoint; the last one saved is then scored with rejection sampling by each D calibrated 2,000 steps
    # (Adam at the final rate, batch 2,000) against its sampled G (a step of its own: eager steps, one replica
    # at a time, not timed on a GPU yet, so it cannot cost the curve its 400k row), and with Metropolis-Hastings
    # in G's latent space (steps of 0.02, beta 6: the CPU's choice, which met both goals on every fresh seed,
    # docs/notes/2026-11-28-latent-mh.md) over each trained D (no calibration: on the CPU it did as
    # well with the trained D as with a calibrated one)
    for run in "ring ema_pack2 2e-4 2e-5" "grid ema_pack2 3e-4 3e-5"; do
        set -- $run
        step "quality_$1" 215 python3 benchmarks/quality_curve.py --data "$1" --variant "$2" --lr "$3" --seeds 10 \
            --lr-schedule 200000:0.5 300000:0.1 --kernels triton --cuda-graph --steps-per-replay 8 \
            --checkpoints 50000 100000 200000 400000 --rejection 0.5 --check-every 5000 \
            --save-checkpoint "$WORK/quality-$1.pt" --out "$WORK/results"
        step "quality_$1_calibrated" 40 python3 -m fastgan evaluate "$WORK/quality-$1.pt" --seed 10000 \
            --samples 2500 --rejection 0.5 --calibrate 2000 --calibrate-lr "$4" --calibrate-batch 2000 \
            --out "$WORK/results/quality-$1-calibrated.json"
        step "quality_$1_latent_mh" 20 python3 -m fastgan evaluate "$WORK/quality-$1.pt" --seed 10000 \
            --samples 2500 --metropolis 100 --sharpen 6 --metropolis-step 0.02 \
            --out "$WORK/results/quality-$1-latent-mh.json"
    done
else
    # the native kernels (kernels/, CMake; the image has nvcc, cmake and ninja): built here, then tested and timed
    step native_build "$T_BUILD" bash -c "cmake -S . -B build -G Ninja > /dev/null && cmake --build build"

    # Every GPU test, not stopping at the first failure (-x would hide test_graph.py behind an ops failure).
    # The tests pin one config per kernel (FASTGAN_AUTOTUNE=0): autotuning every test shape would spend the
    # lease compiling. Compilation is CPU-bound: with pytest-xdist, 16 workers (the machine's cores) compile side by side.
    # The GPU image has pytest-xdist and pytest-timeout: a test that hangs fails after 45 s, and the session
    # starts no test after T_TESTS - 45 s, so it ends by itself with its report written before the hard limit.
    parallel=""
    python3 -c "import xdist" 2>/dev/null && parallel="-n 16"
    python3 -c "import pytest_timeout" 2>/dev/null && parallel="$parallel --timeout 45 --session-timeout $((T_TESTS - 45))"
    step gpu_tests "$T_TESTS" env FASTGAN_AUTOTUNE=0 python3 -m pytest -o addopts="" -q -rfE $parallel -p no:cacheprovider \
        --durations=10 --junitxml="$WORK/gpu_tests.xml" tests/ops/test_linear.py tests/ops/test_activations.py tests/ops/test_bce.py \
        tests/ops/test_head.py tests/ops/test_mlp.py tests/test_optim.py tests/train/test_graph.py tests/ops/test_native.py \
        "tests/train/test_replicas.py::test_cuda_graph_replays_equal_eager_replicas" "tests/ops/test_maxout.py::test_maxout_equals_the_float64_reference" \
        "tests/train/test_fused_replicas.py::test_fused_replicas_on_a_gpu_replay_in_a_graph_as_eager_and_equal_their_single_runs" \
        "tests/ops/test_maxout.py::test_maxout_reads_strided_inputs_and_leading_dimensions" "tests/ops/test_maxout.py::test_maxout_nan_inf_and_ties"
    if [ "$FULL" = 1 ]; then
        step train_step "$T_TRAIN" python3 benchmarks/train_step.py --time-limit "$L_TRAIN" --out "$WORK/results"
        step kernels "$T_KERNELS" python3 benchmarks/kernels.py --time-limit "$L_KERNELS" --out "$WORK/results"
    else
        step train_step_b128 "$T_B128" python3 benchmarks/train_step.py --quick --batches 128 --out "$WORK/results"
        step train_step_b4096 "$T_B4096" python3 benchmarks/train_step.py --quick --batches 4096 --backends eager \
            eager+graph compile "compile(reduce-overhead)" triton triton+flat_adam triton+graph triton+graph+flat_adam \
            "triton+graph(k=8)" "triton+graph(k=8)+flat_adam" --out "$WORK/results"
        step kernels "$T_KERNELS" python3 benchmarks/kernels.py --quick --groups large large-bf16 \
            --time-limit "$L_KERNELS" --out "$WORK/results"
    fi
    # what one op call costs the host, with its launches stubbed and launched (Triton's launcher: GPU only)
    step host_cost "$T_HOST" python3 benchmarks/host_cost.py --calls 200 --windows 5 --out "$WORK/results"
    # where the time goes at batch 4096, where the first run found plain PyTorch in a graph faster than fastgan's
    # best step: device time per kernel per step (torch.profiler), fastgan's step and PyTorch's, both graphed
    # (PyTorch's first: it takes seconds, while the Triton one autotunes its shapes first, about 30 s)
    step profile "$T_PROFILE" bash -c "python3 -m fastgan profile --steps 20 --warmup 10 --batch-size 4096 \
        --precision tf32 --kernels torch --cuda-graph --out $WORK/results/profile-torch-graph-b4096; \
        python3 -m fastgan profile --steps 20 --warmup 10 --batch-size 4096 --precision tf32 --kernels triton \
        --fused-optimizer --cuda-graph --out $WORK/results/profile-triton-graph-flat-b4096"
    if [ "$FULL" = 1 ]; then
        # K GANs at once: aggregate GAN-steps/s against K per backend (the sweep's headline on a GPU)
        # shellcheck disable=SC2086
        step replicas "$T_REPLICAS" python3 benchmarks/replicas.py --no-sequential --replicas $REPLICA_KS \
            --backends torch triton torch+graph triton+graph triton-mlp+graph triton+graph+generators \
            --time-limit "$L_REPLICAS" --out "$WORK/results"
        # shellcheck disable=SC2086
        step replicas_classic "$T_REPLICAS" python3 benchmarks/replicas.py --no-sequential --model classic \
            --batch 128 --replicas 1 8 32 128 --backends torch+graph triton+graph triton-mlp+graph \
            triton+graph+generators triton+graph+bf16-adam triton-mlp+graph+bf16-adam --time-limit "$L_REPLICAS" \
            --out "$WORK/results"
        # the pytest-benchmark set, saved as JSON a later run compares with (--benchmark-compare)
        step micro "$T_MICRO" python3 -m pytest -o addopts="" benchmarks/micro --benchmark-only -q -p no:cacheprovider \
            --benchmark-json="$WORK/results/micro.json"
    fi
fi

python3 benchmarks/device_summary.py "$WORK" > "$WORK/summary.txt" 2>&1 || echo "(summary failed)" >> "$WORK/summary.txt"
cp "$WORK/summary.txt" "$OUT_DIR/summary.txt"
tar -czf "$OUT_DIR/device_check.tar.gz" -C "$WORK" .
echo
cat "$OUT_DIR/summary.txt"
echo "device_check: $OUT_DIR/summary.txt and $OUT_DIR/device_check.tar.gz"
# exit status: 0 only if every step exited 0
! awk -F'\t' '$2 != 0 {bad = 1} END {exit !bad}' "$STEPS_FILE"
