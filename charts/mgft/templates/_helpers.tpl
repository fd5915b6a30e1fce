{{/*
The chart renders the same objects as `mgft render --backend k8s` for the same job file (a test
compares them). Keep it in step with launcher/mgft/render/ and templates/ there. The trainer's
flags and the fabric presets are data generated from Python (_generated.tpl).
*/}}

{{- define "mgft.name" -}}
{{- $name := .Values.name | default .Release.Name -}}
{{- if or (gt (len $name) 48) (not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $name)) -}}
{{- fail (printf "name %q: not a DNS-1035 label of at most 48 characters; set name (or the release name) to lowercase letters, digits and '-'" $name) -}}
{{- end -}}
{{- $name -}}
{{- end -}}

{{- define "mgft.namespace" -}}
{{- .Values.k8s.namespace | default .Release.Namespace -}}
{{- end -}}

{{- define "mgft.checks" -}}
{{- if and .Values.backend (ne .Values.backend "k8s") -}}
{{- fail (printf "backend %q: this chart runs Kubernetes jobs; set backend: k8s or leave it out" .Values.backend) -}}
{{- end -}}
{{- if not .Values.image -}}
{{- fail "image: required; the container image with the mgft trainer, e.g. ghcr.io/acme/mgft:cuda" -}}
{{- end -}}
{{- if and (ne .Values.k8s.api "pytorchjob") (or .Values.k8s.elastic_min_nodes .Values.k8s.elastic_max_nodes .Values.k8s.priority_class .Values.k8s.scheduler_name .Values.k8s.volcano_queue (not (kindIs "invalid" .Values.k8s.backoff_limit))) -}}
{{- fail "k8s: elastic, priority_class, scheduler_name, volcano_queue and backoff_limit need api: pytorchjob" -}}
{{- end -}}
{{- if eq (toString .Values.train.strategy) "auto" -}}
{{- fail "train.strategy \"auto\": the chart cannot size the job; run `mgft plan` (or `mgft render --strategy auto`) and set the strategy it names" -}}
{{- end -}}
{{- if and (ne (toString .Values.train.precision) "mixed") (hasPrefix "zero" (toString .Values.train.strategy)) -}}
{{- fail (printf "train.precision %q: strategy %s steps DeepSpeed's ZeRO optimizer, which always keeps fp32 master weights; use precision: mixed with ZeRO, or strategy ddp, fsdp or mp for bf16 weights" (toString .Values.train.precision) (toString .Values.train.strategy)) -}}
{{- end -}}
{{- if gt (int .Values.max_restarts) 0 -}}
{{- fail "max_restarts: local runs only; on Kubernetes set k8s.max_restarts with an elastic job, or rely on restartPolicy OnFailure (a restarted pod resumes from the last checkpoint)" -}}
{{- end -}}
{{- if and .Values.train.eval_dataset (not (kindIs "invalid" .Values.train.eval_split)) -}}
{{- fail "train.eval_split: train.eval_dataset already names the eval set; drop one of them" -}}
{{- end -}}
{{- if and (not (kindIs "invalid" .Values.train.eval_every)) (not .Values.train.eval_dataset) (kindIs "invalid" .Values.train.eval_split) -}}
{{- fail "train.eval_every: there is no eval set to evaluate on; set train.eval_dataset or train.eval_split, or drop train.eval_every" -}}
{{- end -}}
{{- if .Values.generate -}}
{{- fail "generate: this chart runs training jobs; render a generation job with `mgft generate --backend k8s --dry-run`" -}}
{{- end -}}
{{- end -}}

{{/* Processes per node: as given, else one per GPU (1 with strategy mp, 1 on CPU). */}}
{{- define "mgft.nproc" -}}
{{- $r := .Values.resources -}}
{{- if $r.nproc_per_node -}}{{ int $r.nproc_per_node }}
{{- else if and (gt (int $r.gpus) 0) (ne .Values.train.strategy "mp") -}}{{ int $r.gpus }}
{{- else -}}1{{- end -}}
{{- end -}}

