from __future__ import annotations

from mgft_train import demo_assets as tiny
from mgft_train.data import load_rows, render_prompt


def test_assets_reload_with_auto_classes(tiny):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny.model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(tiny.model_dir, local_files_only=True)
    assert model.config.model_type == "llama"
    assert model.config.vocab_size == len(tok)
    assert len({tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}) == 3
    assert model.config.eos_token_id == tok.eos_token_id
    assert sum(p.numel() for p in model.parameters()) < 500_000
    row = load_rows(tiny.data)[0]
    text = render_prompt(row) + row.output
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_dataset_rows_solve_their_task(tiny):
    rows = load_rows(tiny.data)
    assert len(rows) == 256
    for row in rows:
        assert row.output.split() == tiny_task(row.instruction, row.input.split())


def tiny_task(instruction: str, words: list[str]) -> list[str]:
    """What each instruction asks, read as a person would (not from demo_assets.TASKS)."""
    if instruction == "Reverse the words.":
        return words[::-1]
    if instruction == "Repeat the words.":
        return words
    assert instruction == "Sort the words.", instruction
    return sorted(words)


def test_rows_and_tokenizer_are_deterministic():
    assert tiny.make_rows(20, seed=0) == tiny.make_rows(20, seed=0)
    assert tiny.make_rows(20, seed=0) != tiny.make_rows(20, seed=1)
    corpus = [render_prompt(r) + r.output for r in tiny.make_rows(50, seed=0)]
    assert tiny.train_tokenizer(corpus).get_vocab() == tiny.train_tokenizer(corpus).get_vocab()


def test_refuses_a_non_empty_dir_without_force(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert tiny.main(["--out", str(tmp_path)]) == 2
    assert "--force" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_the_task_can_be_written_in_every_format_and_file_the_trainer_reads(tmp_path, capsys):
    from mgft.spec.job import DataFormat
    from mgft_train.data import read
    from mgft_train.model import load_tokenizer

    out = tmp_path / "assets"
    assert tiny.main(["--out", str(out), "--rows", "8", "--format", "sharegpt", "--file-type",
                      "parquet", "--chat-template", "chatml"]) == 0
    assert f"dataset (8 sharegpt rows): {out / 'data.parquet'}" in capsys.readouterr().out
    parsed = read(str(out / "data.parquet"))
    assert parsed.format is DataFormat.SHAREGPT and len(parsed.records) == 8
    rows = tiny.make_rows(8, seed=0)
    assert [c.messages[1]["content"] for c in parsed.records] == [r.output for r in rows]
    assert load_tokenizer(str(out / "model")).chat_template == \
        tiny.BUILTIN_CHAT_TEMPLATES["chatml"]
    for fmt in tiny.FORMATS:
        for file_type, name in tiny.FILE_TYPES.items():
            path = tiny.write_data(tmp_path / f"{fmt}-{name}",
                                   [tiny.as_format(r, fmt) for r in rows], file_type)
            assert read(str(path)).format is DataFormat(fmt), (fmt, file_type)


def test_the_1b_preset_writes_a_config_for_random_init_and_rows_of_about_500_tokens(tmp_path):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    data = tiny.build(tmp_path, rows=12, preset="llama-1b")
    model_dir = tmp_path / "model"
    assert not list(model_dir.glob("*.safetensors"))  # built on the GPU by --random-init
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    assert sum(p.numel() for p in model.parameters()) == 1_055_991_808
    tok = AutoTokenizer.from_pretrained(model_dir)
    lengths = [len(tok(render_prompt(r) + r.output)["input_ids"]) for r in load_rows(data)]
    assert min(lengths) > 400 and max(lengths) < 600
