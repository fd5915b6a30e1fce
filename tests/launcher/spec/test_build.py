from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from mgft.spec.build import build_spec, check_local_inputs, json_schema, load_yaml, merge
from mgft.spec.errors import SpecError
from mgft.spec.job import Backend, Strategy

BASE = {"train": {"model": "/m", "dataset": "/d.jsonl"}}


def test_precedence_file_then_flags_then_set() -> None:
    file_data = {"train": {"model": "/m", "dataset": "/d.jsonl", "lr": 0.1, "seq_len": 64},
                 "resources": {"gpus": 2}}
    raw = merge(file_data, {"train.lr": "0.01", "resources.gpus": "4", "backend": "slurm"},
                ["train.lr=0.001", "resources.nodes=3"])
    spec = build_spec(raw)
    assert spec.train.lr == 0.001  # --set beats the flag
    assert spec.resources.gpus == 4  # the flag beats the file
    assert spec.train.seq_len == 64  # the file beats the default
    assert spec.resources.nodes == 3
    assert file_data["train"]["lr"] == 0.1, "merge must not mutate its inputs"


def test_set_values_are_yaml_typed() -> None:
    spec = build_spec(merge(BASE, {}, ["resources.gpus=0", "train.max_steps=5",
                                       "slurm.partition=null", "train.strategy=zero3"]))
    assert spec.resources.gpus == 0 and spec.train.max_steps == 5
    assert spec.slurm.partition is None and spec.train.strategy is Strategy.ZERO3


@pytest.mark.parametrize("item,needle", [("novalue", "KEY=VALUE"),
                                         ("train.lr.x=1", "a value, not a section")])
def test_bad_set(item: str, needle: str) -> None:
    with pytest.raises(SpecError, match=needle):
        build_spec(merge({"train": {"model": "m", "dataset": "d", "lr": 0.1}}, {}, [item]))


def test_unknown_key_suggests_the_close_one() -> None:
    with pytest.raises(SpecError) as err:
        build_spec(merge(BASE, {}, ["resources.gpu=2"]))
    assert err.value.field == "resources.gpu" and "resources.gpus" in err.value.fix


def test_missing_required_names_the_flag() -> None:
    with pytest.raises(SpecError) as err:
        build_spec({"train": {"model": "/m"}})
    assert err.value.field == "--dataset" and "is required" in str(err.value)


def test_derived_fields() -> None:
    gpu = build_spec(merge(BASE, {"resources.gpus": 4}, []))
    assert gpu.nproc_per_node == 4 and gpu.world_size == 4
    mp = build_spec(merge(BASE, {"resources.gpus": 4, "train.strategy": "mp"}, []))
    assert mp.nproc_per_node == 1
    cpu = build_spec(merge(BASE, {"resources.gpus": 0}, []))
    assert cpu.nproc_per_node == 1 and cpu.on_cpu


def test_names_are_deterministic_and_follow_the_spec() -> None:
    a = build_spec(merge(BASE, {}, []))
    assert a.job_name == build_spec(merge(BASE, {}, [])).job_name
    assert a.job_name != build_spec(merge(BASE, {"train.lr": 1e-3}, [])).job_name
    assert a.job_name.startswith("mgft-m-")
    assert build_spec(merge(BASE, {"name": "mine"}, [])).job_name == "mine"


def test_yaml_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({**BASE, "backend": "k8s", "image": "r/i:t",
                                    "k8s": {"api": "trainjob"}}))
    spec = build_spec(merge(load_yaml(path), {}, []))
    assert spec.backend is Backend.K8S and spec.k8s.api.value == "trainjob"


@pytest.mark.parametrize("text,needle", [("a: [", "not valid YAML"), ("- 1\n- 2", "mapping")])
def test_bad_yaml_file(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=needle):
        load_yaml(path)


