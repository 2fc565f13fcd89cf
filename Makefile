# One command for everything a change must pass: `make check`.
PY ?= python

.PHONY: check lint types test bench install

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
