#!/usr/bin/env bash
# Fetch the Kubeflow CRD schemas that the tests validate rendered jobs against into .kubeflow/
# (the tests' default; or pass a directory and point MGFT_KUBEFLOW_DIR at it). Apache-2.0 data
# files from the Kubeflow repositories at pinned tags, about 5 MB: not copied into this repo.
# Without them the schema tests skip, saying so. The stock TrainJob runtime, which is small,
# is carried in tests/kubeflow/.
set -euo pipefail
dest=${1:-"$(dirname "$0")/../.kubeflow"}
mkdir -p "$dest/crds"
v1=https://raw.githubusercontent.com/kubeflow/trainer/v1.9.4/manifests/base/crds
v2=https://raw.githubusercontent.com/kubeflow/trainer/v2.3.0/manifests/base
curl -fsSL "$v1/kubeflow.org_pytorchjobs.yaml" -o "$dest/crds/kubeflow.org_pytorchjobs.v1.9.4.yaml"
for crd in trainjobs clustertrainingruntimes trainingruntimes; do
  curl -fsSL "$v2/crds/trainer.kubeflow.org_$crd.yaml" \
    -o "$dest/crds/trainer.kubeflow.org_$crd.v2.3.0.yaml"
done
# The newest Trainer v2 files found: its main branch at 8c0f505 (2026-08-21, 58 commits after
# v2.3.0; v2.4.0's own files were not found), pinned by commit, and its stock torch runtime.
head=https://raw.githubusercontent.com/kubeflow/trainer/8c0f5059bd51ec3ba6d6a6a7b2e1471de7bc13b3/manifests/base
mkdir -p "$dest/runtimes"
for crd in trainjobs clustertrainingruntimes trainingruntimes; do
  curl -fsSL "$head/crds/trainer.kubeflow.org_$crd.yaml" \
    -o "$dest/crds/trainer.kubeflow.org_$crd.master-2026-08-21.yaml"
done
curl -fsSL "$head/runtimes/torch_distributed.yaml" \
  -o "$dest/runtimes/torch_distributed.master-2026-08-21.yaml"
