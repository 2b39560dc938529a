# Two entry points that work on a fresh machine with only Python >= 3.10:
#   make demo   - create .venv, install compdd, run the main job (compdd demo --quick) on the embedded sample ImageNet
#   make test   - create .venv, install compdd[dev], run the test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.compdd-installed
DEMO_OUT ?= demo-out

.PHONY: venv demo demo-full test test-slow lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/compdd demo --quick --out $(DEMO_OUT)

demo-full: $(STAMP)
	$(BIN)/compdd demo --out $(DEMO_OUT)

test: $(STAMP)
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

lint: $(STAMP)
	$(BIN)/ruff check compdd edf tests bench

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
