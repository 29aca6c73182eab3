# Newcomer commands: `make demo` (set up, then run the main job) and `make test` (set up, then run
# every test). Setup creates .venv in the repo root and is idempotent.
PY      ?= python3
VENV    ?= .venv
VPY     := $(VENV)/bin/python
TORCH   ?= 2.13.0
STAMP   := $(VENV)/.ss4d-installed
# setup.py extras installed everywhere (CUDA machines add "cuda")
EXTRAS  ?= dev,pipeline,data,ray,eval,export,app,browser

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: setup demo app test test-fast bench small-model clean

setup: $(STAMP)

# torch first (CPU build unless CUDA is present), then everything else under a constraints file
# that pins torch to what is installed: an unpinned resolve would replace the CPU build.
$(STAMP): setup.py Makefile
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
	    echo "[setup] CUDA found: installing torch and the 'cuda' extra"; \
	    $(VPY) -m pip install -q "torch" && EXTRA="$(EXTRAS),cuda"; \
	else \
	    echo "[setup] no CUDA: installing torch==$(TORCH) (CPU)"; \
	    $(VPY) -m pip install -q "torch==$(TORCH)" && EXTRA="$(EXTRAS)"; \
	fi; \
	$(VPY) -c "import importlib.metadata as m; print('torch==' + m.version('torch').split('+')[0])" > constraints.txt; \
	$(VPY) -m pip install -q -c constraints.txt -e ".[$$EXTRA]"
	@touch $(STAMP)

demo: setup
	$(VPY) scripts/demo.py

# The web page (gradio) on http://127.0.0.1:7860; ARGS="--tiny" to try it without weights.
app: setup
	$(VPY) -m ss4d.app $(ARGS)

# The data toolkit's Blender checks need .venv-blender (bpy is cp311-only): installed when this
# Python is 3.11, otherwise those tests skip with a note.
test: setup setup-blender-if-possible setup-browser-if-possible setup-gltf-validator-if-possible
	$(VPY) -m pytest -q tests

# Re-train the shipped small model checkpoints/ss4d-small from the asset files it lists (65-90 minutes on a
# 2-core CPU, plus 10 of evaluation; see checkpoints/ss4d-small/README.md). ARGS="--skip-eval" skips the evaluation.
# The script pins OMP_NUM_THREADS (the number of cores unless set) for every step.
small-model: setup
	$(VPY) scripts/train/small_model.py $(ARGS)

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

# The app's browser test drives Debian's chromium through Debian's chromium-driver (apt; never a browser
# download). Installed when missing and we are root with apt; otherwise that test skips with the reason.
.PHONY: setup-browser-if-possible setup-gltf-validator-if-possible
setup-browser-if-possible:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "[setup-browser] apt-get install chromium chromium-driver"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	        chromium chromium-driver >/dev/null) || echo "[setup-browser] apt failed: the browser test will skip"; \
	else echo "[setup-browser] no chromium/chromedriver and no root apt: the browser test will skip"; fi

# The Khronos glTF validator (npm package gltf-validator) for the GLB checks, into .node/ (ignored by git).
GLTF_VALIDATOR ?= 2.0.0-dev.3.10
setup-gltf-validator-if-possible:
	@if [ -d .node/node_modules/gltf-validator ]; then :; \
	elif command -v npm >/dev/null 2>&1; then \
	    npm install --silent --no-audit --no-fund --prefix .node gltf-validator@$(GLTF_VALIDATOR) \
	        || echo "[setup-gltf-validator] npm failed: the validator check will skip"; \
	else echo "[setup-gltf-validator] no npm: the Khronos validator check will skip"; fi
