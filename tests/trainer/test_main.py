from __future__ import annotations

import json
import math

import pytest
from mgft_train.main import main

from tests.trainer.cases import STEPS, flags


def argv(tiny, output, *extra: str) -> list[str]:
    return [f"--model={tiny.model_dir}", f"--dataset={tiny.data}", f"--output={output}", *extra]


def test_sharded_strategy_without_torchrun_exits_2_with_one_line(tiny, tmp_path, capsys,
                                                                  single_process_env):
    out = tmp_path / "out"
    assert main(argv(tiny, out, "--strategy=zero2")) == 2
    captured = capsys.readouterr()
    assert captured.err == ("mgft-train: --strategy zero2: needs a process group, and this "
                            "process was not started by torchrun; start it with torchrun (as "
                            "`mgft submit` does), or use --strategy ddp for a single process\n")
    assert captured.out == ""
    assert not out.exists()


def test_a_bad_lora_target_found_after_loading_exits_2_with_one_line(tiny, tmp_path, capsys,
                                                                     single_process_env):
    assert main(argv(tiny, tmp_path / "out", "--lora-targets=attn_proj", "--max-steps=1")) == 2
    err = capsys.readouterr().err
    assert err.startswith("mgft-train: --lora-targets attn_proj: ") and err.count("\n") == 1


def test_output_holding_results_exits_2(tiny, tmp_path, capsys, single_process_env):
    (tmp_path / "metrics.json").write_text("{}")
    assert main(argv(tiny, tmp_path)) == 2
    assert "--output" in capsys.readouterr().err
    assert (tmp_path / "metrics.json").read_text() == "{}"


def test_a_rank_other_than_0_also_says_why_it_exits_2(tiny, tmp_path, capsys,
                                                      single_process_env, monkeypatch):
    """torchrun may stop rank 0 before it prints, when another rank exits first."""
    (tmp_path / "metrics.json").write_text("{}")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(argv(tiny, tmp_path)) == 2  # found before any process group is joined
    assert capsys.readouterr().err.startswith(f"mgft-train: rank 1: --output {tmp_path}: ")


def test_bad_dataset_row_exits_2_naming_the_line(tiny, tmp_path, capsys, single_process_env):
    data = tmp_path / "d.jsonl"
    data.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "a"}\n')
    args = [f"--model={tiny.model_dir}", f"--dataset={data}", f"--output={tmp_path / 'o'}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mgft-train: --dataset {data}:2: missing key 'output'")
    assert err.count("\n") == 1


