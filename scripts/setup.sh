#!/usr/bin/env bash
# Creates .venv and installs everything robot_rl needs on a fresh machine: system packages for
# offscreen rendering, then torch (CPU) first, then the project with every pin constrained so that
# nothing pulls a CUDA build of torch. Safe to re-run; `make` calls it only when the pins change.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PYTHON=$candidate; break; fi
  done
fi
[ -n "$PYTHON" ] || { echo "setup: no python3 found; install Python 3.11" >&2; exit 1; }

# Offscreen rendering (MUJOCO_GL=egl) needs libEGL/libGL; ffmpeg ships inside imageio-ffmpeg.
need_apt=()
ldconfig -p | grep -q 'libEGL.so.1' || need_apt+=(libegl1)
ldconfig -p | grep -q 'libGL.so.1' || need_apt+=(libgl1)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing system packages: ${need_apt[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "setup: missing system libraries ${need_apt[*]} (install them with your package manager)" >&2
  fi
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check -c requirements/constraints.txt)
"${PIP[@]}" torch==2.13.0
"${PIP[@]}" -e ".[dev,robosuite,baselines,convert,clip,ray]" 2>&1 | grep -v "^WARNING: Location" || true
# LeRobot 0.4.4 pins torch<2.11 but works beside torch 2.13: install it without its deps, then
# the runtime needs of its robot and motor-bus classes and its diffusion policy
# (../shared/ENVIRONMENT.md).
"${PIP[@]}" --no-deps lerobot==0.4.4
"${PIP[@]}" torchvision draccus pyserial feetech-servo-sdk deepdiff accelerate einops 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" -c "import torch, mujoco, gymnasium, zarr, diffusers, robot_rl" \
  || { echo "setup: the environment did not import; see the pip output above" >&2; exit 1; }
echo "setup: $VENV is ready"
