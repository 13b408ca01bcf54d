# Two commands on a fresh clone: `make test` and `make demo`. Both install into .venv first when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# One intra-op thread per process: the test models are tiny, and with more threads than free cores
# (2-process tests, a busy CI machine) torch runs several times slower.
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1

.PHONY: install test demo bench meta-eval fresh-check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch is pinned in the same command: the CPU build of 2.13.0 lies on this machine's disk,
	# and an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet "torch==2.13.0" -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# Two pytest workers (pytest-xdist), one per core of the 2-core machines this project runs on; a test's
# own processes (torchrun, accelerate launch) pick free ports, so two run side by side. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(OFFLINE) $(PY) -m pytest -q -n $(TEST_WORKERS)

demo: $(STAMP)
	$(OFFLINE) $(VENV)/bin/hf-metalr compare --task digits --schedules all --seeds 3 --out runs/digits --resume

bench: $(STAMP)
	$(OFFLINE) $(PY) benchmarks/overhead.py

# Held-out evaluation of the shipped policy: digits, sentiment, spoken-digits at x0.1/x1/x10 of the
# good LR, every schedule (10, the LR-free peers included), 10 seeds on digits and 5 on the others.
# Finished runs are reused: into the committed benchmarks/results/meta_eval (the default) it rebuilds
# the report and the policy card's section from the committed runs in seconds; with
# META_EVAL_OUT=runs/meta_eval it trains every run again (about 2.5 hours on 2 CPU cores, one run at
# a time), and leaves the card alone.
META_EVAL_OUT ?= benchmarks/results/meta_eval
FRESH_CHECK_OUT ?= benchmarks/results/fresh_tasks
meta-eval: $(STAMP)
	$(OFFLINE) $(PY) benchmarks/meta_eval.py --out $(META_EVAL_OUT) $(if $(filter benchmarks/results/meta_eval,$(META_EVAL_OUT)),--card hf_metalr/policies/default.json) --task-seeds digits=10 $(META_EVAL_ARGS)

# The same protocol on three Trainer tasks added after v15 was picked: a character-level GPT-2 (3 seeds),
# an MLP regression and a tiny ViT classifier (5 seeds each). Meta-training has synthetic transformer
# and MLP families, not these models or data (docs/evaluation.md, "Fresh tasks"). As above: the
# committed runs' report in seconds, or FRESH_CHECK_OUT=runs/fresh_tasks to train them again (about an hour).
fresh-check: $(STAMP)
	$(OFFLINE) $(PY) benchmarks/meta_eval.py --tasks char-lm,regression,vit-digits --task-seeds char-lm=3 --seeds 5 --out $(FRESH_CHECK_OUT) $(META_EVAL_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache

# GPU check of the three recipes (full-size models, synthetic data, bf16, < 8 min); fails at once without CUDA.
# Then the host time of the callback's per-step pieces on BERT-base shapes, float32 and pure bf16 parameters.
.PHONY: gpu-smoke
gpu-smoke: $(STAMP)
	$(OFFLINE) $(PY) benchmarks/gpu_smoke.py --out runs/gpu_smoke
	$(OFFLINE) $(PY) benchmarks/gpu_step_cost.py --out runs/gpu_smoke/step_cost_float32.json
	$(OFFLINE) $(PY) benchmarks/gpu_step_cost.py --dtype bfloat16 --out runs/gpu_smoke/step_cost_bfloat16.json
