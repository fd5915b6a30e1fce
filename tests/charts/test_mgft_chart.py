"""charts/mgft with the real helm binary: `helm lint --strict`, values.schema.json enforcement,
and, for the same job file, the same objects as `mgft render --backend k8s`."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from mgft.render import render
from mgft.spec.build import build_spec, json_schema
from mgft.spec.job import DistSpec, K8sSpec, PlanSpec, Resources, SlurmSpec, TrainSpec
from pydantic import TypeAdapter

from tests.conftest import REPO
from tests.launcher.render import cases
from tests.tools import tool

CHART = REPO / "charts" / "mgft"
RELEASE = "rel"
# The only differences allowed between the chart and `mgft render`, both by design: Helm
# manages the chart's objects, and `helm uninstall` must keep a claim with outputs.
HELM_ONLY = {("labels", "app.kubernetes.io/managed-by"), ("annotations", "helm.sh/resource-policy")}

NASTY = "a'b\"c $(touch x) `id` $$HOME\nkey: v\n- x #c \\ 😀 é \u2028 &anchor *alias !!tag"
README = {"image": cases.IMAGE, "name": "llama-ft",
          "train": {"model": "/models/llama", "dataset": "/data/train.jsonl",
                    "strategy": "zero2"},
          "resources": {"gpus": 4, "nodes": 2}}
JOB_FILES: dict[str, dict[str, Any]] = {
    "readme": README,
    "readme-trainjob": README | {"k8s": {"api": "trainjob"}},
    "cpu-floats-env": {
        "image": "mgft:cpu", "name": "cpu-job", "env": {"Z_LAST": "$(HOME) $$", "A": "x y",
                                                        "OMP_NUM_THREADS": "2"},
        "train": {"model": "/m", "dataset": "/d.jsonl", "lr": 3e-05, "epochs": 2,
                  "lora_alpha": 16, "lora_dropout": 0.1, "max_steps": 1000000},
        "resources": {"gpus": 0, "nodes": 3, "nproc_per_node": 2},
        "k8s": {"namespace": "ml-team", "master_wait": 30}},
    "mp-single-node": {"image": "i:1", "name": "mp", "train": {"model": "/m", "dataset": "/d",
                                                              "strategy": "mp",
                                                              "lr": 0.0001},
                       "resources": {"gpus": 2}},
    "no-name": {"image": "i:1", "train": {"model": "/m", "dataset": "/d"}},
    # Free text both tools must carry through unchanged: YAML and shell specials, `$(...)`.
    "hostile-text": {"image": "i:1", "name": "hostile",
                     "train": {"model": NASTY, "dataset": "-x: {a, b} #c", "output": "o u\tt"},
                     "env": {"NASTY": NASTY, "EMPTY": "", "YAMLISH": "null"},
                     "k8s": {"config_map": True}},
    # Every layer of the NCCL environment: preset, --debug-dist, --nccl (unsorted), preflight.
    "dist-gpu": README | {"dist": {"fabric": "infiniband", "debug": True, "preflight": True,
                                   "nccl": {"NCCL_SOCKET_IFNAME": "ib0", "NCCL_DEBUG": "TRACE"}},
                          "train": README["train"] | {"packing": False, "chat_template": "chatml",
                                                      "data_format": "messages"}},
    "dist-cpu": {"image": "i:1", "name": "cpu-dbg", "train": {"model": "/m", "dataset": "/d"},
                 "resources": {"gpus": 0}, "dist": {"debug": True, "timeout": 90}},
    # The optional eval flags: written only when set, the fraction as Python writes it.
    "eval-split": {"image": "i:1", "name": "ev", "train": {"model": "/m", "dataset": "/d",
                                                           "eval_split": 0.05,
                                                           "eval_every": 200}},
    "eval-dataset": {"image": "i:1", "name": "ev", "train": {"model": "/m", "dataset": "/d",
                                                             "eval_dataset": "/e $(x).jsonl"}},
    **{f"{api}-{name}": TypeAdapter(type(s)).dump_python(s, mode="json")
       for api in ("pytorchjob", "trainjob")
       for name, s in cases.k8s_options(api).items()},
}


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([tool("helm"), *args], capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def helm_template(values: dict[str, Any], tmp_path: Path, namespace: str,
                  check: bool = True) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return helm("template", RELEASE, str(CHART), "-f", str(path), "--namespace", namespace,
                "--kube-version", "1.33.0", check=check)


def trainer_spec(command: list[str]) -> Any:
    """The TrainSpec a container's command hands the trainer (after `-- -m mgft_train`), with
    the kubelet's `$$` undone: floats may be written differently by Go and Python, and what
    must agree is what the trainer parses."""
    from mgft.contract.argv import parse_train

    tail = command[command.index("mgft_train") + 1:]
    return parse_train([word.replace("$$", "$") for word in tail])


def normalized(doc: dict[str, Any]) -> dict[str, Any]:
    def strip(node: Any) -> Any:
        if isinstance(node, list) and "mgft_train" in node:
            at = node.index("mgft_train")
            return [*node[:at + 1], trainer_spec(node)]
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items()
                    if not any(k == key for _, key in HELM_ONLY)
                    and not (isinstance(v, dict) and not v and k == "annotations")}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    out = strip(doc)
    meta = out.get("metadata", {})
    if meta.get("annotations") == {}:
        del meta["annotations"]
    return out


def by_kind(text: str) -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(text) if d]
    out = {d["kind"]: d for d in docs}
    assert len(out) == len(docs), "one object of each kind"
    return out


@pytest.mark.parametrize("case", JOB_FILES)
def test_chart_renders_what_mgft_renders(case: str, tmp_path: Path) -> None:
    job_file = JOB_FILES[case]
    spec_input = job_file | {"backend": "k8s"}
    if "name" not in job_file:
        spec_input = spec_input | {"name": RELEASE}  # the chart names the job after the release
    spec = build_spec(spec_input)
    ours = by_kind(render(spec))
    theirs = by_kind(helm_template(job_file, tmp_path, spec.k8s.namespace).stdout)
    assert set(theirs) == set(ours)
    managed = {d["metadata"]["labels"]["app.kubernetes.io/managed-by"] for d in theirs.values()}
    assert managed == {"Helm"}
    for kind, doc in ours.items():
        if kind == "ConfigMap":
            # Same job, written by each tool's own YAML emitter: compare what it means.
            mine, chart = doc["data"]["job.yaml"], theirs[kind]["data"]["job.yaml"]
            assert build_spec(yaml.safe_load(chart)) == build_spec(yaml.safe_load(mine))
            assert normalized(theirs[kind])["metadata"] == normalized(doc)["metadata"]
            continue
        assert normalized(theirs[kind]) == normalized(doc), kind
    if "PersistentVolumeClaim" in theirs:
        annotations = theirs["PersistentVolumeClaim"]["metadata"]["annotations"]
        assert annotations == {"helm.sh/resource-policy": "keep"}


@pytest.mark.parametrize("values", sorted((CHART / "ci").glob("*.yaml")), ids=lambda p: p.stem)
def test_lint_strict_and_template(values: Path) -> None:
    lint = helm("lint", "--strict", str(CHART), "-f", str(values))
    assert "1 chart(s) linted, 0 chart(s) failed" in lint.stdout
    out = helm("template", RELEASE, str(CHART), "-f", str(values), "--kube-version", "1.33.0")
    job = [d for d in yaml.safe_load_all(out.stdout) if d][-1]
    assert job["kind"] in ("PyTorchJob", "TrainJob")
    # Every values file the chart ships is a valid mgft job file, too.
    build_spec(yaml.safe_load(values.read_text()) | {"backend": "k8s"})


def test_notes_say_how_to_follow_the_job(tmp_path: Path) -> None:
    path = tmp_path / "v.yaml"
    path.write_text(yaml.safe_dump(README | {"k8s": {"pvc_size": "10Gi"}}))
    out = helm("install", RELEASE, str(CHART), "-f", str(path), "--dry-run=client",
               "--namespace", "ml").stdout
    notes = out.split("NOTES:", 1)[1]
    assert "mgft logs -f llama-ft --backend k8s --namespace ml" in notes
    assert "kubectl get pytorchjob llama-ft -n ml" in notes
    assert "claim llama-ft-output" in notes and "helm uninstall rel -n ml" in notes


@pytest.mark.parametrize("values,needle", [
    ({"train": {"model": "/m", "dataset": "/d", "lr": 2}, "image": "i"}, "/train/lr"),
    ({"train": {"model": "/m", "dataset": "/d", "stratgy": "ddp"}, "image": "i"}, "stratgy"),
    ({"train": {"model": "/m", "dataset": "/d"}, "resources": {"gpus": -1}, "image": "i"},
     "/resources/gpus"),
    ({"train": {"model": "", "dataset": "/d"}, "image": "i"}, "/train/model"),
    ({"train": {"model": "/m", "dataset": "/d"}}, "image: required"),
    ({"train": {"model": "/m", "dataset": "/d"}, "image": "i", "name": "Bad_Name"},
     'name "Bad_Name": not a DNS-1035 label'),
    ({"train": {"model": "/m", "dataset": "/d"}, "image": "i", "backend": "slurm"},
     "this chart runs Kubernetes jobs"),
    ({"train": {"model": "/m", "dataset": "/d"}, "image": "i",
      "k8s": {"api": "trainjob", "volcano_queue": "q"}}, "need api: pytorchjob"),
    ({"train": {"model": "/m", "dataset": "/d", "strategy": "auto"}, "image": "i"},
     "run `mgft plan`"),
    ({"train": {"model": "/m", "dataset": "/d", "strategy": "zero2", "precision": "bf16-kahan"},
      "image": "i"}, 'train.precision "bf16-kahan": strategy zero2 steps DeepSpeed'),
    ({"train": {"model": "/m", "dataset": "/d"}, "image": "i", "generate": {"top_p": 0.9}},
     "mgft generate --backend k8s"),
    ({"train": {"model": "/m", "dataset": "/d", "eval_dataset": "/e", "eval_split": 0.1},
      "image": "i"}, "train.eval_split: train.eval_dataset already names the eval set"),
    ({"train": {"model": "/m", "dataset": "/d", "eval_every": 10}, "image": "i"},
     "train.eval_every: there is no eval set to evaluate on"),
])
def test_bad_values_are_refused(values: dict, needle: str, tmp_path: Path) -> None:
    proc = helm_template(values, tmp_path, "default", check=False)
    assert proc.returncode != 0 and needle in proc.stderr, proc.stderr


def test_values_schema_is_the_mgft_job_schema(request: pytest.FixtureRequest) -> None:
    expected = {"$schema": "https://json-schema.org/draft/2020-12/schema", **json_schema()}
    path = CHART / "values.schema.json"
    if request.config.getoption("--update-golden"):
        path.write_text(json.dumps(expected, indent=2) + "\n")
    assert json.loads(path.read_text()) == expected, (
        "values.schema.json is out of date: run `make golden` and review the diff")


def test_generated_helpers_are_current(request: pytest.FixtureRequest) -> None:
    from mgft.render.chart import generated_helpers

    path = CHART / "templates" / "_generated.tpl"
    if request.config.getoption("--update-golden"):
        path.write_text(generated_helpers())
    assert path.read_text() == generated_helpers(), (
        "charts/mgft/templates/_generated.tpl is out of date: run `make golden` and review "
        "the diff")


def test_every_train_field_reaches_the_trainer_from_the_chart(tmp_path: Path) -> None:
    """Each TrainSpec field set to a value other than its default, through helm: the trainer
    parses back exactly what the job file says (so a field added to TrainSpec cannot be
    missed by the chart). Two value sets: compiled blocks run under ddp only."""
    train = {"model": "/m", "dataset": "/d e.jsonl", "output": "out $(x)", "strategy": "fsdp",
             "tuning": "qlora", "max_steps": 1000000, "epochs": 2.5, "lr": 1e-05,
             "micro_batch": 3, "grad_accum": 7, "seq_len": 333, "seed": 11, "lora_r": 4,
             "lora_alpha": 8.5, "lora_dropout": 0.0, "data_format": "messages",
             "chat_template": "chatml", "train_on_prompt": True, "packing": False,
             "overlong": "drop", "eval_split": 0.125, "eval_every": 9, "kernels": "none",
             "activation_checkpointing": True, "lora_dropout_recompute": True,
             "precision": "bf16", "lora_targets": "q_proj",
             "save": "final", "save_every": 5, "keep_checkpoints": 1, "save_merged": True,
             "random_init": True, "report_to": ["wandb", "mlflow"],
             "data_cache": "/shared/data cache"}
    value_sets = [train, train | {"strategy": "ddp", "compile": "blocks"}]
    specs = [build_spec({"backend": "k8s", "image": "i:1", "train": t, "name": "every"})
             for t in value_sets]
    defaults = TrainSpec(model="", dataset="")
    unchanged = [f.name for f in dataclasses.fields(TrainSpec)
                 if f.name not in ("model", "dataset", "eval_dataset")
                 and all(getattr(spec.train, f.name) == getattr(defaults, f.name)
                         for spec in specs)]
    assert unchanged == [], "give these fields a non-default value in this test"
    for values_train, spec in zip(value_sets, specs, strict=True):
        values = {"image": "i:1", "name": "every", "train": values_train}
        doc = by_kind(helm_template(values, tmp_path, "default").stdout)["PyTorchJob"]
        command = doc["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"][
            "containers"][0]["command"]
        assert trainer_spec(command) == spec.train


def test_values_defaults_are_mgft_defaults() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def defaults(cls: type, **required: Any) -> dict[str, Any]:
        return TypeAdapter(cls).dump_python(cls(**required), mode="json")

    assert values["train"] == defaults(TrainSpec, model="", dataset="")
    assert values["resources"] == defaults(Resources)
    assert values["slurm"] == defaults(SlurmSpec)
    assert values["dist"] == defaults(DistSpec)
    assert values["plan"] == defaults(PlanSpec) and values["generate"] is None
    k8s_defaults = defaults(K8sSpec) | {"namespace": ""}  # "": the release namespace
    assert values["k8s"] == k8s_defaults
    assert set(values) == {f.name for f in dataclasses.fields(
        build_spec({"train": {"model": "m", "dataset": "d"}}))}


def test_chart_fabric_presets_are_mgft_presets(tmp_path: Path) -> None:
    """The chart carries fabric.PRESETS as data; render each preset and compare the env."""
    from mgft.comm.fabric import PRESETS

    for fabric, preset in PRESETS.items():
        values = README | {"dist": {"fabric": fabric.value}}
        doc = by_kind(helm_template(values, tmp_path, "default").stdout)["PyTorchJob"]
        container = doc["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"][
            "containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert {v.name: env.get(v.name) for v in preset.static} == {
            v.name: v.value for v in preset.static}, fabric
