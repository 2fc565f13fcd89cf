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

# torchship's dependencies for a lent GPU machine, where nothing can be installed, as wheels for
# that machine's Python (GPU_PYTHON; 3.12 on the H200 lent on 2026-11-30), not this one's
# (benchmarks/gpu_check.sh puts the folder on PYTHONPATH; the device tool carries it)
GPU_PYTHON ?= 3.12
gpu-deps:
	rm -rf build/gpu-deps
	$(PY) -m pip install --quiet --no-deps --target build/gpu-deps --only-binary=:all: \
		--python-version $(GPU_PYTHON) --implementation cp --platform manylinux2014_x86_64 \
		--platform manylinux_2_17_x86_64 --platform any \
		packaging platformdirs tomli-w pyyaml prometheus-client nvidia-ml-py
