#!/usr/bin/env bash
# Fetch the Kubeflow CRD schemas and the stock runtime that the tests validate against into
# ../shared/k8s (where the development machines have them), for CI outside those machines.
# Apache-2.0 data files from the Kubeflow repositories at pinned tags; not copied into this repo.
set -euo pipefail
dest=${1:-"$(dirname "$0")/../../shared/k8s"}
mkdir -p "$dest/crds" "$dest/runtimes"
v1=https://raw.githubusercontent.com/kubeflow/trainer/v1.9.4/manifests/base/crds
v2=https://raw.githubusercontent.com/kubeflow/trainer/v2.3.0/manifests/base
curl -fsSL "$v1/kubeflow.org_pytorchjobs.yaml" -o "$dest/crds/kubeflow.org_pytorchjobs.v1.9.4.yaml"
for crd in trainjobs clustertrainingruntimes trainingruntimes; do
  curl -fsSL "$v2/crds/trainer.kubeflow.org_$crd.yaml" \
    -o "$dest/crds/trainer.kubeflow.org_$crd.v2.3.0.yaml"
done
curl -fsSL "$v2/runtimes/torch_distributed.yaml" -o "$dest/runtimes/torch_distributed.v2.3.0.yaml"
