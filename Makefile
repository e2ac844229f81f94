# LoveCS for QGIS — set-up, tests, packaging, demo, benchmarks.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SYS_PY := /usr/bin/python3
TORCH_PINS := torch==2.14.1 torchvision==0.29.1 segmentation-models-pytorch==0.6.0
APT_PKGS := qgis python3-qgis qgis-providers gdal-bin python3-gdal
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export QT_QPA_PLATFORM ?= offscreen

.PHONY: setup apt venv lint format test test-core package install-plugin plugin-dev bench demo default-model screenshots clean
.PHONY: gpu-check gpu-bundle gpu-bundle-ray gpu-bundle-check

setup: apt venv  ## install everything (apt QGIS + GDAL, venv with pinned torch)

apt:
	@if command -v qgis_process.bin >/dev/null && $(SYS_PY) -c "import qgis.core, osgeo.gdal" 2>/dev/null; then \
	  echo "QGIS + GDAL already installed"; \
	else \
	  $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends $(APT_PKGS); \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(SYS_PY) -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q -c constraints.txt $(TORCH_PINS)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,cluster]'
	touch $@

# Tests and qgis_process keep their profile and temporary files inside the checkout.
export TMPDIR := $(CURDIR)/.tmp
export QGIS_CUSTOM_CONFIG_PATH := $(CURDIR)/.qgis-profile
export XDG_RUNTIME_DIR := $(CURDIR)/.tmp/xdg-runtime
export LOVECS_SHARED_DATA ?= $(abspath $(CURDIR)/../shared/data)
PYTEST_ARGS ?=

$(TMPDIR) $(QGIS_CUSTOM_CONFIG_PATH):
	mkdir -p $@
	mkdir -p -m 700 $(XDG_RUNTIME_DIR)

test: venv | $(TMPDIR) $(QGIS_CUSTOM_CONFIG_PATH)  ## every test, headless
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

# Lint and types: ruff (rules, function size and formatting) over the tree, mypy over the engine and
# the plugin (pyproject.toml).
lint: venv  ## ruff check, ruff format --check, mypy (versions pinned in pyproject's dev extra)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: venv  ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test-core: venv | $(TMPDIR)  ## engine tests only (no QGIS)
	$(PY) -m pytest -q -ra -p no:qgis tests/core $(PYTEST_ARGS)

# The plugin: one folder lovecs_qgis/ carrying the plugin, metadata.txt, the engine and resources.
QGIS_PLUGINS_DIR ?= $(HOME)/.local/share/QGIS/QGIS3/profiles/default/python/plugins

package:  ## dist/lovecs_qgis.zip, installable with QGIS's "Install from ZIP"
	$(SYS_PY) scripts/package_plugin.py zip --out dist/lovecs_qgis.zip

install-plugin: package  ## install the zip into QGIS_PLUGINS_DIR (engine Python: this venv)
	$(SYS_PY) scripts/package_plugin.py install --zip dist/lovecs_qgis.zip \
	  --plugins "$(QGIS_PLUGINS_DIR)" --engine-python "$(abspath $(PY))"

plugin-dev:  ## build/plugins/lovecs_qgis, for tests and QGIS_PLUGINPATH=build/plugins
	$(SYS_PY) scripts/package_plugin.py dir --out build/plugins --engine-python "$(abspath $(PY))"

# The end-to-end demo on real imagery from two PyPI wheels (see README); DEMO_ARGS=--reduced for a quick run.
DEMO_ARGS ?=
demo: setup | $(TMPDIR)  ## train, adapt and map a real cross-sensor pair; styled map, preview, QGIS project
	$(PY) scripts/demo.py $(DEMO_ARGS)

SOURCE_MODEL := bench/out/source-v3/source.lovecs
$(SOURCE_MODEL): | $(TMPDIR)
	$(PY) bench/train_source.py --iterations 5000 --out $@

bench: venv $(SOURCE_MODEL) | $(TMPDIR)  ## benchmarks (CPU budget); see bench/RESULTS.md
	$(PY) bench/adaptation.py --source-model $(SOURCE_MODEL) --work bench/out/adaptation-small-fast
	$(PY) bench/inference.py

# The GPU check (issue 25, docs/gpu.md): every part of the GPU path in one guarded, timed run;
# DEVICE=cpu rehearses it on tiny sizes. No venv dependency: on the GPU machine python3 has torch.
DEVICE ?= cuda
GPU_PY := $(if $(wildcard $(PY)),$(PY),python3)
GPU_CHECK_OUT ?= bench/out/gpu-check
GPU_CHECK_ARGS ?=
gpu-check: | $(TMPDIR)  ## GPU check report (DEVICE=cuda|cpu; SIZE, BUDGET seconds, PARTS a,b)
	$(GPU_PY) bench/gpu_check.py --device $(DEVICE) --out $(GPU_CHECK_OUT) $(if $(SIZE),--size $(SIZE)) \
	  $(if $(BUDGET),--budget-s $(BUDGET)) $(if $(PARTS),--parts $(PARTS)) $(GPU_CHECK_ARGS)

gpu-bundle: | $(TMPDIR)  ## .gpu-bundle/: the wheels and data the GPU machine lacks (< 64 MiB with the tree)
	$(GPU_PY) scripts/gpu_bundle.py build

gpu-bundle-ray: | $(TMPDIR)  ## .gpu-bundle-ray/: Ray, stripped, for the optional second device call
	$(GPU_PY) scripts/gpu_bundle.py ray

gpu-bundle-check: | $(TMPDIR)  ## install .gpu-bundle with --no-index into a clean Python 3.12 venv (network: numpy)
	$(GPU_PY) scripts/gpu_bundle.py check

default-model: venv | $(TMPDIR)  ## retrain resources/models/default.lovecs (train, benchmark, card)
	$(PY) scripts/default_model.py

screenshots: venv | $(TMPDIR) $(QGIS_CUSTOM_CONFIG_PATH)  ## README screenshots (offscreen grab of the dock)
	$(PY) scripts/screenshots.py --out docs/screenshots

clean:
	rm -rf build dist .tmp .qgis-profile demo_out
