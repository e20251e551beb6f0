# `make test` is the one test command (README, .ci/run): it installs what it needs, then runs the
# linters and the whole test suite. `make demo` runs `hubscan demo` (audit + patch, offline).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Reinstall when pyproject.toml changes.
STAMP  := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-16)
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: install data lint test demo

install: $(STAMP)

# The project with its dev extra, then pyproject.toml's [tool.hubscan] no-deps requirements
# (hash-pinned, installed without their dependencies: pip cannot say so inside `dependencies`).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(BIN)/python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["tool"]["hubscan"]["no-deps"], sep="\n")' > $(VENV)/no-deps.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes \
	  -r $(VENV)/no-deps.txt
	rm -f $(VENV)/.installed-* && touch $@

# Fashion-MNIST (real images for the probes and the zoo), from Debian, when missing and root.
data:
	@if [ ! -d $(FMNIST) ] && [ "$$(id -u)" = 0 ]; then \
	  apt-get install -y -q dataset-fashion-mnist || \
	  { apt-get update -q && apt-get install -y -q dataset-fashion-mnist; }; fi

lint: install
	$(BIN)/ruff check hubscan tests
	$(BIN)/ruff format --check hubscan tests
	$(BIN)/mypy
	$(BIN)/lint-imports

test: install data lint
	$(BIN)/python -m pytest

demo: install data
	$(BIN)/hubscan demo
