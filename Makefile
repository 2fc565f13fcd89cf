# One command for everything a change must pass: `make check`.
PY ?= python

.PHONY: check lint types test bench install gpu-deps

install:
	$(PY) -m pip install -e '.[dev]'

lint:
	ruff check src tests tools benchmarks
	ruff format --check src tests tools benchmarks

types:
	mypy

test:
	$(PY) -m pytest

check: lint types test

bench:
	$(PY) benchmarks/resolve.py

# torchship's pure-Python dependencies for a lent GPU machine, where nothing can be installed
# (benchmarks/gpu_check.sh puts the folder on PYTHONPATH; the device tool carries it)
gpu-deps:
	rm -rf build/gpu-deps
	$(PY) -m pip install --quiet --no-deps --target build/gpu-deps \
		packaging platformdirs tomli-w pyyaml prometheus-client nvidia-ml-py
