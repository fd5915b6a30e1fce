#!/usr/bin/env bash
# End to end on a throwaway kind cluster (`make kind-e2e`, .github/workflows/kind-e2e.yml):
# build the CPU image and load it into kind, install the Kubeflow training operator, then run a
# 2-node x 2-process gloo fine-tune of the tiny model twice -- once through
# `mgft submit --backend k8s`, once through `helm install charts/mgft` -- wait for both to
# succeed and keep every pod's log.
#
# Needs docker, kind, kubectl, helm and network access. It cannot run on the machines this
# project is developed on (no container engine there); GitHub's runners have all of it.
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${KIND_CLUSTER:-mgft-e2e}
OPERATOR_REF=${OPERATOR_REF:-v1.9.4}
NAMESPACE=${NAMESPACE:-mgft-e2e}
LOGS=${LOGS:-kind-e2e-logs}
VALUES=charts/mgft/ci/cpu-values.yaml
VENV=.tools/e2e-venv
MGFT="$VENV/bin/mgft"

collect() {
  echo "--- collecting state and logs into $LOGS/"
  mkdir -p "$LOGS"
  kubectl get pytorchjobs,pods,services -n "$NAMESPACE" -o wide > "$LOGS/objects.txt" 2>&1 || true
  kubectl describe pods -n "$NAMESPACE" > "$LOGS/pods-describe.txt" 2>&1 || true
  kubectl logs -n kubeflow deployment/training-operator > "$LOGS/training-operator.log" 2>&1 || true
  local pod
  for pod in $(kubectl get pods -n "$NAMESPACE" -o name 2>/dev/null); do
    kubectl logs -n "$NAMESPACE" "$pod" --all-containers > "$LOGS/${pod#pod/}.log" 2>&1 || true
  done
}

cleanup() {
  collect
  if [ -z "${KEEP_CLUSTER:-}" ]; then
    kind delete cluster --name "$CLUSTER" || true
  fi
}

wait_for() {  # wait_for JOB: until Succeeded; on failure show why
  local job=$1
  if ! kubectl wait --for=condition=Succeeded "pytorchjob/$job" -n "$NAMESPACE" --timeout=900s; then
    "$MGFT" status "$job" --backend k8s --namespace "$NAMESPACE" || true
    "$MGFT" logs "$job" --backend k8s --namespace "$NAMESPACE" --rank 1 || true
    echo "FAILED: $job did not succeed" >&2
    return 1
  fi
  "$MGFT" status "$job" --backend k8s --namespace "$NAMESPACE"
  # The master's log ends with the trainer's summary: 4 ranks, loss going down.
  "$MGFT" logs "$job" --backend k8s --namespace "$NAMESPACE" --rank 0 | tee "$LOGS/$job-rank0.txt"
  grep -q "mgft-train: 20 steps on 4 x cpu (ddp)" "$LOGS/$job-rank0.txt"
  "$MGFT" logs "$job" --backend k8s --namespace "$NAMESPACE" --rank 1 > "$LOGS/$job-rank1.txt"
  grep -q "mgft-node: node 1 of 2" "$LOGS/$job-rank1.txt"
}

mkdir -p "$LOGS"
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet -e '.[k8s]'  # the launcher only: no torch

kind create cluster --name "$CLUSTER" --wait 180s
trap cleanup EXIT

docker build -f images/cpu/Dockerfile -t mgft:cpu .
kind load docker-image mgft:cpu --name "$CLUSTER"

kubectl apply --server-side \
  -k "github.com/kubeflow/trainer.git/manifests/overlays/standalone?ref=$OPERATOR_REF"
kubectl -n kubeflow rollout status deployment/training-operator --timeout=300s
kubectl create namespace "$NAMESPACE"

# 1) The launcher: same values file, read as an mgft job file.
"$MGFT" submit --config "$VALUES" --backend k8s --namespace "$NAMESPACE" --name mgft-e2e-submit
wait_for mgft-e2e-submit

# 2) The chart.
helm install mgft-e2e-helm charts/mgft -f "$VALUES" --namespace "$NAMESPACE"
wait_for mgft-e2e-helm

"$MGFT" list --backend k8s --namespace "$NAMESPACE"
echo "kind e2e: both jobs succeeded; logs in $LOGS/"
