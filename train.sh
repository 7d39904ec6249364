#!/usr/bin/env bash
# Train an MRAP / MAFC MobileNet with timm's train.py (or the built-in trainer when timm's scripts are unavailable).
#
#   ./train.sh                                  demo: digits ImageFolder, train, validate, print top-1 (CPU, ~2 min)
#   ./train.sh MODEL DATA_DIR [timm flags...]   e.g. ./train.sh mobilenetv2_mrap data/imagenet100 --recipe rein100_paper
#
# Options of this wrapper (anywhere): --recipe NAME|FILE, --nproc N (env NPROC), --nnodes N (env NNODES; with
# NODE_RANK, MASTER_ADDR, MASTER_PORT), --runner auto|timm|builtin (env TIMM_MRAP_RUNNER), --dry-run.
# Everything else goes to timm's train.py. The logic lives in timm_mrap/training/cli.py.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() {
    cat <<'USAGE'
usage: ./train.sh                                 the demo (digits, about two minutes on 2 CPU cores)
       ./train.sh MODEL DATA_DIR [--recipe NAME] [--nproc N] [--nnodes N] [timm train.py flags...]

  MODEL      a registered model, e.g. mobilenetv2_mrap, mobilenetv3_mrap, mobilenetv2_mafc
  DATA_DIR   ImageFolder root: DATA_DIR/train/<class>/*, DATA_DIR/validation/<class>/* (or val/)
  --recipe   rein100_paper | stanford_dogs_paper | mobilenet_mrap_modern | digits_demo | FILE.yaml
  --nproc    processes (GPUs) per node, run under torchrun (env NPROC)
  --nnodes   nodes (env NNODES); each node also needs NODE_RANK and MASTER_ADDR (MASTER_PORT, default 29500)
  --runner   auto (timm's train.py if found, else built-in) | timm | builtin   (env TIMM_MRAP_RUNNER)
  --dry-run  print the command instead of running it
USAGE
}
case "${1:-}" in -h|--help) usage; exit 0 ;; esac

export PYTHONSAFEPATH=1  # a timm/ folder in the working directory (a timm checkout) must not shadow timm
# OpenMP threads that spin while waiting slowed a CPU training step 2.3x on cores shared with another job
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
py="${PYTHON:-python3}"
if ! "$py" -c 'import timm_mrap' >/dev/null 2>&1; then
    py="$("$root/tools/venv.sh" | tail -n 1)"
fi
exec "$py" -m timm_mrap.training.cli train "$@"
