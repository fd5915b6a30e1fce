"""Generation end to end on CPU: 2 real torchrun processes through `mgft generate`, checked
against a single process; resume after a crash; sampling; chat templates; bad input."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mgft_train.generate.main import main

from tests.conftest import Tiny

N = 13
COMMON = ["--max-new-tokens=10", "--batch-size=4"]


@pytest.fixture(scope="module")
def prompt_file(tiny: Tiny, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Plain and alpaca rows of unequal lengths, with a key of the user's own."""
    rows = [json.loads(line) for line in tiny.data.read_text().splitlines()[:N]]
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    with open(path, "w") as f:
        for i, r in enumerate(rows):
            row = ({"prompt": f"{r['instruction']} {r['input']}"} if i % 3 == 0 else
                   {"instruction": r["instruction"], "input": r["input"]})
            f.write(json.dumps(row | {"id": f"q{i}"}) + "\n")
    return path


def args(tiny: Tiny, prompts: Path, output: Path, *extra: str) -> list[str]:
    return [f"--model={tiny.model_dir}", f"--prompts={prompts}", f"--output={output}",
            *COMMON, *extra]


def results(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "generations.jsonl").read_text().splitlines()]


def metrics(output: Path) -> dict:
    return json.loads((output / "generation_metrics.json").read_text())


