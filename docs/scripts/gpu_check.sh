#!/bin/sh
# make gpu-check: runs docs/scripts/gpu_check.py with the Python whose torch sees CUDA (the checkout's
# .venv, else python3/python on PATH; GPU_CHECK_PYTHON=... chooses). Installs and downloads nothing.
cd "$(dirname "$0")/../.." || exit 1
has() { [ -x "$1" ] || command -v "$1" >/dev/null 2>&1; }
PY="${GPU_CHECK_PYTHON:-}"
if [ -z "$PY" ]; then
  for c in .venv/bin/python python3 python; do
    if has "$c" && "$c" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; then
      PY="$c"; break
    fi
  done
fi
if [ -z "$PY" ]; then   # no torch with CUDA here: run with what there is, the GPU steps say why they skip
  for c in .venv/bin/python python3 python; do
    if has "$c" && "$c" -c 'import numpy, onnx, onnxruntime, typer' >/dev/null 2>&1; then PY="$c"; break; fi
  done
fi
exec "${PY:-python3}" docs/scripts/gpu_check.py "$@"