@pytest.mark.parametrize("extra,line", [
    (("--eval-split=0.001",), "--eval-split 0.001: holds out no row: "),
    (("--eval-split=0.999",), "--eval-split 0.999: holds out all 256 rows of "),
    (("--eval-split=0.1", "--eval-dataset=e.jsonl"),
     "--eval-split 0.1: --eval-dataset e.jsonl already names the eval set; "),
    (("--eval-every=5",), "--eval-every 5: there is no eval set to evaluate on; "),
])
def test_an_eval_set_that_cannot_be_exits_2_with_one_line(tiny, tmp_path, capsys, extra, line,
                                                          single_process_env):
    assert main(argv(tiny, tmp_path / "out", *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mgft-train: {line}") and err.count("\n") == 1, err


def test_single_process_run_trains_without_a_group(tiny, tmp_path, capsys, single_process_env):
    out = tmp_path / "out"
    assert main(argv(tiny, out, "--max-steps=3", "--seq-len=64", "--lr=3e-3")) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert (report["world_size"], report["backend"], report["strategy"]) == (1, "none", "single")
    assert report["model_wrapper"] == "PeftModelForCausalLM"
    assert report["steps"] == len(report["losses"]) == 3
    assert 0 < report["trainable_params"] < report["total_params"]
    # No eval set: no loss measured on training rows goes by an eval name.
    assert report["eval"] is None and [k for k in report if k.startswith("eval")] == ["eval"]
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "checkpoints", "data-cache",
                                                     "loss.png", "metrics.json", "tensorboard"]
    assert f"saved: adapter {out / 'adapter'}" in capsys.readouterr().out


@pytest.mark.parametrize(("save", "written"), [
    ("final", ["adapter", "data-cache", "loss.png", "metrics.json", "tensorboard"]),
    ("none", ["data-cache", "loss.png", "metrics.json", "tensorboard"])])
def test_save_final_skips_checkpoints_and_none_skips_the_adapter_too(tiny, tmp_path, save,
                                                                     written, single_process_env):
    out = tmp_path / "out"
    assert main(argv(tiny, out, "--max-steps=2", "--seq-len=64", f"--save={save}",
                     "--save-every=1")) == 0
    assert sorted(p.name for p in out.iterdir()) == written
    assert json.loads((out / "metrics.json").read_text())["steps"] == 2


def test_random_init_trains_from_a_config_only_directory(tiny, tmp_path, single_process_env):
    from transformers import AutoConfig, AutoTokenizer

    model_dir = tmp_path / "config-only"
    AutoConfig.from_pretrained(tiny.model_dir).save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(tiny.model_dir).save_pretrained(model_dir)
    args = [f"--model={model_dir}", f"--dataset={tiny.data}", f"--output={tmp_path / 'o'}",
            "--max-steps=2", "--seq-len=64"]
    assert main(args) == 2  # no weights: refused, naming --random-init
    assert main([*args, "--random-init=true"]) == 0
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["steps"] == 2


@pytest.fixture(scope="module")
def ddp_run(trainer_job):
    """The shared 2-rank DDP job on CPU/gloo; several tests read its results."""
    job = trainer_job(*flags("ddp"))
    return job.out, job.output, job.metrics


@pytest.mark.e2e
def test_two_ranks_really_ran_ddp_over_gloo_and_learned(ddp_run, tokenizer):
    _, stdout, report = ddp_run
    assert report["world_size"] == 2
    assert report["backend"] == "gloo"
    assert report["strategy"] == "ddp"
    assert report["model_wrapper"] == "DistributedDataParallel"
    assert report["steps"] == len(report["losses"]) == STEPS
    # Uniform guessing over the vocabulary scores ln(V); learning means going clearly below it.
    uniform = math.log(len(tokenizer))
    assert report["last_loss"] < report["first_loss"] - 1.0
    assert report["last_loss"] < uniform - 0.5
    lines = stdout.splitlines()
    assert sum(line.startswith("step ") for line in lines) == STEPS  # rank 0 only
    summary = [i for i, line in enumerate(lines) if line.startswith("mgft-train: ")]
    assert len(summary) == 1
    tokens, memory = lines[summary[0] + 1], lines[summary[0] + 2]
    assert tokens.startswith(f"  tokens {report['tokens']} in ")
    assert memory.startswith("  peak memory: rank 0 cpu ") and ", rank 1 cpu " in memory


@pytest.mark.e2e
def test_two_ranks_counted_every_real_token_of_both_shards(ddp_run, tiny, tokenizer):
    from mgft_train.data import encode, load_rows, make_loader, real_tokens

    _, _, report = ddp_run
    examples = encode(load_rows(tiny.data), tokenizer, seq_len=64)
    expected = 0
    for rank in (0, 1):
        loader = make_loader(examples, micro_batch=4, pad_id=tokenizer.pad_token_id, rank=rank,
                             world_size=2, seed=0)
        assert len(loader) >= STEPS  # one epoch covers the run: no reshuffle to replay
        expected += sum(real_tokens(b) for _, b in zip(range(STEPS), loader, strict=False))
    assert report["tokens"] == expected
    assert report["tokens_per_s"] == pytest.approx(report["tokens"] / report["elapsed_s"])


@pytest.mark.e2e
def test_first_loss_is_the_token_mean_over_both_ranks(ddp_run, tiny, tokenizer):
    """Before step 1 every lora_B is zero, so the model is the base model: its loss on the two
    ranks' first micro-batches, pooled over all their tokens, is what step 1 must log."""
    import torch
    from mgft_train.data import encode, label_tokens, load_rows, make_loader
    from mgft_train.loop import loss_sum
    from transformers import AutoModelForCausalLM

    _, _, report = ddp_run
    base = AutoModelForCausalLM.from_pretrained(tiny.model_dir, local_files_only=True).eval()
    examples = encode(load_rows(tiny.data), tokenizer, seq_len=64)
    total, count = 0.0, 0
    for rank in (0, 1):
        loader = make_loader(examples, micro_batch=4, pad_id=tokenizer.pad_token_id, rank=rank,
                             world_size=2, seed=0)
        first = next(iter(loader))
        with torch.no_grad():
            total += loss_sum(base, first).item()
        count += label_tokens(first)
    assert report["first_loss"] == pytest.approx(total / count, rel=1e-4)


@pytest.mark.e2e
def test_saved_adapter_reloads_and_holds_the_trained_weights(ddp_run, tiny, tokenizer):
    import torch
    from mgft_train.data import collate, encode, label_tokens, load_rows
    from mgft_train.loop import loss_sum
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out, _, _ = ddp_run
    batch = collate(encode(load_rows(tiny.data)[:32], tokenizer, seq_len=64),
                    pad_id=tokenizer.pad_token_id)

    def mean_loss(model) -> float:
        with torch.no_grad():
            return loss_sum(model.eval(), batch).item() / label_tokens(batch)

    base = AutoModelForCausalLM.from_pretrained(tiny.model_dir, local_files_only=True)
    base_loss = mean_loss(base)
    tuned = PeftModel.from_pretrained(base, out / "adapter")
    lora_b = {n: p for n, p in tuned.named_parameters() if "lora_B" in n}
    assert len(lora_b) == 2 * 7  # 2 layers x q k v o gate up down
    # peft initialises every lora_B to zero, so any non-zero one was trained.
    assert all(p.abs().max() > 0 for p in lora_b.values())
    assert mean_loss(tuned) < base_loss - 0.5
