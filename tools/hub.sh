#!/usr/bin/env bash
# Hugging Face Hub front door: write trained weights as a Hub folder (offline), then push it.
#
#   tools/hub.sh prepare CHECKPOINT --out DIR [--use-ema] [--label-names FILE|DIR] [--results validate.json] ...
#   tools/hub.sh push DIR --repo-id ORG/NAME [--revision BRANCH] [--private] [--create-pr] [--overwrite]
#   tools/hub.sh cards hf_cards [--check]     rewrite (or check) the per-model cards from the packaged template
#
# The logic lives in timm_mrap/hub/ (python -m timm_mrap.hub --help); this uses the project's .venv.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
case "${1:-}" in
    prepare|push|cards) ;;
    -h|--help|'') sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: tools/hub.sh prepare|push|cards ... (got '$1'; see tools/hub.sh --help)" >&2; exit 2 ;;
esac
py="$("$root/tools/venv.sh" | tail -n 1)"
exec "$py" -m timm_mrap.hub "$@"