{{- define "mgft.labels" -}}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/name: mgft
mgft.dev/job: {{ include "mgft.name" . }}
{{- end -}}

{{- define "mgft.jobLabels" -}}
{{ include "mgft.labels" . }}
{{- with .Values.k8s.kueue_queue }}
kueue.x-k8s.io/queue-name: {{ . | toJson }}
{{- end }}
{{- end -}}

{{/* What torchrun runs: the trainer module and every TrainSpec field that has a value, as
--flag=value, in the order and with the flags of mgft.trainFields (_generated.tpl). A float
is written as Go writes it (1e-05 may read 0.00001): the trainer parses the same number. */}}
{{- define "mgft.trainerArgs" -}}
{{- $t := .Values.train -}}
{{- $args := list "-m" "mgft_train" -}}
{{- range (include "mgft.trainFields" . | fromJsonArray) -}}
{{- $v := index $t (index . 0) -}}
{{- $kind := index . 2 -}}
{{- if not (kindIs "invalid" $v) -}}
{{- $text := toString $v -}}
{{- if eq $kind "int" }}{{ $text = printf "%d" (int64 $v) }}
{{- else if eq $kind "float" }}{{ $text = toJson (float64 $v) }}
{{- else if eq $kind "bool" }}{{ $text = ternary "True" "False" $v }}
{{- else if eq $kind "list" }}{{ $text = join "," $v }}{{ end -}}
{{- $args = append $args (printf "%s=%s" (index . 1) $text) -}}
{{- end -}}
{{- end -}}
{{- toJson $args -}}
{{- end -}}

{{- define "mgft.claim" -}}
{{- if .Values.k8s.pvc -}}{{ .Values.k8s.pvc }}
{{- else if .Values.k8s.pvc_size -}}{{ include "mgft.name" . }}-output{{- end -}}
{{- end -}}

{{/* mgft-node waits for the master, then execs torchrun; `$` doubled so the kubelet's
$(VAR) expansion hands the process every word unchanged. */}}
{{- define "mgft.command" -}}
{{- $cmd := list "mgft-node" (printf "--nproc-per-node=%s" (include "mgft.nproc" .)) (printf "--master-wait=%d" (int .Values.k8s.master_wait)) -}}
{{- if include "mgft.claim" . -}}
{{- $cmd = append $cmd (printf "--workdir=%s" .Values.k8s.mount_path) -}}
{{- end -}}
{{- $cmd = concat $cmd (list "--") (include "mgft.trainerArgs" . | fromJsonArray) -}}
{{- $out := list -}}
{{- range $cmd }}{{ $out = append $out (replace "$" "$$" .) }}{{ end -}}
{{- toJson $out -}}
{{- end -}}

{{- define "mgft.secretRef" -}}
{{- $parts := splitn ":" 2 .ref -}}
{{- dict "name" .env "valueFrom" (dict "secretKeyRef" (dict "name" $parts._0 "key" ($parts._1 | default .key))) | toJson -}}
{{- end -}}

