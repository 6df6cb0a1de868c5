# Two commands: `make demo` (set up + main job) and `make test` (set up + tests).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DEMO    ?= runs/demo
PYTEST_ARGS ?=

.PHONY: demo test test-slow test-browser lint bench bench-gpu zoo patchdrive-study patchdrive-selection-study clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Re-install only when the project metadata changes: re-running is fast.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev,h5,deploy]'
	touch $(STAMP)

# The main job: `pdn demo` (world data -> PilotNet -> eval and drive -> sticker attack and its controls
# -> smaller stickers -> PatchVote -> certificates and adaptive attacks -> HTML report). Finished stages
# are skipped on a re-run, so an interrupted `make demo` resumes. `make demo DEMO_ARGS=--quick`: ~4 min.
DEMO_ARGS ?=

demo: $(STAMP)
	$(BIN)/pdn demo --out $(DEMO) $(DEMO_ARGS)

# The layers (pyproject.toml's import-linter contracts) first: an import cycle between sibling modules or
# packages at any depth, an upward import inside the core, or a core module importing attacks/defenses/the
# app layer fails the run before the tests start.
test: $(STAMP)
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

# The HTML report in headless Chromium (console errors, images decode, summary on the first screen).
# Installs nothing: needs Debian's `chromium` (apt-get install -y chromium); skipped with the reason without
# it. REPORT=runs/demo/report/index.html checks that report instead of a tiny one built by the test.
REPORT ?=
test-browser: $(STAMP)
	PDN_REPORT=$(REPORT) $(BIN)/python -m pytest -q -m browser -rs tests/test_report_browser.py $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/pdn bench

# On a machine with a CUDA device: the gpu-marked tests and every benchmark with --device cuda, in one script
# (.ci/bench-gpu; results in runs/bench-gpu, the card named beside them). Without a GPU it stops at once.
bench-gpu: $(STAMP)
	BIN=$(BIN) .ci/bench-gpu

# The model zoo (drivenet_patch/models/zoo, `pdn zoo list`): re-make every model from the recipe in its
# manifest into $(ZOO), then print each one's re-measured figures beside the manifest's (about 1.5 h on
# 2 cores). Each step writes its record atomically when it finishes and is skipped on a re-run, so an
# interrupted `make zoo` resumes. One model: `make zoo ZOO_ARGS="--name pilotnet"`; the shipped models on
# the small check set only (seconds): `make zoo ZOO_ARGS=--check-only`.
ZOO      ?= runs/zoo
ZOO_ARGS ?=
zoo: $(STAMP)
	$(BIN)/pdn zoo make --work $(ZOO) $(ZOO_ARGS)

# The PilotNet vs PatchDrive study behind docs/training.md's table (~40 min on 2 cores): the same 160x320 data
# and recipe for both models, then held-out RMSE, closed-loop autonomy and the sticker attack (plus a
# sticker that also pulls PatchDrive's saliency). Results: $(STUDY)/results/*.json. Each step writes its
# result atomically, so an interrupted run resumes at the step it stopped in.
STUDY   ?= runs/patchdrive_study
S_MODELS := pilotnet patchdrive
S_RES   := $(STUDY)/results
S_ATK   := --size 2.0x3.5 --distance 5-15 --steps 200 --batch 16 --roads 4 --poses 32
S_EV    := --roads 4 --poses 32 --loop-roads 0

patchdrive-study: $(foreach m,$(S_MODELS),$(S_RES)/$(m)_eval.json $(S_RES)/$(m)_drive.json \
                    $(S_RES)/$(m)_attack_eval.json) $(S_RES)/patchdrive_saliency.json \
                    $(S_RES)/patchdrive_attack_sal_eval.json
	@echo "results: $(S_RES)"
# Keep the training and sticker results: make would delete them as intermediate files.
.SECONDARY: $(foreach m,$(S_MODELS),$(S_RES)/$(m)_train.json $(S_RES)/$(m)_attack.json) \
            $(S_RES)/patchdrive_attack_sal.json

