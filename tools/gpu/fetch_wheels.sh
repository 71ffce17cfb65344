#!/usr/bin/env bash
# On the CPU machine (it has PyPI): put into .whl/ the cp312 wheels the GPU machines lack (Python 3.12, no
# network), in two sets, each small enough to travel with the repository in one call (64 MiB at most):
#   .whl/bench  tools/gpu/bench-requirements.txt, all pinned: lmdeploy (stripped to its PyTorch engine), its
#               missing dependencies, `lmdeploy serve api_server`'s (fastapi, uvicorn ...), vln_ros.core's
#               and the openai client. Enough for `make gpu-bench` and `make gpu-serve`, no ROS, no venv.
#   .whl/ros    tools/gpu/requirements.txt resolved under tools/constraints.txt: ROS 2, rosidl and rosbags,
#               for `make gpu-check` (the real node), which installs both sets (tools/gpu/setup.sh).
# shared/GPU.md says why each step is needed. Never commit .whl/ (.gitignore).
# Usage: tools/gpu/fetch_wheels.sh   (about 30 s; prints the sets' sizes; tools/gpu/check_wheels.py checks them)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=.whl
rm -rf "$out"; mkdir -p "$out/bench" "$out/ros"
pipq() { python3 -m pip "$@" 2> >(grep -v '^WARNING: Location .* is ignored' >&2); }
cp312=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --platform manylinux_2_28_x86_64
       --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform linux_x86_64)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

# -- bench set: exactly the pinned wheels, no dependency resolution (check_wheels.py checks the closure).
grep -v '^lmdeploy==' tools/gpu/bench-requirements.txt > "$tmp/bench.txt"
pipq download -q "${cp312[@]}" --no-deps -d "$out/bench" -r "$tmp/bench.txt"
# lmdeploy: its wheel (102 MiB) is mostly TurboMind's CUDA-12 library, which the CUDA-13 machines cannot
# load and Qwen3-VL does not use. Strip it to the PyTorch engine (1.7 MB) and tag the build so pip takes it.
lmdeploy=$(grep '^lmdeploy==' tools/gpu/bench-requirements.txt); version=${lmdeploy#lmdeploy==}
pipq download -q "${cp312[@]}" --no-deps -d "$tmp" "$lmdeploy"
(cd "$tmp" && mkdir x && cd x && unzip -q ../lmdeploy-"$version"-*.whl \
   && rm -f lmdeploy/turbomind/_turbomind*.so lmdeploy/turbomind/lib64/libxgrammar.a \
   && sed -i -e '/turbomind\/_turbomind.*\.so,/d' -e '/turbomind\/lib64\/libxgrammar\.a,/d' \
        "lmdeploy-$version.dist-info/RECORD" \
   && zip -q -r "../lmdeploy-$version-1-cp312-cp312-manylinux_2_28_x86_64.whl" .)
mv "$tmp/lmdeploy-$version-1-cp312-cp312-manylinux_2_28_x86_64.whl" "$out/bench/"

# -- ROS set: resolved with dependencies, then without what the image or the bench set has.
# empy (the rosidl generators' template engine) is published as an sdist only: build its wheel here.
pipq wheel -q --no-deps -w "$out/ros" "$(grep '^empy==' tools/constraints.txt)"
pipq download -q "${cp312[@]}" --find-links "$out/ros" -d "$out/ros" -r tools/gpu/requirements.txt \
  -c tools/constraints.txt
norm() { sed 's/-[0-9].*//' | tr 'A-Z.-' 'a-z__'; }   # a wheel's file name -> its package name
image=$(grep -v '^#' tools/gpu/image-packages.txt | tr 'A-Z.-' 'a-z__')
for wheel in "$out"/ros/*.whl; do
  name=$(basename "$wheel" | norm)
  if grep -qx "$name" <<< "$image"; then rm "$wheel"; continue; fi
  for other in "$out"/bench/*.whl; do   # in both sets: the same version (else check_wheels.py fails), once
    if [ "$(basename "$other" | norm)" = "$name" ]; then
      [ "$(basename "$other" | cut -d- -f2)" = "$(basename "$wheel" | cut -d- -f2)" ] && rm "$wheel"; break
    fi
  done
done
# Time zones: not used. (apsw stays: rosbags.rosbag2 imports its sqlite3 storage even for MCAP bags.)
rm -f "$out"/ros/tzdata-*.whl

python3 tools/gpu/check_wheels.py "$out"
