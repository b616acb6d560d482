#!/usr/bin/env bash
# The GPU rows of the matrix on a machine whose python3 already has torch (CUDA), accelerate,
# pluggy and pytest, with pa-core taken from this checkout. Logs go to $OUT (or ./gpu-logs).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-logs}"; mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/packages/core/src${PYTHONPATH:+:$PYTHONPATH}" PA_DISABLE_PLUGIN_AUTOLOAD=1
nvidia-smi -L
python3 -c "import torch, accelerate; print('torch', torch.__version__, 'accelerate', accelerate.__version__, 'GPUs', torch.cuda.device_count())"
for row in cuda cuda-bf16 cuda-fp16 fsdp multi-gpu fsdp-2gpu; do
  start=$(date +%s)
  python3 matrix/run_row.py "$row" > "$out/$row.log" 2>&1
  echo "row $row: exit $? in $(( $(date +%s) - start )) s: $(grep -E 'matrix row|SKIPPED' "$out/$row.log" | tail -1)"
  grep -E "^(FAILED|ERROR)|^E  " "$out/$row.log" | head -8
done
start=$(date +%s)
python3 -m pytest packages/core/tests -q -p no:cacheprovider -m "not slow" > "$out/core-tests.log" 2>&1
echo "pa-core tests on the GPU machine: exit $? in $(( $(date +%s) - start )) s: $(tail -1 "$out/core-tests.log")"
grep -E "^(FAILED|ERROR)" "$out/core-tests.log" | head -10