def test_a_config_that_is_not_utf8_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_bytes(b"train:\n  model: caf\xe9\n")  # Latin-1, as an old editor saves it
    proc = subprocess.run([sys.executable, "-m", "mgft.cli", "render", "--config", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (f"mgft: error: --config {path}: not UTF-8 text (invalid "
                           "continuation byte at byte 19); save the file as UTF-8\n")


def test_missing_yaml_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="--config"):
        load_yaml(tmp_path / "nope.yaml")


def test_schema_accepts_a_real_config_and_rejects_typos() -> None:
    schema = json_schema()
    jsonschema.validate({**BASE, "resources": {"gpus": 2}, "k8s": {"api": "trainjob"}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**BASE, "train": {**BASE["train"], "strategy": "zero4"}}, schema)
    # Every field carries a description: it is the --help text too.
    train = schema["$defs"]["TrainSpec"]["properties"]
    assert all(prop.get("description") for prop in train.values())


def test_local_inputs_must_exist(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    data = tmp_path / "data.jsonl"
    spec = build_spec(merge({}, {"train.model": str(tmp_path / "model"),
                                 "train.dataset": str(data)}, []))
    with pytest.raises(SpecError) as err:
        check_local_inputs(spec)
    assert err.value.field == "--dataset" and err.value.value == str(data)
    data.write_text("{}\n")
    check_local_inputs(spec)


def test_env_items_and_flag_paths_serve_submit_and_generate() -> None:
    from mgft.generate.launch import build_generate_spec
    from mgft.spec.build import flag_paths, parse_env_items
    from mgft.spec.flags import FLAGS

    assert parse_env_items(["A=1", "URL=http://h/?x=y", "EMPTY="]) == {
        "env.A": "1", "env.URL": "http://h/?x=y", "env.EMPTY": ""}
    with pytest.raises(SpecError, match="--env NOEQUALS: is not KEY=VALUE"):
        parse_env_items(["NOEQUALS"])
    assert flag_paths({"micro_batch": 8, "seq_len": None}, FLAGS) == {"train.micro_batch": 8}
    # mgft generate reads --env and its own flag table through the same two helpers
    gen = build_generate_spec(config_file=None, overrides=(), env_items=("HF_HOME=/c",),
                              note=[].append, model="/models/llama", prompts="/data/p.jsonl",
                              output="/runs/gen", backend="slurm", gpus="4")
    assert gen.env["HF_HOME"] == "/c" and gen.resources.gpus == 4
    assert gen.generate is not None and gen.train.dataset == "/data/p.jsonl"
    with pytest.raises(SpecError, match="--env NOEQUALS: is not KEY=VALUE"):
        build_generate_spec(config_file=None, overrides=(), env_items=("NOEQUALS",),
                            note=[].append, model="/m", prompts="/p.jsonl", output="/o")


def test_yaml_scalars_for_string_fields_are_the_text_typed(tmp_path: Path) -> None:
    # YAML 1.1 reads 12:00:00 as 43200 (base 60), 0123 as 83 (octal), 2024-01-02 as a date.
    path = tmp_path / "job.yaml"
    path.write_text("train: {model: /m, dataset: /d.jsonl, output: 2024-01-02, lr: 1.0e-4}\n"
                    "backend: slurm\nslurm: {time: 12:00:00, account: 0123, qos: yes}\n"
                    "env: {SEED: 7}\nresources: {gpus: 0x2}\n")
    spec = build_spec(merge(load_yaml(path), {}, []))
    assert (spec.slurm.time, spec.slurm.account, spec.slurm.qos) == ("12:00:00", "0123", "yes")
    assert spec.train.output == "2024-01-02" and spec.env == {"SEED": "7"}
    assert spec.train.lr == 1e-4 and spec.resources.gpus == 2  # other fields keep YAML's types


@pytest.mark.parametrize("item,path,text", [("slurm.time=30", "slurm.time", "30"),
                                            ("slurm.account=12345", "slurm.account", "12345"),
                                            ("train.output=2024", "train.output", "2024"),
                                            ("slurm.time=1:30:00", "slurm.time", "1:30:00")])
def test_set_scalars_for_string_fields_are_the_text_typed(item: str, path: str,
                                                          text: str) -> None:
    spec = build_spec(merge(BASE | {"backend": "slurm"}, {}, [item]))
    section, leaf = path.split(".")
    assert getattr(getattr(spec, section), leaf) == text


def test_accepted_values_keep_their_spelling() -> None:
    raw = BASE | {"backend": "k8s", "image": "r/i", "k8s": {"tolerations": [{"operator": "Maybe"}]}}
    with pytest.raises(SpecError) as err:
        build_spec(raw)
    assert "'Equal' or 'Exists'" in err.value.problem, err.value.problem
    raw["k8s"] = {"tolerations": [{"operator": "Exists"}]}
    assert build_spec(raw).k8s.tolerations[0].operator == "Exists"


def test_missing_train_section_names_every_required_flag() -> None:
    with pytest.raises(SpecError) as err:
        build_spec({})
    assert str(err.value) == ("--model and --dataset are required; pass them (or set "
                              "train.model and train.dataset in the YAML file)")
