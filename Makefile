# Two commands do all the set-up on a fresh machine:
#   make demo   - creates .venv, installs nerfexport, runs the pipeline on the embedded scene
#   make test   - creates .venv if needed, runs the test suite
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
LEGO   ?= ../shared/data/lego_400

.PHONY: shrink-real-docs train-defaults-docs demo test teacher teacher-docs shrink-docs shrink-docs-w64 export-docs sweep-shrink-docs sweep-export-docs speed-bundles bench-docs speed-docs install gpu-check clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The local CPU wheel of torch where the machine has one; never the multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0 || $(PY) -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
	$(PY) -m pip install -q -e '.[train,bench,video,sweep,test]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/nerfexport demo --out demo-out

test: $(VENV)/.installed
	$(PY) -m pytest

# The lego teacher (256 wide, 8 layers, coarse + fine) at 100x100, trained once and cached in
# cache/; an interrupted run resumes. Later stages take cache/lego100-teacher.pt. The 20 minutes of
# training end the run (the step count is only a ceiling; about 30,000 steps on the 2-core Zen 5, 18,000 on the earlier AVX-512 CPU): both
# networks train at width 128 for 15 minutes and are then widened to 256 (docs/teacher.md).
teacher: cache/lego100-teacher.pt

cache/lego100-teacher.pt: | $(VENV)/.installed
	mkdir -p cache
	$(VENV)/bin/nerfexport train $(LEGO) --downscale 4 --test-every 20 -o $@ \
	  --steps 100000 --minutes 20 --batch-rays 128 --grid-every 64 --n-coarse 16 --n-fine 24 \
	  --grow-from 128 --grow-at 0.75 \
	  --lr 5e-4 --lr-final 5e-5 --eval-every 4 --eval-views 10 --seed 0 2>&1 | tee cache/lego100-teacher.log
	$(VENV)/bin/nerfexport eval $@ --data $(LEGO) --downscale 4 --test-every 20 --precision auto \
	  --json cache/lego100-teacher.eval.json | tee -a cache/lego100-teacher.log

# The curve and table of docs/teacher.md from the cached teacher.
teacher-docs: cache/lego100-teacher.pt
	$(VENV)/bin/nerfexport curve $< -o docs/teacher-curve-b128.png --final cache/lego100-teacher.eval.json \
	  --title "lego 100x100, 8x256 coarse+fine, 2-core CPU, 128 rays/step"

# The shrink study of docs/shrink.md: every method at widths 128 and 64, before and after
# distillation, and both widths trained from scratch for the same total time (about 2 hours
# on the 2-core CPU; resumes from cache/shrink-study/study.json when interrupted).
# --step-seconds: training step time of each width measured on the idle machine (see docs/shrink.md),
# which turns the scratch baselines' time budget into a step count.
shrink-docs: cache/lego100-teacher.pt
	$(VENV)/bin/nerfexport shrink-study $< -o cache/shrink-study --data $(LEGO) --downscale 4 --test-every 20 \
	  --widths 128,64 --finetune 128:1500,64:750 --step-seconds 128:0.129,64:0.0614 \
	  --doc docs/shrink-table.md --figure docs/shrink.png

# The width-64 half of docs/shrink.md as measured on 2026-11-25 (about 30 minutes): every method at
# 750 distillation steps and the from-scratch baseline, then coreset distilled for 6000 steps.
shrink-docs-w64: cache/lego100-teacher.pt
	$(VENV)/bin/nerfexport shrink-study $< -o cache/shrink-study-w64 $(LEGO_ARGS) \
	  --widths 64 --finetune 64:750 --step-seconds 64:0.0614 --doc docs/shrink-table-w64.md --figure docs/shrink-w64.png
	$(VENV)/bin/nerfexport shrink $< --width 64 --method coreset --finetune 6000 -o cache/w64-coreset-6000.pt \
	  $(LEGO_ARGS) --eval-views 10 --eval-coarse 32 --eval-fine 64

# The real model (docs/shrink.md, "The real model"): the original NeRF's lego_example imported with
# the images it was trained on, so that every later command evaluates it at its 400x400.
REAL ?= ../shared/models/lego_example/lego_example_200000.tar
REAL_ARGS = --data $(LEGO) --test-every 20
cache/lego_example.pt: | $(VENV)/.installed
	mkdir -p cache
	$(VENV)/bin/nerfexport import $(REAL) -o $@ --n-fine 64 $(REAL_ARGS)

