#!/usr/bin/env bash
# GPU check, for a machine with a CUDA GPU. Writes everything to one folder:
#
#   tools/gpu_check.sh [OUT_DIR]          default OUT_DIR: $OUT if set, else gpu_check/
#
#   1. MRAP's operators on CUDA (Triton and torch kernels, torch.compile, AMP) against a float64 oracle -> tests.log
#   2. the benchmark on CUDA, eager: none / cbam / mrap (auto = Triton, and fused), fp32 and AMP bf16 / fp16,
#      inference and training step                                                          -> bench/, bench.log
#   3. one epoch of the digits demo through ./train.sh on the GPU                            -> demo/, demo.log
#   4. the table of errors against the float64 oracle with CUDA tensors                      -> errors.md
#   5. the benchmark's torch.compile settings (Inductor compiles each variant: the slowest step) -> compile/, compile.log
#
# Uses $PYTHON (default python3) with torch (CUDA build, which ships Triton) and timm >= 1.0.31 installed; installs
# this project into it without dependencies if it is not importable. The tests run in parallel where pytest-xdist is
# installed. GPU_CHECK_STEP_TIMEOUT=SECONDS stops any step that runs longer (default: no limit), so that a short
# lease still reaches the later steps. Every step runs even if one before it failed; the exit status is non-zero if
# any failed. summary.txt lists each step's status and time (rc=124: stopped by the step timeout).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-${OUT:-$root/gpu_check}}"
py="${PYTHON:-python3}"
mkdir -p "$out"
cd "$root"
export PYTHONUNBUFFERED=1

if ! "$py" -c 'import timm_mrap' >/dev/null 2>&1; then
    "$py" -m pip install -q --no-deps --no-build-isolation -e . >"$out/install.log" 2>&1 \
        || { echo "cannot install timm-mrap into $py (see $out/install.log)"; exit 2; }
fi
"$py" - <<'PY' | tee "$out/environment.txt" || exit 2
import torch, timm, timm_mrap
from timm_mrap.layers.mrap_triton import triton_available
assert torch.cuda.is_available(), 'no CUDA device: this script is for a GPU machine'
print(f'torch {torch.__version__}, timm {timm.__version__}, timm_mrap {timm_mrap.__version__}, '
      f'GPU {torch.cuda.get_device_name()}, Triton usable: {triton_available()}')
PY

status=0
step() {  # step NAME COMMAND...: run, log to NAME.log, record status and time
    local name="$1"; shift
    local t0=$SECONDS
    echo "== $name: $*"
    timeout "${GPU_CHECK_STEP_TIMEOUT:-0}" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    [ $rc -eq 0 ] || status=1
    printf '%-6s rc=%d %4ds  %s\n' "$name" $rc $((SECONDS - t0)) "$*" | tee -a "$out/summary.txt"
    tail -n 5 "$out/$name.log"
}

: >"$out/summary.txt"
parallel=()
"$py" -c 'import xdist' >/dev/null 2>&1 && parallel=(-n 8)
step tests "$py" -m pytest -q -p no:cacheprovider "${parallel[@]}" --durations=10 tests/test_mrap_paths.py \
    tests/test_mrap_ops.py tests/test_mrap_triton.py tests/test_mrap.py
variants=(mobilenetv2_mrap:none mobilenetv2_mrap:cbam mobilenetv2_mrap:mrap mobilenetv2_mrap:mrap:fused)
bench=("$py" -m timm_mrap.benchmark --device cuda --variants "${variants[@]}" --repeats 9 --iters 5 --warmup 3
       --keep-going --overwrite)
step bench "${bench[@]}" --output "$out/bench" --settings fp32:eager:infer:1 fp32:eager:infer:32 fp32:eager:train:32 \
    bf16:eager:infer:32 bf16:eager:train:32 fp16:eager:infer:32 fp16:eager:train:32 bf16:eager:train:128
TIMM_MRAP_DEMO_DIR="$out/demo" step demo ./train.sh --device cuda --epochs 1
step errors "$py" tests/test_mrap_paths.py
grep '^|' "$out/errors.log" >"$out/errors.md"
step compile "${bench[@]}" --output "$out/compile" --settings fp32:compile:infer:32 bf16:compile:train:32
echo "results in $out (summary.txt, bench/results.csv, compile/results.csv, errors.md, *.log)"
exit $status
