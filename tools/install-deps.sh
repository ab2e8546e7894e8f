#!/usr/bin/env bash
# Installs the system packages DualFuse builds against, when they are missing (Debian/Ubuntu).
# OpenBLAS (sgemm), libpng and libjpeg-turbo (image I/O), pkg-config (finds OpenBLAS), FFmpeg's
# libraries (paired video in predict), the ffmpeg command (the video tests make their clips), and
# Open MPI (data-parallel training with mpirun; loaded at run time, so only mpirun runs need it),
# oneDNN (the bfloat16 autocast convolutions).
set -euo pipefail
packages=(libopenblas-dev libpng-dev libjpeg-dev pkg-config libavformat-dev libavcodec-dev libswscale-dev libavutil-dev ffmpeg
          openmpi-bin libopenmpi-dev libdnnl-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}"
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
$sudo apt-get update
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
