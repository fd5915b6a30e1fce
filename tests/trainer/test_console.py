"""Every line the trainer says is one write of the whole line (console.py): torchrun --tee
prefixes what it reads as it reads it, and a line written in pieces came out split in a CI
run's Slurm rank log ('... eta 0:00:00[rank0]:')."""

from __future__ import annotations

import ast
import contextlib
import io
from collections.abc import Iterator
from pathlib import Path

import mgft_train
from mgft_train import console
from mgft_train.generate.main import main as generate_main
from mgft_train.main import main


class Writes(io.StringIO):
    """A stream that keeps each write() apart, as an unbuffered pipe hands them to a reader."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return super().write(text)


@contextlib.contextmanager
def recording() -> Iterator[tuple[Writes, Writes]]:
    """In the test's body, not a fixture: pytest puts its own capture back on sys.stdout and
    sys.stderr when the test starts."""
    out, err = Writes(), Writes()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        yield out, err


def argv(tiny, output: Path, *extra: str) -> list[str]:
    return [f"--model={tiny.model_dir}", f"--dataset={tiny.data}", f"--output={output}", *extra]


def whole_lines(calls: list[str]) -> None:
    """Each write ends a line: a reader between two writes never holds half of one."""
    assert calls and all(c.endswith("\n") for c in calls), calls


def test_a_line_and_a_block_each_go_out_in_one_write():
    with recording() as (out, err):
        console.out("step 1/2 loss 1.0000")
        console.out("first\n  second")
        console.err("mgft-train: --x 1: bad; fix it")
    assert out.calls == ["step 1/2 loss 1.0000\n", "first\n  second\n"]
    assert err.calls == ["mgft-train: --x 1: bad; fix it\n"]


def test_the_bad_input_line_is_one_write(tiny, tmp_path, single_process_env):
    with recording() as (out, err):
        assert main(argv(tiny, tmp_path / "out", "--strategy=zero2")) == 2
    whole_lines(err.calls)
    assert len(err.calls) == 1 and err.calls[0].startswith("mgft-train: --strategy zero2: ")
    assert out.calls == []


def test_generate_bad_input_line_is_one_write(tmp_path, single_process_env):
    args = [f"--model={tmp_path}", f"--prompts={tmp_path / 'p.jsonl'}",
            f"--output={tmp_path / 'o'}"]
    with recording() as (_, err):
        assert generate_main(args) == 2
    assert err.calls == [f"mgft-generate: --model {tmp_path}: no config.json there; pass a local "
                         "model directory holding config.json, weights and tokenizer files\n"]


def test_a_run_and_its_resume_write_whole_lines_only(tiny, tmp_path, single_process_env):
    """The data line, every step line, the resume notice and the end-of-run summary (a block
    of four lines, kept together in one write)."""
    output = tmp_path / "out"
    run = argv(tiny, output, "--max-steps=2", "--save-every=1", "--seq-len=64")
    with recording() as (out, _):
        assert main(run) == 0
    whole_lines(out.calls)
    assert [c.count("\n") for c in out.calls if c.startswith(("data:", "step "))] == [1, 1, 1]
    summary = [c for c in out.calls if c.startswith("mgft-train: 2 steps on 1 x cpu")]
    assert len(summary) == 1 and summary[0].count("\n") == 4, out.calls
    assert summary[0].splitlines()[-1] == f"  saved: adapter {output / 'adapter'}"

    (output / "metrics.json").unlink()  # as if the run had stopped before its end
    with recording() as (out, _):
        assert main(run) == 0
    whole_lines(out.calls)
    resumed = [c for c in out.calls if c.startswith("mgft-train: resuming from ")]
    assert resumed == [f"mgft-train: resuming from {output / 'checkpoints' / 'step-00000002'} "
                       "(step 2 of 2)\n"], out.calls


def _bare_console_writes(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id == "print":
            found.append(f"{path}:{node.lineno}: print(")
        elif (isinstance(func, ast.Attribute) and func.attr in ("write", "writelines")
              and ast.unparse(func.value) in ("sys.stdout", "sys.stderr")):
            found.append(f"{path}:{node.lineno}: {ast.unparse(func)}(")
    return found


def test_nothing_in_the_trainer_writes_to_the_console_but_console_py():
    package = Path(mgft_train.__file__).parent
    found = [hit for path in sorted(package.rglob("*.py")) if path != package / "console.py"
             for hit in _bare_console_writes(path)]
    assert found == [], "say it with mgft_train.console.out/err: " + "; ".join(found)
