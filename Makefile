# mgft developer entry points. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO ?= .demo
# CPU machines: pin torch (constraints.txt) or pip pulls several GB of CUDA packages.
PIP_ENV := DS_BUILD_OPS=0 PIP_CONSTRAINT=$(CURDIR)/constraints.txt PIP_DISABLE_PIP_VERSION_CHECK=1

.PHONY: install demo test lint golden bench-cli clean slurm-up slurm-down

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP_ENV) $(BIN)/pip install --quiet -e '.[train,dev]'
	touch $@

install: $(BIN)/.installed

# A tiny Llama, tokenizer and instruction set built here (no download), then a real
# 2-process DDP LoRA fine-tune on CPU with gloo through `mgft submit --backend local`.
demo: install
	$(BIN)/python -m mgft_train.tiny --out $(DEMO)/assets --force
	rm -rf $(DEMO)/run
	$(BIN)/mgft submit --backend local --gpus 0 --nproc-per-node 2 --strategy ddp \
		--model $(DEMO)/assets/model --dataset $(DEMO)/assets/data.jsonl \
		--output $(DEMO)/run --max-steps 40 --micro-batch 8 --seq-len 128 --lr 3e-3

test: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check launcher trainer tests bench

# Rewrite the renderers' golden files; review the diff before committing.
golden: install
	$(BIN)/python -m pytest tests/launcher/render --update-golden -q

# A real 2-node Slurm cluster on this machine (root; packages: slurm/install-deps.sh).
# State under $$MGFT_SLURM_DIR (default /tmp/mgft-slurm). Clients: eval "$$(slurm/cluster.sh env)"
slurm-up:
	slurm/cluster.sh up

slurm-down:
	slurm/cluster.sh down

bench-cli: install
	$(BIN)/python bench/cli_startup.py

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .hypothesis
