#!/usr/bin/env bash
# GPU smoke test: on a machine with a CUDA build of torch (and the project set up by scripts/setup.sh), check
# that every paradigm fits and scores on the GPU.
#
# Stages (each timed; a failure is reported by name and the script goes on to the next stage):
#   env       nvidia-smi -L, python / torch / CUDA versions, torch sees the device
#   contract  pytest -m gpu tests/test_contract_entries.py (the method contract with device="cuda": random,
#             llminit-var, seq-text, llm2rec, tallrec, collm-mf, pte on tiny synthetic data and a tiny LLM)
#   smoke     bench run --suite smoke (random, llminit-var; LightGCN on ml-100k)
#   seq-text  bench run ml-100k temporal_loo sasrec seq-text
#   llm2rec   bench run ml-100k temporal_loo sasrec llm2rec, a few steps per LLM stage
#   ctr       bench run --suite ctr --method tallrec,collm-mf
#   pte       bench run ml-100k cold_users sasrec pte (the pte suite's row), short profiles
# All CLI runs use one seed and write into a scratch results folder (never results/).
#
# Environment:
#   GPU_SMOKE_DEVICE   cuda (default), cuda:N, or cpu: a CPU dry run of the same stages (the contract
#                      stage then runs the CPU contract of the same entries instead of the gpu marker)
#   GPU_SMOKE_STAGES   comma-separated subset of the stages above (default: all)
#   GPU_SMOKE_RESULTS  results folder (default: a new mktemp -d folder, kept and printed)
#   GPU_SMOKE_PYTEST_ARGS  extra pytest arguments for the contract stage (word-split), e.g. "-x -k llm2rec"
#   PYTHON             the interpreter (default: .venv/bin/python if present, else python3)
#   BENCH_CACHE        prepared data / converted models (bench's default when unset)
# Exit status: 0 if every selected stage passed, 1 if any failed, 2 on a usage error.
set -u -o pipefail

cd "$(dirname "$0")/.." || exit 2
ALL_STAGES="env,contract,smoke,seq-text,llm2rec,ctr,pte"
DEVICE=${GPU_SMOKE_DEVICE:-cuda}
STAGES=${GPU_SMOKE_STAGES:-$ALL_STAGES}
if [[ -n ${PYTHON:-} ]]; then
    PY=$PYTHON
elif [[ -x .venv/bin/python ]]; then
    PY=.venv/bin/python
else
    PY=python3
fi
case $DEVICE in
    cpu|cuda|cuda:[0-9]*) ;;
    *) echo "gpu_smoke: GPU_SMOKE_DEVICE=$DEVICE: expected cuda, cuda:N or cpu" >&2; exit 2 ;;
esac
IFS=, read -r -a SELECTED <<<"$STAGES"
for s in "${SELECTED[@]}"; do
    if [[ ",$ALL_STAGES," != *",$s,"* ]]; then
        echo "gpu_smoke: unknown stage '$s' in GPU_SMOKE_STAGES; stages: $ALL_STAGES" >&2
        exit 2
    fi
done
RESULTS=${GPU_SMOKE_RESULTS:-$(mktemp -d "${TMPDIR:-/tmp}/gpu-smoke.XXXXXX")}
mkdir -p "$RESULTS/stage-logs" || exit 2
export PYTHONUNBUFFERED=1

selected() { [[ ",$STAGES," == *",$1,"* ]]; }

declare -a SUMMARY=()
FAILED=()

# run_stage NAME COMMAND...: runs COMMAND with its output to the terminal and to stage-logs/NAME.log,
# records wall seconds and the exit status
run_stage() {
    local name=$1
    shift
    selected "$name" || return 0
    local log="$RESULTS/stage-logs/$name.log" start=$SECONDS rc
    echo
    echo "=== stage $name: $*"
    "$@" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    local took=$((SECONDS - start))
    if ((rc == 0)); then
        echo "=== stage $name: ok (${took}s)"
        SUMMARY+=("$(printf '%-10s ok      %5ss' "$name" "$took")")
    else
        echo "=== stage $name: FAILED with exit status $rc after ${took}s (log: $log)" >&2
        SUMMARY+=("$(printf '%-10s FAILED  %5ss  exit %s, log %s' "$name" "$took" "$rc" "$log")")
        FAILED+=("$name")
    fi
}

