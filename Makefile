# Set-up and everyday commands. `make train` and `make test` do everything on a fresh
# Debian/Ubuntu machine: system data package, virtual environment, install, run.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   := /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: train test lint data venv clean cxx

train: venv data cxx
	$(BIN)/vggjax train $(ARGS)

test: venv data cxx
	$(BIN)/ruff check src tests
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check src tests

data: $(DATA)
$(DATA):
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y -qq dataset-fashion-mnist

# g++ builds the oneDNN convolutions of impl="cpu_fast" on first use (vggjax.nn.onednn_build);
# without it vggjax runs them in pure JAX.
cxx:
	@command -v g++ >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq g++; }

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