# docs/shrink.md on the real model (about 75 minutes on a 2-core CPU, one run at a time): the default
# shrink at width 128 (20 minutes of distillation) with its fp32 and int8 bundles on the 10 views at
# 400x400; half the cost for 8 minutes; width 128 trained from scratch for 8 minutes; the default
# student before distillation on frame 0; every method before distillation at width 128 and 181.
shrink-real-docs: cache/lego_example.pt
	mkdir -p cache/r31
	$(VENV)/bin/nerfexport shrink $< --width 128 -o cache/r31/F-w128-default.pt
	$(VENV)/bin/nerfexport export cache/r31/F-w128-default.pt -o cache/r31/F-fp32 --force
	$(VENV)/bin/nerfexport export cache/r31/F-w128-default.pt --int8 -o cache/r31/F-int8 --force
	$(VENV)/bin/nerfexport bench fp32=cache/r31/F-fp32@ort-cpu int8=cache/r31/F-int8@ort-cpu --views 10 --repeat 1 \
	  --no-peak -o cache/r31/bench-F
	$(VENV)/bin/nerfexport shrink $< --budget 0.5 --minutes 8 -o cache/r31/B-half-8min.pt
	$(VENV)/bin/nerfexport train $(LEGO) --test-every 20 --width 128 --grow-from 0 --minutes 8 --render-coarse 64 \
	  --render-fine 64 --no-final-eval -o cache/r31/D-scratch-w128.pt
	$(PY) docs/scripts/pixel_psnr.py cache/r31/D-scratch-w128.pt cache/r31/F-w128-default.pt
	$(VENV)/bin/nerfexport shrink $< --width 128 --finetune 0 --eval-views 1 -o cache/r31/G-w128-ft0.pt
	$(VENV)/bin/nerfexport export cache/r31/G-w128-ft0.pt -o cache/r31/G-fp32 --force
	$(VENV)/bin/nerfexport bench g=cache/r31/G-fp32@ort-cpu --views 1 --repeat 1 --no-peak -o cache/r31/bench-G
	$(VENV)/bin/nerfexport shrink-study $< -o cache/r31/study0 --widths 128,181 \
	  --methods lowrank,coreset,data-coreset,magnitude,magnitude-in,magnitude-out,activation,uniform \
	  --finetune 128:0,181:0 --eval-pixels 4096 --eval-coarse 64 --eval-fine 64 --no-scratch \
	  --doc docs/shrink-real-table.md

# docs/export.md: fp32 against static int8 (each calibration method) for the teacher and the
# width-128 student of docs/bench.md, rendered through onnxruntime (about 10 minutes on the Zen 5
# machine).
W128 ?= cache/w128.pt
export-docs: cache/lego100-teacher.pt $(W128)
	$(VENV)/bin/nerfexport export-study teacher=cache/lego100-teacher.pt w128=$(W128) -o cache/export-study \
	  --data $(LEGO) --downscale 4 --test-every 20 --views 5 --threads 1 --doc docs/export-table.md

# The same two tables regenerated by `nerfexport sweep` (docs/sweep.md): the sweep files in
# docs/sweeps/ hold the settings of shrink-docs and export-docs; the cells run as Ray tasks, two at a
# time on the 2-core CPU (one torch thread each), and are cached in the output folder (a rerun
# resumes and skips finished cells). The paths of the teacher and of the dataset are written in the
# sweep files, relative to docs/sweeps/ (cache/lego100-teacher.pt and ../shared/data/lego_400).
sweep-shrink-docs: cache/lego100-teacher.pt
	$(VENV)/bin/nerfexport sweep docs/sweeps/shrink-table.toml -o cache/sweep-shrink --doc docs/shrink-table.md
	cp cache/sweep-shrink/shrink-lego.png docs/shrink.png

sweep-export-docs: cache/lego100-teacher.pt
	$(VENV)/bin/nerfexport sweep docs/sweeps/export-table.toml -o cache/sweep-export --doc docs/export-table.md

# The width-128 student of docs/bench.md and docs/speed.md (2026-11-25): coreset + 1500 distillation
# steps from the cached teacher (about 9 minutes on the 2-core CPU).
cache/w128.pt: cache/lego100-teacher.pt
	$(VENV)/bin/nerfexport shrink $< --width 128 -o $@ --eval-views 5