$(STUDY)/train/meta.json: | $(STAMP)
	$(BIN)/pdn data synth --out $(STUDY)/train --frames 8000 --seed 1 --size 160x320 --cameras center,left,right
$(STUDY)/test/meta.json: | $(STAMP)
	$(BIN)/pdn data synth --out $(STUDY)/test --frames 2000 --seed 2 --size 160x320 --episode-steps 300
$(S_RES)/%_train.json: $(STUDY)/train/meta.json
	@mkdir -p $(S_RES)
	$(BIN)/pdn train --data $(STUDY)/train --model $* --input-size 160x320 --out $(STUDY)/$* --epochs 5 \
	  --samples-per-epoch 3072 --batch 32 --lr 1e-3 --seed 0 --resume --json > $@.tmp && mv $@.tmp $@
$(S_RES)/%_eval.json: $(S_RES)/%_train.json $(STUDY)/test/meta.json
	$(BIN)/pdn eval --model $(STUDY)/$* --data $(STUDY)/test --json > $@.tmp && mv $@.tmp $@
$(S_RES)/%_drive.json: $(S_RES)/%_train.json
	$(BIN)/pdn drive --model $(STUDY)/$* --roads 5 --km 0.4 --out $(STUDY)/$*_drive --json > $@.tmp && mv $@.tmp $@
$(S_RES)/%_attack.json: $(S_RES)/%_train.json
	$(BIN)/pdn attack --model $(STUDY)/$* --out $(STUDY)/$*_sticker $(S_ATK) --no-print --json > $@.tmp && mv $@.tmp $@
$(S_RES)/%_attack_eval.json: $(S_RES)/%_attack.json
	$(BIN)/pdn attack eval --model $(STUDY)/$* --sticker $(STUDY)/$*_sticker $(S_EV) --json > $@.tmp && mv $@.tmp $@
$(S_RES)/patchdrive_saliency.json: $(S_RES)/patchdrive_train.json $(STUDY)/test/meta.json
	$(BIN)/pdn saliency --model $(STUDY)/patchdrive --data $(STUDY)/test --out $(STUDY)/patchdrive_saliency \
	  --n 16 --json > $@.tmp && mv $@.tmp $@
$(S_RES)/patchdrive_attack_sal.json: $(S_RES)/patchdrive_train.json
	$(BIN)/pdn attack --model $(STUDY)/patchdrive --out $(STUDY)/patchdrive_sticker_sal $(S_ATK) \
	  --saliency-weight 2 --no-print --json > $@.tmp && mv $@.tmp $@
$(S_RES)/patchdrive_attack_sal_eval.json: $(S_RES)/patchdrive_attack_sal.json
	$(BIN)/pdn attack eval --model $(STUDY)/patchdrive --sticker $(STUDY)/patchdrive_sticker_sal $(S_EV) \
	  --json > $@.tmp && mv $@.tmp $@

# The patch-selection loss (`--model-arg selection_weight=L`): PilotNet and PatchDrive at
# lambda in SEL_LAMBDAS, the same data and recipe, then held-out RMSE, effective patches and cost
# (`pdn selection`), and the sticker attack with and without --saliency-weight 2 on >= 256 held-out
# frames with the noise/grey controls. Sized for ~60 min on 2 shared cores (74 min measured at load
# average 9-17, docs/training.md); every step writes its
# result atomically, so an interrupted run resumes. Table: $(SEL)/results/table.md.
SEL     ?= runs/patchdrive_selection
SEL_LAMBDAS ?= 0 0.03 1
SEL_SIZE ?= 96x192
SEL_K   ?= 4
SEL_TRAIN_FRAMES ?= 6000
SEL_TEST_FRAMES ?= 600
SEL_TRAIN ?= --epochs 3 --samples-per-epoch 2048 --batch 32 --lr 1e-3 --seed 0
SEL_ATK ?= --size 2.0x3.5 --distance 5-15 --steps 100 --batch 16 --roads 4 --poses 32
SEL_EV  ?= --roads 8 --poses 32 --loop-roads 0
SR      := $(SEL)/results
SEL_PD  := $(foreach l,$(SEL_LAMBDAS),pd$(l))
SEL_RUNS := pilotnet $(SEL_PD)
# pdL -> patchdrive with k = SEL_K and selection_weight = L; anything else is a registry name
sel_model = $(if $(filter pd%,$(1)),--model patchdrive --model-arg k=$(SEL_K) \
              --model-arg selection_weight=$(patsubst pd%,%,$(1)),--model $(1))

