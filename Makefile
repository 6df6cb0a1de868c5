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

# The main job as far as it exists: world data -> PilotNet (--quick) -> held-out eval -> closed-loop drive
# -> a printable sticker and its evaluation against controls -> PatchVote (--quick) and its certificates
# -> the HTML report. `pdn demo` with resumable stages is issue 6.
demo: $(STAMP)
	$(BIN)/pdn world preview --out $(DEMO)/world_preview.png --seed 0
	test -f $(DEMO)/data/meta.json || $(BIN)/pdn data synth --out $(DEMO)/data --frames 9000 --seed 1 --cameras center,left,right
	test -f $(DEMO)/heldout/meta.json || $(BIN)/pdn data synth --out $(DEMO)/heldout --frames 1500 --seed 2
	$(BIN)/pdn data check $(DEMO)/data
	$(BIN)/pdn train --data $(DEMO)/data --model pilotnet --quick --out $(DEMO)/pilotnet --resume
	$(BIN)/pdn eval --model $(DEMO)/pilotnet --data $(DEMO)/heldout
	$(BIN)/pdn drive --model $(DEMO)/pilotnet --roads 3 --km 0.5 --out $(DEMO)/drive --video $(DEMO)/drive/road0.mp4
	$(BIN)/pdn saliency --model $(DEMO)/pilotnet --data $(DEMO)/heldout --out $(DEMO)/saliency --n 8
	$(BIN)/pdn attack --model $(DEMO)/pilotnet --out $(DEMO)/attack --size 2.0x3.5 --distance 5-15 --steps 200
	$(BIN)/pdn attack eval --model $(DEMO)/pilotnet --sticker $(DEMO)/attack --loop-roads 4 --km 0.3
	$(BIN)/pdn train --data $(DEMO)/data --model patchvote --quick --out $(DEMO)/patchvote --resume
	$(BIN)/pdn certify --model $(DEMO)/patchvote --data $(DEMO)/heldout --sweep --attack 64 --out $(DEMO)/certify
	$(BIN)/pdn report $(DEMO)/pilotnet $(DEMO)/drive $(DEMO)/attack $(DEMO)/certify --out $(DEMO)/report
	@echo "demo outputs in $(DEMO): world_preview.png, pilotnet/, drive/road0.mp4, saliency/, attack/, certify/"
	@echo "report: $(DEMO)/report/index.html"

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/pdn bench world
	$(BIN)/pdn bench train
	$(BIN)/pdn bench attack
	$(BIN)/pdn bench defense

clean:
	rm -rf $(VENV) runs build *.egg-info
