#!/usr/bin/env bash
# GPU check (one H100, < 8 minutes, nothing downloaded). Run from the repository root:
#   bash bench/gpu.sh            # results printed; copy them with the card's name into BENCHMARKS.md
set -euo pipefail
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
echo "== extraction at 7B shape (bf16, random weights): probing vs bare forward"
timeout 300 "$PY" bench/gpu.py --prompts 256 --batch-size 16
echo "== all-layer probes at 7B shape vs sklearn (synthetic N=4000, L=33, D=4096)"
timeout 240 "$PY" bench/probes.py --case synthetic --accelerator gpu --sklearn_layers 2 || echo "probe benchmark failed"
n=$(nvidia-smi -L | wc -l)
if [ "$n" -gt 1 ]; then
  echo "== DDP probe fit on $n GPUs"
  timeout 120 "$PY" bench/probes.py --case synthetic --accelerator gpu --devices "$n" --skip_sklearn || echo "DDP run failed"
fi
