# Newcomer commands: `make demo` (set up, then run the main job) and `make test` (set up, then run
# every test). Setup creates .venv in the repo root and is idempotent.
PY      ?= python3
VENV    ?= .venv
VPY     := $(VENV)/bin/python
TORCH   ?= 2.13.0
STAMP   := $(VENV)/.ss4d-installed

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: setup demo test test-fast bench clean

setup: $(STAMP)

# torch first (CPU build unless CUDA is present), then everything else under a constraints file
# that pins torch to what is installed: an unpinned resolve would replace the CPU build.
$(STAMP): setup.py Makefile
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
	    echo "[setup] CUDA found: installing torch and the 'cuda' extra"; \
	    $(VPY) -m pip install -q "torch" && EXTRA="dev,pipeline,cuda"; \
	else \
	    echo "[setup] no CUDA: installing torch==$(TORCH) (CPU)"; \
	    $(VPY) -m pip install -q "torch==$(TORCH)" && EXTRA="dev,pipeline"; \
	fi; \
	$(VPY) -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > constraints.txt; \
	$(VPY) -m pip install -q -c constraints.txt -e ".[$$EXTRA]"
	@touch $(STAMP)

demo: setup
	$(VPY) scripts/demo.py

test: setup
	$(VPY) -m pytest -q tests

test-fast: setup
	$(VPY) -m pytest -q -m "not slow" tests

bench: setup
	$(VPY) scripts/bench_backends.py

clean:
	rm -rf $(VENV) constraints.txt
