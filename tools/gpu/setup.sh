#!/usr/bin/env bash
# On a GPU machine without network: install the wheels under .whl/ (made by tools/gpu/fetch_wheels.sh on a
# machine with PyPI) into the image's own Python (it has torch and transformers), build msg/ and srv/ into
# it and install vln_ros editable: the same steps as tools/install.sh, offline. Safe to run again; a later
# run with more wheels (.whl/py after .whl/ros: one call carries at most 64 MiB) installs those too.
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${PYTHON:-python3}
prefix=$("$python" -c 'import sys; print(sys.prefix if sys.prefix != sys.base_prefix else "")')
# The ROS 2 wheels load their libraries through a .pth that re-executes a venv's interpreter.
[ -n "$prefix" ] || { echo "tools/gpu/setup.sh needs $python to be a venv's interpreter (the ROS 2 wheels)" >&2; exit 1; }
[ -d .whl ] || { echo 'no .whl/ here: run tools/gpu/fetch_wheels.sh on a machine with PyPI and send .whl along' >&2; exit 1; }
VLN_ROS_PREFIX=$prefix VLN_ROS_WHEELS=.whl tools/install.sh
