#!/usr/bin/env bash
# The test command: set up .venv (first run only) and run the whole suite. Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="$("$root/tools/venv.sh" | tail -n 1)"
cd "$root"
exec "$py" -m pytest -q -p no:cacheprovider "$@"
