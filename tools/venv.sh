#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv with the pinned versions from constraints.txt.
# Prints the environment's python path on the last line. Re-installs only when setup.cfg or constraints.txt change.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${TIMM_MRAP_VENV:-$root/.venv}"
python="${PYTHON:-python3}"
stamp="$venv/.timm_mrap_stamp"
want="$(cat "$root/setup.cfg" "$root/constraints.txt" "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)"

if [ ! -x "$venv/bin/python" ]; then
    echo "[venv] creating $venv" >&2
    "$python" -m venv "$venv" >&2
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "[venv] installing timm-mrap[test] with constraints.txt (torch from the local wheel cache)" >&2
    "$venv/bin/python" -m pip install -q -c "$root/constraints.txt" -e "$root[test]" >&2
    echo "$want" > "$stamp"
fi
echo "$venv/bin/python"
