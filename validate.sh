#!/usr/bin/env bash
# Validate an MRAP / MAFC MobileNet with timm's validate.py (or the built-in validator); writes results JSON + CSV.
#
#   ./validate.sh MODEL DATA_DIR --checkpoint F [timm validate.py flags...]
#   ./validate.sh MODEL DATA_DIR --pretrained [flags...]
#
# F: a timm training checkpoint (model_best.pth.tar), a .safetensors file, a Hub-format folder, or a reference
# checkpoint of the authors (converted on the fly with timm_mrap.convert). The logic lives in
# timm_mrap/training/cli.py.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() {
    cat <<'USAGE'
usage: ./validate.sh MODEL DATA_DIR (--checkpoint F | --pretrained) [--results-file PREFIX] [timm validate.py flags...]

  MODEL           a registered model, e.g. mobilenetv2_mrap
  DATA_DIR        ImageFolder root with validation/<class>/* (or val/; --split NAME for another folder)
  --checkpoint F  timm checkpoint (.pth.tar, .safetensors), Hub-format folder, or reference checkpoint (converted)
  --pretrained    the model's pretrained weights
  --results-file  write PREFIX.json and PREFIX.csv (default: output/validate/<model>-<checkpoint name>)
  --runner        auto (timm's validate.py if found, else built-in) | timm | builtin   (env TIMM_MRAP_RUNNER)
  --dry-run       print the command instead of running it
USAGE
}
case "${1:-}" in -h|--help|'') usage; [ -n "${1:-}" ]; exit $? ;; esac

export PYTHONSAFEPATH=1  # a timm/ folder in the working directory (a timm checkout) must not shadow timm
py="${PYTHON:-python3}"
if ! "$py" -c 'import timm_mrap' >/dev/null 2>&1; then
    py="$("$root/tools/venv.sh" | tail -n 1)"
fi
exec "$py" -m timm_mrap.training.cli validate "$@"