{{/* mgft's defaults (a user's env may change their value, not their place), the user's
other variables by name, then secret references. */}}
{{- define "mgft.env" -}}
{{- $user := .Values.env | default dict -}}
{{- $gpu := gt (int .Values.resources.gpus) 0 -}}
{{- $dist := .Values.dist | default dict -}}
{{- $debug := $dist.debug | default false -}}
{{- $fabric := $dist.fabric | default "auto" -}}
{{/* Layers in mgft's order (launcher/mgft/comm/nccl.py settings()); a later layer changes a value
but keeps its first place. */}}
{{- $layers := list (list "PYTHONUNBUFFERED" "1") (list "TOKENIZERS_PARALLELISM" "false") (list "HF_HUB_OFFLINE" "1") -}}
{{- if $gpu -}}
{{- $layers = concat $layers (list (list "TORCH_NCCL_ASYNC_ERROR_HANDLING" "3") (list "NCCL_DEBUG" "WARN") (list "OMP_NUM_THREADS" "4") (list "MGFT_FABRIC" $fabric)) -}}
{{- else -}}
{{- $layers = append $layers (list "OMP_NUM_THREADS" "1") -}}
{{- end -}}
{{- $timeout := ternary 120 600 $debug -}}
{{- if not (kindIs "invalid" $dist.timeout) }}{{ $timeout = int $dist.timeout }}{{ end -}}
{{- $layers = append $layers (list "MGFT_DIST_TIMEOUT" (toString (int $timeout))) -}}
{{- if $dist.preflight }}{{ $layers = append $layers (list "MGFT_PREFLIGHT" "1") }}{{ end -}}
{{- if $gpu -}}
{{- range (index (include "mgft.fabricPresets" . | fromJson) $fabric) }}{{ $layers = append $layers . }}{{ end -}}
{{- end -}}
{{- if $debug -}}
{{- $torchDebug := list (list "TORCH_DISTRIBUTED_DEBUG" "DETAIL") (list "TORCH_CPP_LOG_LEVEL" "INFO") (list "TORCH_SHOW_CPP_STACKTRACES" "1") -}}
{{- if $gpu -}}
{{- $layers = concat $layers (list (list "NCCL_DEBUG" "INFO") (list "NCCL_DEBUG_SUBSYS" "INIT,ENV,NET,GRAPH")) $torchDebug (list (list "TORCH_NCCL_DESYNC_DEBUG" "1") (list "TORCH_NCCL_TRACE_BUFFER_SIZE" "2000") (list "TORCH_NCCL_DUMP_ON_TIMEOUT" "1")) -}}
{{- else -}}
{{- $layers = concat $layers $torchDebug -}}
{{- end -}}
{{- end -}}
{{- range $name, $value := ($dist.nccl | default dict) }}{{ $layers = append $layers (list $name (toString $value)) }}{{ end -}}
{{- $layers = concat $layers (list (list "MGFT_DEVICE" (ternary "cuda" "cpu" $gpu)) (list "MGFT_JOB_NAME" (include "mgft.name" .)) (list "MGFT_BACKEND" "k8s")) -}}
{{- $order := list -}}
{{- $values := dict -}}
{{- range $layers -}}
{{- if not (hasKey $values (index . 0)) }}{{ $order = append $order (index . 0) }}{{ end -}}
{{- $_ := set $values (index . 0) (index . 1) -}}
{{- end -}}
{{- $base := list -}}
{{- range $order }}{{ $base = append $base (list . (index $values .)) }}{{ end -}}
{{- $env := list -}}
{{- $seen := dict -}}
{{- range $base -}}
{{- $name := index . 0 -}}
{{- $_ := set $seen $name true -}}
{{- $env = append $env (dict "name" $name "value" (replace "$" "$$" (toString (hasKey $user $name | ternary (index $user $name) (index . 1))))) -}}
{{- end -}}
{{- range $name, $value := $user -}}
{{- if not (hasKey $seen $name) -}}
{{- $env = append $env (dict "name" $name "value" (replace "$" "$$" (toString $value))) -}}
{{- end -}}
{{- end -}}
{{- with .Values.k8s.hf_token_secret -}}
{{- $env = append $env (include "mgft.secretRef" (dict "env" "HF_TOKEN" "ref" . "key" "token") | fromJson) -}}
{{- end -}}
{{- with .Values.k8s.wandb_secret -}}
{{- $env = append $env (include "mgft.secretRef" (dict "env" "WANDB_API_KEY" "ref" . "key" "api-key") | fromJson) -}}
{{- end -}}
{{- range $name, $ref := .Values.k8s.secret_env -}}
{{- $env = append $env (include "mgft.secretRef" (dict "env" $name "ref" $ref "key" "") | fromJson) -}}
{{- end -}}
{{- toJson $env -}}
{{- end -}}

{{- define "mgft.volumes" -}}
{{- $vols := list (dict "name" "dshm" "emptyDir" (dict "medium" "Memory" "sizeLimit" .Values.k8s.shm_size)) -}}
{{- with include "mgft.claim" . -}}
{{- $vols = append $vols (dict "name" "output" "persistentVolumeClaim" (dict "claimName" .)) -}}
{{- end -}}
{{- if .Values.k8s.config_map -}}
{{- $vols = append $vols (dict "name" "mgft-config" "configMap" (dict "name" (printf "%s-config" (include "mgft.name" .)))) -}}
{{- end -}}
{{- toJson $vols -}}
{{- end -}}