env_check() {
    if [[ $DEVICE == cuda* ]]; then
        nvidia-smi -L || { echo "nvidia-smi -L failed: no NVIDIA driver / GPU" >&2; return 1; }
    else
        echo "(GPU_SMOKE_DEVICE=cpu: CPU dry run, nvidia-smi skipped)"
    fi
    "$PY" - "$DEVICE" <<'EOF'
import platform
import sys

import torch

device = sys.argv[1]
print(f"python {platform.python_version()} ({sys.executable})")
print(f"torch {torch.__version__}, built with CUDA {torch.version.cuda}, cuDNN "
      f"{torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}")
print(f"cuda available: {torch.cuda.is_available()}, devices: {torch.cuda.device_count()}")
for i in range(torch.cuda.device_count()):
    print(f"  cuda:{i} {torch.cuda.get_device_name(i)}, capability {torch.cuda.get_device_capability(i)}")
if device.startswith("cuda"):
    if not torch.cuda.is_available():
        sys.exit(f"GPU_SMOKE_DEVICE={device} but torch sees no CUDA device (a CPU-only torch build?)")
    x = torch.ones(256, 256, device=device)
    assert float((x @ x).sum()) == 256.0 ** 3
    print(f"a matrix product ran on {device}")
EOF
}

contract() {
    if [[ $DEVICE == cuda* ]]; then
        # the gpu-marked classes use device "cuda", the current device: for cuda:N, N becomes the only
        # visible card (of those CUDA_VISIBLE_DEVICES already shows)
        local n=${DEVICE#cuda} visible=${CUDA_VISIBLE_DEVICES:-} cards
        n=${n#:}
        if [[ -n $n && -n $visible ]]; then
            IFS=, read -r -a cards <<<"$visible"
            if [[ -z ${cards[$n]:-} ]]; then
                echo "$DEVICE: CUDA_VISIBLE_DEVICES=$visible has no card $n" >&2
                return 1
            fi
            n=${cards[$n]}
        fi
        # shellcheck disable=SC2086
        env ${n:+CUDA_VISIBLE_DEVICES=$n} "$PY" -m pytest -m gpu -q -rs -p no:cacheprovider --durations=10 \
            tests/test_contract_entries.py ${GPU_SMOKE_PYTEST_ARGS:-} || return 1
    else
        # CPU dry run: the CPU contract of the entries the gpu class covers
        # shellcheck disable=SC2086
        "$PY" -m pytest -q -p no:cacheprovider --durations=10 tests/test_contract_entries.py ${GPU_SMOKE_PYTEST_ARGS:-} \
            -k "TestEveryEntry and (random-mf or llminit-var-mf or seq-text-sasrec or llm2rec-sasrec or tallrec-none or collm-mf-none or pte-sasrec)"
    fi
}

bench_run() {
    "$PY" -m bench run --device "$DEVICE" --results "$RESULTS" --seeds 1 --no-table "$@"
}

echo "gpu_smoke: device $DEVICE, stages $STAGES, python $PY, results $RESULTS"

run_stage env env_check
if selected env && [[ " ${FAILED[*]} " == *" env "* ]]; then
    echo "gpu_smoke: the environment check failed; the other stages are skipped" >&2
else
    run_stage contract contract
    # LightGCN: random vs LLMInit-var (MiniLM), the suite's 3 epochs
    run_stage smoke bench_run --suite smoke
    run_stage seq-text bench_run --dataset ml-100k --split temporal_loo --backbone sasrec --method seq-text \
        --set backbone.epochs=2 --set backbone.train_batch_size=512
    run_stage llm2rec bench_run --dataset ml-100k --split temporal_loo --backbone sasrec --method llm2rec \
        --set 'method.csft={max_steps: 5, batch_size: 8, grad_accum: 1, warmup_steps: 0}' \
        --set 'method.mntp={max_steps: 5, batch_size: 8, warmup_steps: 0}' \
        --set 'method.ic={max_steps: 5, batch_size: 16, warmup_steps: 0}' \
        --set backbone.epochs=2 --set backbone.train_batch_size=512
    # the suite's CPU caps: SmolLM2, 32 training pairs per LLM stage, 16 test users x 8 pairs
    run_stage ctr bench_run --suite ctr --method tallrec,collm-mf
    # the pte suite's SASRec row as an ad hoc run (a --set on `--suite pte` must fit every part of the suite,
    # and its LLMInit part has no PtE settings); short profiles, one candidate, no refinement round
    run_stage pte bench_run --dataset ml-100k --split cold_users --backbone sasrec --method pte --encoder minilm \
        --set method.item_noun=movies --set method.max_new_tokens=16 --set method.candidates=1 \
        --set method.max_rounds=0 --set method.batch_size=64 \
        --set backbone.epochs=2 --set backbone.train_batch_size=512 --set backbone.train_targets_per_user=10
fi

echo
echo "=== gpu_smoke summary (device $DEVICE; results and logs in $RESULTS)"
for line in "${SUMMARY[@]}"; do
    echo "  $line"
done
if ((${#FAILED[@]})); then
    echo "gpu_smoke: FAILED stage(s): ${FAILED[*]}" >&2
    exit 1
fi
echo "gpu_smoke: all ${#SUMMARY[@]} stage(s) passed"