# Bundles for docs/bench.md and docs/speed.md: the teacher and the width-128 student (fp32 and
# int8), each with its baked occupancy grid.
SPEED ?= cache/speed
BENCH_W128 ?= cache/w128.pt
LEGO_ARGS = --data $(LEGO) --downscale 4 --test-every 20
speed-bundles: cache/lego100-teacher.pt $(BENCH_W128)
	mkdir -p $(SPEED)
	$(VENV)/bin/nerfexport export cache/lego100-teacher.pt -o $(SPEED)/teacher-fp32 $(LEGO_ARGS) --force
	$(VENV)/bin/nerfexport export $(BENCH_W128) -o $(SPEED)/w128-fp32 $(LEGO_ARGS) --force
	$(VENV)/bin/nerfexport export $(BENCH_W128) --int8 -o $(SPEED)/w128-int8 $(LEGO_ARGS) --force

# docs/bench.md: the teacher on torch against the bundles on onnxruntime's CPU provider, plain
# (every sample evaluated) and with empty-space skipping + early termination, on the same
# held-out views at 64+128 samples, with the GEMM peak measured first (about 10 minutes; run it
# on an otherwise idle machine).
bench-docs: speed-bundles
	$(VENV)/bin/nerfexport bench "teacher 256 fp32=cache/lego100-teacher.pt@torch" \
	  "teacher 256 bf16=cache/lego100-teacher.pt@torch-bf16" \
	  "teacher 256 fp32=$(SPEED)/teacher-fp32@ort-cpu:plain" \
	  "teacher 256 fp32 skip=$(SPEED)/teacher-fp32@ort-cpu" \
	  "w128 fp32=$(SPEED)/w128-fp32@ort-cpu:plain" \
	  "w128 fp32 skip=$(SPEED)/w128-fp32@ort-cpu" \
	  "w128 int8=$(SPEED)/w128-int8@ort-cpu:plain" \
	  "w128 int8 skip=$(SPEED)/w128-int8@ort-cpu" \
	  $(LEGO_ARGS) --views 5 --repeat 1 -o docs/bench

# docs/speed.md: network throughput by graph form, threads, workers and batch; the grid
# threshold and early-termination sweep (about 10 minutes).
speed-docs: speed-bundles
	$(PY) docs/scripts/ort_tuning.py $(BENCH_W128) $(LEGO) > docs/speed-tuning.md
	$(PY) docs/scripts/grid_sweep.py $(SPEED)/w128-int8 $(LEGO) > docs/speed-grid.md

# docs/train-defaults.md: the no-flag recipe on lego (30 minutes) and on the synthetic forward-facing
# scene at 504x378 (15 minutes), against the settings before 2026-12-03 (2 minutes: their step rate).
FORWARD := cache/defaults/forward504
$(FORWARD): | $(VENV)/.installed
	$(VENV)/bin/nerfexport synth $@ --forward --resolution 504x378 --views 20
train-defaults-docs: $(FORWARD) | $(VENV)/.installed
	mkdir -p cache/defaults
	$(VENV)/bin/nerfexport train $(LEGO) --downscale 4 --test-every 20 -o cache/defaults/lego100.pt 2>&1 | tee cache/defaults/lego100.log
	$(VENV)/bin/nerfexport eval cache/defaults/lego100.pt --data $(LEGO) --downscale 4 --test-every 20 --precision auto \
	  --json cache/defaults/lego100.eval.json | tee cache/defaults/lego100.eval.log
	$(VENV)/bin/nerfexport train $(FORWARD) -o cache/defaults/ff-old.pt --minutes 2 --steps 5000 --batch-rays 1024 \
	  --n-coarse 64 --n-fine 64 --no-occupancy --grow-from 0 --no-final-eval --restart 2>&1 | tee cache/defaults/ff-old.log
	$(VENV)/bin/nerfexport train $(FORWARD) -o cache/defaults/ff.pt --minutes 15 --restart 2>&1 | tee cache/defaults/ff.log

# The GPU paths in one command on a GPU machine, from a fresh checkout with the packages it has
# (installs nothing, needs no internet; under 8 minutes): nerfexport doctor, tests/test_gpu.py and a
# short bench of the torch teacher on CUDA against every GPU runtime there, all written to
# $(GPU_CHECK_OUT)/ (summary.md lists each step, run or skipped and why). Exits 0 where there is no GPU.
GPU_CHECK_OUT ?= cache/gpu-check

gpu-check:
	sh docs/scripts/gpu_check.sh --out $(GPU_CHECK_OUT)

clean:
	rm -rf $(VENV) demo-out