{{- define "mgft.mounts" -}}
{{- $mounts := list (dict "name" "dshm" "mountPath" "/dev/shm") -}}
{{- if include "mgft.claim" . -}}
{{- $mounts = append $mounts (dict "name" "output" "mountPath" .Values.k8s.mount_path) -}}
{{- end -}}
{{- if .Values.k8s.config_map -}}
{{- $mounts = append $mounts (dict "name" "mgft-config" "mountPath" "/etc/mgft" "readOnly" true) -}}
{{- end -}}
{{- toJson $mounts -}}
{{- end -}}

{{- define "mgft.restricted" -}}
{{- if eq .Values.k8s.pod_security "restricted" -}}true{{- end -}}
{{- end -}}

{{- define "mgft.containerSecurity" -}}
allowPrivilegeEscalation: false
capabilities:
  drop: [ALL]
{{- end -}}

{{/* Pod-level scheduling and security, shared by PyTorchJob pods and the TrainJob patch. */}}
{{- define "mgft.placement" -}}
{{- $pod := dict -}}
{{- with .Values.k8s.node_selector }}{{ $_ := set $pod "nodeSelector" . }}{{ end -}}
{{- if .Values.k8s.tolerations -}}
{{- $tols := list -}}
{{- range .Values.k8s.tolerations -}}
{{- $tol := dict "operator" (.operator | default "Equal") -}}
{{- with .key }}{{ $_ := set $tol "key" . }}{{ end -}}
{{- with .value }}{{ $_ := set $tol "value" . }}{{ end -}}
{{- with .effect }}{{ $_ := set $tol "effect" . }}{{ end -}}
{{- $tols = append $tols $tol -}}
{{- end -}}
{{- $_ := set $pod "tolerations" $tols -}}
{{- end -}}
{{- if .Values.k8s.image_pull_secrets -}}
{{- $secrets := list -}}
{{- range .Values.k8s.image_pull_secrets }}{{ $secrets = append $secrets (dict "name" .) }}{{ end -}}
{{- $_ := set $pod "imagePullSecrets" $secrets -}}
{{- end -}}
{{- if include "mgft.restricted" . -}}
{{- $_ := set $pod "securityContext" (dict "runAsNonRoot" true "runAsUser" 1000 "runAsGroup" 1000 "fsGroup" 1000 "seccompProfile" (dict "type" "RuntimeDefault")) -}}
{{- end -}}
{{- toJson $pod -}}
{{- end -}}

{{- define "mgft.podSpec" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $c := dict "name" .container "image" $v.image "command" (include "mgft.command" $root | fromJsonArray) "env" (include "mgft.env" $root | fromJsonArray) -}}
{{- if include "mgft.restricted" $root -}}
{{- $_ := set $c "securityContext" (include "mgft.containerSecurity" $root | fromYaml) -}}
{{- end -}}
{{- if gt (int $v.resources.gpus) 0 -}}
{{- $_ := set $c "resources" (dict "limits" (dict "nvidia.com/gpu" (int $v.resources.gpus))) -}}
{{- end -}}
{{- $_ := set $c "volumeMounts" (include "mgft.mounts" $root | fromJsonArray) -}}
{{- $pod := include "mgft.placement" $root | fromJson -}}
{{- $scheduler := $v.k8s.scheduler_name | default (ternary "volcano" "" (not (empty $v.k8s.volcano_queue))) -}}
{{- with $scheduler }}{{ $_ := set $pod "schedulerName" . }}{{ end -}}
{{- with $v.k8s.priority_class }}{{ $_ := set $pod "priorityClassName" . }}{{ end -}}
{{- $_ := set $pod "containers" (list $c) -}}
{{- $_ := set $pod "volumes" (include "mgft.volumes" $root | fromJsonArray) -}}
{{- toYaml $pod -}}
{{- end -}}
