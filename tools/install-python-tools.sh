#!/usr/bin/env bash
# Creates .venv (gitignored) with the Python packages the export and TensorBoard tests drive:
# onnxruntime, onnx, tensorboard (and numpy). Nothing else of DualFuse needs Python.
set -euo pipefail
cd "$(dirname "$0")/.."
if .venv/bin/python -c "import onnxruntime, onnx, tensorboard, numpy" >/dev/null 2>&1; then exit 0; fi
python=${PYTHON:-python3}
if ! "$python" -m venv --help >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv
fi
rm -rf .venv
"$python" -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check onnxruntime onnx tensorboard numpy
