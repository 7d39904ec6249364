#!/usr/bin/env bash
# Side-by-side cost of attention variants (params, GMACs, latency, throughput); see --help.
#   ./tools/benchmark.sh --threads 2 --output docs/benchmark_cpu            # fp32 eager, CPU (+ CUDA when present)
#   ./tools/benchmark.sh --compile --precision fp32 bf16 --output out/bench  # + torch.compile and bf16 autocast
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python
exec "$PYTHON" -m timm_mrap.benchmark "$@"
