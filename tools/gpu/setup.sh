#!/usr/bin/env bash
# On a GPU machine without network: install the wheel sets that tools/gpu/fetch_wheels.sh made under .whl/
# (on a machine with PyPI). Safe to run again: an unchanged set is not installed twice.
#   tools/gpu/setup.sh bench   .whl/bench into $GPU_SITE (default .gpu_site; pip --target, no venv, no ROS)
#                              for `make gpu-bench` / `make gpu-serve`, which put it and the checkout on
#                              PYTHONPATH. The image's Python has torch & co; the set holds the rest.
#   tools/gpu/setup.sh check   .whl/ros and .whl/bench into $PYTHON's venv, msg/ and srv/ built into it and
#                              vln_ros installed editable (tools/install.sh, offline), for `make gpu-check`.
# One call to a lent machine carries at most 64 MiB: the check path sends .whl/bench in one call and
# .whl/ros in the next, on the same (still warm) machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${PYTHON:-python3}
mode=${1:-check}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
missing() { echo "no $1 here: run tools/gpu/fetch_wheels.sh on a machine with PyPI and send $1 along" >&2; exit 1; }
compgen -G '.whl/bench/*.whl' > /dev/null || missing .whl/bench

case $mode in
  bench)
    site=${GPU_SITE:-.gpu_site}
    key=$(cd .whl/bench && ls ./*.whl | sha256sum | cut -c1-16)
    if [ "$(cat "$site/.stamp" 2>/dev/null)" != "$key" ]; then
      echo "[gpu setup] installing $(ls .whl/bench/*.whl | wc -l) wheels of .whl/bench into $site"
      rm -rf "$site"
      "$python" -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/bench/*.whl
      echo "$key" > "$site/.stamp"
    fi ;;
  check)
    compgen -G '.whl/ros/*.whl' > /dev/null || missing .whl/ros
    prefix=$("$python" -c 'import sys; print(sys.prefix if sys.prefix != sys.base_prefix else "")')
    # The ROS 2 wheels load their libraries through a .pth that re-executes a venv's interpreter.
    [ -n "$prefix" ] || { echo "tools/gpu/setup.sh check needs $python to be a venv's interpreter (the ROS 2" \
      "wheels): python3 -m venv --system-site-packages /tmp/gpu_venv, then GPU_PY=/tmp/gpu_venv/bin/python" >&2
      exit 1; }
    VLN_ROS_PREFIX=$prefix VLN_ROS_WHEELS=.whl tools/install.sh ;;
  *)
    echo "usage: tools/gpu/setup.sh [bench|check]" >&2; exit 2 ;;
esac