def run_two(tiny: Tiny, prompts: Path, output: Path, cpu_job_env) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mgft.cli", "generate", "--backend", "local", "--gpus", "0",
           "--nproc-per-node", "2", "--model", str(tiny.model_dir), "--prompts", str(prompts),
           "--output", str(output), "--max-new-tokens", "10", "--batch-size", "4"]
    return subprocess.run(cmd, env=cpu_job_env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def one_process(tiny, prompt_file, tmp_path_factory) -> Path:
    import os

    from mgft.contract.env import DIST_VARS, MGFT_DEVICE

    out = tmp_path_factory.mktemp("one") / "out"
    saved = {k: os.environ.pop(k) for k in DIST_VARS if k in os.environ}
    os.environ[MGFT_DEVICE] = "cpu"
    try:
        assert main(args(tiny, prompt_file, out)) == 0
    finally:
        os.environ.update(saved)
    return out


@pytest.fixture(scope="module")
def two_processes(tiny, prompt_file, tmp_path_factory, cpu_job_env) -> Path:
    out = tmp_path_factory.mktemp("two") / "out"
    proc = run_two(tiny, prompt_file, out, cpu_job_env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


@pytest.mark.e2e
def test_two_processes_are_complete_in_order_and_equal_one_greedy_process(
        two_processes: Path, one_process: Path, prompt_file: Path) -> None:
    two, one = results(two_processes), results(one_process)
    inputs = [json.loads(line) for line in prompt_file.read_text().splitlines()]
    assert [r["index"] for r in two] == list(range(N))
    assert [r["input"] for r in two] == inputs
    assert all(r["completion_tokens"] > 0 for r in two)
    assert two == one
    report = metrics(two_processes)
    assert (report["world_size"], report["backend"], report["device"]) == (2, "gloo", "cpu")
    assert (report["generated_now"], report["already_done"]) == (N, 0)
    # Sharded by index: rank r did every prompt i with i % 2 == r.
    for rank in (0, 1):
        shard = two_processes / "shards" / f"rank-{rank:05d}.jsonl"
        done = sorted(json.loads(line)["index"] for line in shard.read_text().splitlines())
        assert done == list(range(rank, N, 2))
    # Each rank timed every one of its batches of 4 (the first pays the warm-up).
    by_rank = {r["rank"]: r for r in report["ranks"]}
    for rank in (0, 1):
        assert len(by_rank[rank]["batch_s"]) == -(-len(range(rank, N, 2)) // 4)
        assert all(t > 0 for t in by_rank[rank]["batch_s"])
        assert sum(by_rank[rank]["batch_s"]) <= by_rank[rank]["generate_s"]


@pytest.mark.e2e
def test_resume_skips_what_is_done_and_completes_the_rest(
        two_processes: Path, tiny, prompt_file, tmp_path, cpu_job_env) -> None:
    out = tmp_path / "out"
    shutil.copytree(two_processes, out)
    (out / "generations.jsonl").unlink()
    first_run = metrics(out)
    original = {r["index"]: r for r in results(two_processes)}
    # As a crash leaves it: rank 0 got through 3 of its 7 prompts, the last line torn;
    # rank 1 finished. A kept result is marked to prove it is reused, not redone.
    shard0 = out / "shards" / "rank-00000.jsonl"
    kept = shard0.read_text().splitlines()[:3]
    marked = json.loads(kept[0]) | {"completion": "SENTINEL"}
    shard0.write_text("\n".join([json.dumps(marked), *kept[1:]]) + "\n" + kept[1][:17])
    proc = run_two(tiny, prompt_file, out, cpu_job_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = metrics(out)
    assert (report["already_done"], report["generated_now"]) == (3 + 6, 4)
    assert report["earlier_runs"] == [first_run]  # the first run's figures are kept
    merged = results(out)
    assert [r["index"] for r in merged] == list(range(N))
    assert merged[marked["index"]]["completion"] == "SENTINEL"
    assert {r["index"]: r for r in merged if r["index"] != marked["index"]} == {
        i: r for i, r in original.items() if i != marked["index"]}


def test_a_finished_job_rerun_loads_no_model_and_keeps_its_files(
        one_process: Path, tiny, prompt_file, tmp_path, capsys, monkeypatch,
        single_process_env) -> None:
    from mgft_train.generate import decode

    out = tmp_path / "out"
    shutil.copytree(one_process, out)
    before = {p.name: p.read_bytes() for p in out.glob("*.json*")}
    monkeypatch.setattr(decode, "load_model", lambda *a: pytest.fail("loaded a model"))
    assert main(args(tiny, prompt_file, out)) == 0
    assert f"all {N} prompts already done; nothing to generate" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in out.glob("*.json*")} == before
    # Every shard complete, the merge cut short: the rerun only merges.
    (out / "generations.jsonl").unlink()
    assert main(args(tiny, prompt_file, out)) == 0
    assert (out / "generations.jsonl").read_bytes() == before["generations.jsonl"]


def test_other_settings_on_resume_exit_2_and_touch_nothing(
        one_process: Path, tiny, prompt_file, capsys, single_process_env) -> None:
    before = (one_process / "generations.jsonl").read_bytes()
    assert main(args(tiny, prompt_file, one_process, "--temperature=0.9")) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mgft-generate: --output {one_process}: holds generations made "
                          "with other settings (temperature 0.0 then, 0.9 now)")
    assert err.count("\n") == 1
    assert (one_process / "generations.jsonl").read_bytes() == before


def test_sampling_follows_the_seed_and_top_p(one_process: Path, tiny, prompt_file, tmp_path,
                                            single_process_env) -> None:
    def sample(name: str, *extra: str) -> list[str]:
        assert main(args(tiny, prompt_file, tmp_path / name, "--temperature=1.0", *extra)) == 0
        return [r["completion"] for r in results(tmp_path / name)]

    first, again, other = sample("a", "--seed=5"), sample("b", "--seed=5"), sample("c", "--seed=6")
    greedy = [r["completion"] for r in results(one_process)]
    assert first == again and first != other and first != greedy
    # A nucleus that holds only the most likely token is greedy decoding.
    assert sample("d", "--seed=5", "--top-p=1e-9") == greedy


def test_chat_template_renders_messages_and_plain_prompts(tiny, tmp_path, single_process_env
                                                          ) -> None:
    from transformers import AutoTokenizer

    model = tmp_path / "chat-model"
    shutil.copytree(tiny.model_dir, model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["chat_template"] = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}</s>"
                               "{% endfor %}{% if add_generation_prompt %}<|assistant|>"
                               "{% endif %}")
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    prompts = tmp_path / "chat.jsonl"
    prompts.write_text(json.dumps({"messages": [{"role": "system", "content": "be brief"},
                                                {"role": "user", "content": "red fox"}]})
                       + "\n" + json.dumps({"prompt": "two owl"}) + "\n")
    out = tmp_path / "out"
    assert main([f"--model={model}", f"--prompts={prompts}", f"--output={out}",
                 "--chat-template=True", "--max-new-tokens=4"]) == 0
    tok = AutoTokenizer.from_pretrained(model)
    first, second = results(out)
    assert first["prompt"] == "<|system|>be brief</s><|user|>red fox</s><|assistant|>"
    assert second["prompt"] == "<|user|>two owl</s><|assistant|>"
    assert first["prompt_tokens"] == len(tok(first["prompt"], add_special_tokens=False)
                                         ["input_ids"])


def test_missing_chat_template_is_one_line(tiny, prompt_file, tmp_path, capsys,
                                           single_process_env) -> None:
    assert main(args(tiny, prompt_file, tmp_path / "o", "--chat-template=True")) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mgft-generate: --chat-template {tiny.model_dir}: the tokenizer has "
                          "no chat template")
    assert err.count("\n") == 1 and not (tmp_path / "o").exists()


