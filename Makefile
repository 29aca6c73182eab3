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
	    $(VPY) -m pip install -q "torch" && EXTRA="dev,pipeline,data,eval,cuda"; \
	else \
	    echo "[setup] no CUDA: installing torch==$(TORCH) (CPU)"; \
	    $(VPY) -m pip install -q "torch==$(TORCH)" && EXTRA="dev,pipeline,data,eval"; \
	fi; \
	$(VPY) -c "import importlib.metadata as m; print('torch==' + m.version('torch').split('+')[0])" > constraints.txt; \
	$(VPY) -m pip install -q -c constraints.txt -e ".[$$EXTRA]"
	@touch $(STAMP)

demo: setup
	$(VPY) scripts/demo.py

# The data toolkit's Blender checks need .venv-blender (bpy is cp311-only): installed when this
# Python is 3.11, otherwise those tests skip with a note.
test: setup setup-blender-if-possible
	$(VPY) -m pytest -q tests

test-fast: setup
	$(VPY) -m pytest -q -m "not slow" tests

bench: setup
	$(VPY) scripts/bench_backends.py

clean:
	rm -rf $(VENV) $(BLENDER_VENV) constraints.txt

# Blender as a Python module: the renderer of record of `ss4d-build-dataset` (ss4d/data/render_blender.py
# runs in it as a subprocess). Its own venv because bpy pins numpy<2 and ships a cp311-only wheel
# (374 MB; ~30 s to install). Idempotent; the data tests skip the Blender checks without it.
BLENDER_VENV  ?= .venv-blender
BLENDER_PY    ?= $(PY)
BPY           ?= 5.0.1
BLENDER_STAMP := $(BLENDER_VENV)/.ss4d-bpy-$(BPY)

.PHONY: setup-blender setup-blender-if-possible
setup-blender: $(BLENDER_STAMP)

setup-blender-if-possible:
	@if $(BLENDER_PY) -c "import sys; sys.exit(sys.version_info[:2] != (3, 11))"; then \
	    $(MAKE) --no-print-directory setup-blender; \
	else echo "[setup-blender] skipped: bpy==$(BPY) needs Python 3.11 (the Blender data tests will skip)"; fi

$(BLENDER_STAMP):
	@$(BLENDER_PY) -c "import sys; sys.exit(sys.version_info[:2] != (3, 11))" || \
	    { echo "[setup-blender] bpy==$(BPY) needs Python 3.11 (set BLENDER_PY=python3.11)"; exit 1; }
	@test -x $(BLENDER_VENV)/bin/python || $(BLENDER_PY) -m venv $(BLENDER_VENV)
	$(BLENDER_VENV)/bin/python -m pip install -q "bpy==$(BPY)"
	@$(BLENDER_VENV)/bin/python -c "import bpy; print('[setup-blender] bpy', bpy.app.version_string)"
	@touch $@
