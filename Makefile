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

# The main job: `pdn demo` (world data -> PilotNet -> eval and drive -> sticker attack and its controls
# -> smaller stickers -> PatchVote -> certificates and adaptive attacks -> HTML report). Finished stages
# are skipped on a re-run, so an interrupted `make demo` resumes. `make demo DEMO_ARGS=--quick`: ~4 min.
DEMO_ARGS ?=

demo: $(STAMP)
	$(BIN)/pdn demo --out $(DEMO) $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/pdn bench

clean:
	rm -rf $(VENV) runs build *.egg-info