def _fits_at_most(limit: int, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """decode.generate as on a GPU whose memory holds `limit` prompts per batch: larger
    batches raise the allocator's error (the one CUDA raises; there is no GPU here). Returns
    the size of every batch tried."""
    import torch
    from mgft_train.generate import decode

    real, tried = decode.generate, []

    def tight(model, tokenizer, config, eos, batch, seed):
        tried.append(len(batch))
        if len(batch) > limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(model, tokenizer, config, eos, batch, seed)

    monkeypatch.setattr(decode, "generate", tight)
    return tried


def test_a_batch_out_of_memory_is_halved_and_nothing_is_lost(
        one_process: Path, tiny, prompt_file, tmp_path, capsys, monkeypatch,
        single_process_env) -> None:
    tried = _fits_at_most(2, monkeypatch)
    out = tmp_path / "out"
    assert main(args(tiny, prompt_file, out)) == 0  # --batch-size=4
    # 13 prompts: the first batch of 4 fails, then 2 at a time, the last one alone.
    assert tried == [4] + [2] * 6 + [1]
    assert results(out) == results(one_process)  # greedy: the same completions, in order
    assert metrics(out)["ranks"][0]["batch_size"] == 2
    err = capsys.readouterr().err
    assert err.count("out of GPU memory") == 1
    assert "mgft-generate: rank 0: out of GPU memory at --batch-size 4; going on at 2\n" in err


def test_progress_counts_prompts_with_speed_and_eta(tiny, prompt_file, tmp_path, capsys,
                                                    single_process_env) -> None:
    assert main(args(tiny, prompt_file, tmp_path / "out")) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if " prompts tok/s " in line]
    done = [int(re.search(r"rank 0: (\d+)/13 prompts", line)[1]) for line in lines]
    assert done == [4, 8, 12, 13]  # --batch-size=4, one line per batch
    assert lines[-1].endswith(" eta 0:00:00")
    assert all(re.fullmatch(r"mgft-generate: rank 0: \d+/13 prompts tok/s \d+ eta \d+:\d\d:\d\d",
                            line) for line in lines)


def test_one_prompt_too_big_for_the_gpu_is_one_line_and_exit_2(
        tiny, prompt_file, tmp_path, capsys, monkeypatch, single_process_env) -> None:
    tried = _fits_at_most(0, monkeypatch)
    assert main(args(tiny, prompt_file, tmp_path / "out", "--batch-size=2")) == 2
    assert tried == [2, 1]
    last = capsys.readouterr().err.splitlines()[-1]
    assert last == ("mgft-generate: rank 0: --batch-size 1: a single prompt and its completion "
                    "do not fit in this GPU's memory; use --strategy mp to spread the model "
                    "over the node's GPUs, or lower --max-new-tokens")
