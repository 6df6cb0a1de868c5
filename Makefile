# Two commands: `make demo` (set up + main job) and `make test` (set up + tests).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DEMO    ?= runs/demo
PYTEST_ARGS ?=

.PHONY: demo test test-slow lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Re-install only when the project metadata changes: re-running is fast.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev,h5]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/pdn data synth --out $(DEMO)/data --frames 2000 --seed 0
	$(BIN)/pdn data check $(DEMO)/data
	$(BIN)/pdn world preview --out $(DEMO)/world_preview.png --seed 0
	@echo "demo outputs: $(DEMO)/world_preview.png and $(DEMO)/data/"

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/pdn bench world

clean:
	rm -rf $(VENV) runs build *.egg-info