patchdrive-selection-study: $(SR)/table.md
	@cat $(SR)/table.md
.SECONDARY: $(foreach r,$(SEL_RUNS),$(SR)/$(r)_train.json $(SR)/$(r)_attack.json $(SR)/$(r)_eval.json \
              $(SR)/$(r)_selection.json $(SR)/$(r)_attack_eval.json) \
            $(foreach r,$(SEL_PD),$(SR)/$(r)_attack_sal.json $(SR)/$(r)_attack_sal_eval.json)

$(SEL)/train/meta.json: | $(STAMP)
	$(BIN)/pdn data synth --out $(SEL)/train --frames $(SEL_TRAIN_FRAMES) --seed 1 --size $(SEL_SIZE) \
	  --cameras center,left,right
$(SEL)/test/meta.json: | $(STAMP)
	$(BIN)/pdn data synth --out $(SEL)/test --frames $(SEL_TEST_FRAMES) --seed 2 --size $(SEL_SIZE) --episode-steps 300
$(SR)/%_train.json: $(SEL)/train/meta.json
	@mkdir -p $(SR)
	$(BIN)/pdn train --data $(SEL)/train $(call sel_model,$*) --input-size $(SEL_SIZE) --out $(SEL)/$* $(SEL_TRAIN) \
	  --resume --json > $@.tmp && mv $@.tmp $@
$(SR)/%_eval.json: $(SR)/%_train.json $(SEL)/test/meta.json
	$(BIN)/pdn eval --model $(SEL)/$* --data $(SEL)/test --json > $@.tmp && mv $@.tmp $@
$(SR)/%_selection.json: $(SR)/%_train.json $(SEL)/test/meta.json
	$(BIN)/pdn selection --model $(SEL)/$* --data $(SEL)/test --frames 512 --json > $@.tmp && mv $@.tmp $@
$(SR)/%_attack.json: $(SR)/%_train.json
	$(BIN)/pdn attack --model $(SEL)/$* --out $(SEL)/$*_sticker $(SEL_ATK) --no-print --json > $@.tmp && mv $@.tmp $@
$(SR)/%_attack_eval.json: $(SR)/%_attack.json
	$(BIN)/pdn attack eval --model $(SEL)/$* --sticker $(SEL)/$*_sticker $(SEL_EV) --json > $@.tmp && mv $@.tmp $@
$(SR)/%_attack_sal.json: $(SR)/%_train.json
	$(BIN)/pdn attack --model $(SEL)/$* --out $(SEL)/$*_sticker_sal $(SEL_ATK) --saliency-weight 2 --no-print \
	  --json > $@.tmp && mv $@.tmp $@
$(SR)/%_attack_sal_eval.json: $(SR)/%_attack_sal.json
	$(BIN)/pdn attack eval --model $(SEL)/$* --sticker $(SEL)/$*_sticker_sal $(SEL_EV) --json > $@.tmp && mv $@.tmp $@
$(SR)/table.md: $(foreach r,$(SEL_RUNS),$(SR)/$(r)_eval.json $(SR)/$(r)_selection.json $(SR)/$(r)_attack_eval.json) \
                $(foreach r,$(SEL_PD),$(SR)/$(r)_attack_sal_eval.json)
	$(BIN)/pdn selection-study --results $(SR) --json > $(SR)/table.json.tmp && mv $(SR)/table.json.tmp $(SR)/table.json

clean:
	rm -rf $(VENV) runs build *.egg-info
