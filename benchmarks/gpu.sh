#!/usr/bin/env bash
# The benchmark suite on a CUDA machine, on a randomly initialised Llama-shaped model of ~0.95B
# parameters (hidden 2048, 16 layers, 32 heads, MLP 5632, vocabulary 32000) in bfloat16, built on the
# GPU from a config: nothing is downloaded. Sized to finish within 8 minutes on one H100.
#
#     benchmarks/gpu.sh                          # all GPUs visible; results in benchmarks/results/gpu/
#     DEVICE=cpu SIZE=tiny benchmarks/gpu.sh     # the same code path on a CPU in a minute (smoke test)
#
# Environment: PYTHON (default .venv/bin/python; needs a CUDA build of torch, not the Makefile's CPU
# wheel), DEVICE (cuda), SIZE (1b, see benchmarks/sizes.py), RESULTS (benchmarks/results/gpu),
# BUDGET_S (480: the suite is stopped past it, keeping the benchmarks already finished).
#
# What runs: attribution (unpact vs captum, LOO and integrated gradients), scoring (shared-prefix
# reuse, batched scoring), memory (peak allocated GPU memory of six methods vs GA) and study (one
# study cell per stage against its floor) on one GPU;
# scaling (1 → N processes under accelerate launch, one GPU each) only with N ≥ 2 GPUs — on one GPU
# it is skipped (two processes cannot share one GPU under NCCL). With DEVICE=cpu, scaling runs two
# CPU processes.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-.venv/bin/python}
DEVICE=${DEVICE:-cuda}
SIZE=${SIZE:-1b}
RESULTS=${RESULTS:-benchmarks/results/gpu}
BUDGET_S=${BUDGET_S:-480}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 TOKENIZERS_PARALLELISM=false

if [[ "$DEVICE" == cuda* ]]; then
    if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
        echo "error: $PY has no CUDA (torch $("$PY" -c 'import torch; print(torch.__version__)')); install a CUDA" \
             "build of torch into it (the Makefile installs the CPU wheel), or run DEVICE=cpu SIZE=tiny $0" >&2
        exit 2
    fi
    NGPU=$("$PY" -c 'import torch; print(torch.cuda.device_count())')
    "$PY" -c 'import torch; print("GPU:", torch.cuda.get_device_name(0), "×", torch.cuda.device_count())'
else
    NGPU=0
fi

ONLY=(attribution scoring memory study)
ARGS=(
    # one study cell on the same model, per stage against its floor (a 30-person built-in benchmark)
    --arg study:--n-entities=30
    # fewer prompts and repeats than the CPU defaults: a 1B model's work per prompt is what is measured
    --arg attribution:--n=12 --arg attribution:--repeat=3 --arg attribution:--steps=32
    --arg scoring:--repeat=2 --arg scoring:--n=8 --arg scoring:--n-score=128
)
if [[ "$DEVICE" == cpu ]]; then
    ONLY+=(scaling)
    ARGS+=(--arg scaling:--processes=2 --arg scaling:--n=12 --arg scaling:--rounds=1)
elif (( NGPU >= 2 )); then
    ONLY+=(scaling)
    ARGS+=(--arg "scaling:--processes=$NGPU" --arg scaling:--n=48 --arg scaling:--rounds=1)
else
    echo "scaling: skipped ($NGPU GPU; 1 → N processes needs N ≥ 2 GPUs)"
fi

start=$(date +%s)
status=0
timeout --signal=INT "$BUDGET_S" "$PY" benchmarks/run.py --device "$DEVICE" --size "$SIZE" --results "$RESULTS" \
    --only "${ONLY[@]}" "${ARGS[@]}" || status=$?
echo "suite: $(( $(date +%s) - start )) s on $DEVICE, size $SIZE; results in $RESULTS/"
if (( status == 124 )); then
    echo "error: stopped after BUDGET_S=$BUDGET_S s; the finished benchmarks' JSON files are in $RESULTS/" >&2
fi
exit "$status"
