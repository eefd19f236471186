#!/usr/bin/env bash
# CUDA check, < 5 minutes on one GPU: the throughput benchmark on the GPU, then the precision tests
# (fp16/bf16 second-order meta-gradients on CUDA autocast).  Run from the repository root:
#     bash benchmarks/gpu_check.sh [OUTPUT_FOLDER]
# On a bare machine with torch, lightning, torchmetrics and pluggy installed, carry the other wheels in .whl/
# (higher, jsonargparse, ...): they are installed into /tmp/site first.  Writes throughput.json and logs.
set -uo pipefail
out="${1:-${OUT:-gpu_check_out}}"
mkdir -p "$out"
py="${PYTHON:-python3}"
if compgen -G ".whl/*.whl" >/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH=".:tests:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 WANDB_MODE=offline
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt"
"$py" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$out/device.txt"
timeout 200 "$py" benchmarks/throughput.py --device cuda --threads 8 --rounds 3 --round-seconds 1 \
    --json >"$out/throughput.json" 2>"$out/throughput.err"; echo "throughput: exit $?"
"$py" -c "
import json, runpy; throughput = runpy.run_path('benchmarks/throughput.py')
throughput['print_table'](json.load(open('$out/throughput.json')))" 2>&1 | tee "$out/throughput.txt"
timeout 90 "$py" -m pytest -q -p no:warnings tests/test_mixed_precision.py tests/test_precision.py 2>&1 \
    | tee "$out/precision_tests.txt" | tail -5
