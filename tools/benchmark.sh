#!/usr/bin/env bash
# Side-by-side cost of attention variants (params, GMACs, latency, throughput); see --help.
#   ./tools/benchmark.sh --standard --threads 2 --output docs/benchmark   # the README cost table's settings
#   ./tools/benchmark.sh --runtimes eager compile --precision fp32 bf16 --output out/bench   # any product of settings
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python
exec "$PYTHON" -m timm_mrap.benchmark "$@"
