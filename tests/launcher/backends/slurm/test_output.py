"""--output checked from the submit host before a Slurm job is queued (backends/slurm/output.py):
a read-only filesystem, a path through a file, a finished run; and, on the real 2-node
cluster, `mgft submit` refusing a read-only --output in one line without queueing anything."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mgft.backends.slurm.output import check
from mgft.spec.errors import SpecError

from tests.conftest import Tiny
from tests.slurm_cluster import Cluster

FIX = "pick an --output on a filesystem the nodes share that you can write to"
CAN_MOUNT = os.geteuid() == 0 and shutil.which("unshare") is not None
NO_MOUNT = "a read-only bind mount needs root and unshare (a private mount namespace)"


def read_only(directory: Path, *argv: str) -> list[str]:
    """argv run in a private mount namespace where `directory` is mounted read-only."""
    where = shlex.quote(str(directory))
    return ["unshare", "-m", "sh", "-c",
            f"mount --bind -o ro {where} {where} && exec {shlex.join(argv)}"]


def test_a_new_output_is_created_with_the_log_folder_and_nothing_else(tmp_path: Path) -> None:
    output = tmp_path / "a" / "run"
    check(output, output / "slurm")
    assert [p.name for p in output.iterdir()] == ["slurm"]
    assert list((output / "slurm").iterdir()) == []  # the write check leaves no file


def test_a_path_through_a_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "notes").write_text("x")
    output = tmp_path / "notes" / "run"
    with pytest.raises(SpecError) as err:
        check(output, output / "slurm")
    assert str(err.value) == (f"--output {output}: cannot write there from this host: Not a "
                              f"directory ({tmp_path / 'notes'}); {FIX}")


def test_a_file_and_a_finished_run_are_refused_as_the_trainer_refuses_them(
        tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(SpecError, match="exists and is not a directory; pick a new --output"):
        check(tmp_path / "file", tmp_path / "file" / "slurm")
    done = tmp_path / "done"
    done.mkdir()
    (done / "metrics.json").write_text("{}")
    with pytest.raises(SpecError) as err:
        check(done, done / "slurm")
    assert str(err.value).startswith(f"--output {done}: already holds a finished run's results")
    assert not (done / "slurm").exists()
    check(done, done / "slurm", training=False)  # mgft generate checks its own outputs


@pytest.mark.skipif(not CAN_MOUNT, reason=NO_MOUNT)
@pytest.mark.parametrize("folder_exists", [False, True])
def test_a_read_only_output_is_one_line(tmp_path: Path, folder_exists: bool) -> None:
    output = tmp_path / "run"
    (output / "slurm").mkdir(parents=True) if folder_exists else output.mkdir()
    code = ("from pathlib import Path; from mgft.backends.slurm.output import check; "
            f"check(Path({str(output)!r}), Path({str(output / 'slurm')!r}))")
    proc = subprocess.run(read_only(output, sys.executable, "-c", code), capture_output=True,
                          text=True)
    assert proc.returncode == 1
    named = f" ({output / 'slurm'})" if folder_exists else ""
    assert proc.stderr.splitlines()[-1] == (
        f"mgft.spec.errors.SpecError: --output {output}: cannot write there from this host: "
        f"Read-only file system{named}; {FIX}")


@pytest.mark.skipif(not CAN_MOUNT, reason=NO_MOUNT)
def test_submit_refuses_a_read_only_output_before_queueing(
        slurm_cluster: Cluster, tiny: Tiny, tmp_path: Path) -> None:
    output = tmp_path / "run"
    output.mkdir()
    name = f"mgft-read-only-{os.getpid()}"
    flags = ["--backend", "slurm", "--nodes", "2", "--gpus", "0", "--nproc-per-node", "1",
             "--model", str(tiny.model_dir), "--dataset", str(tiny.data), "--output",
             str(output), "--max-steps", "2", "--name", name]
    result = slurm_cluster.run(*read_only(output, sys.executable, "-m", "mgft.cli", "submit",
                                          *flags), check=False)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (f"mgft: error: --output {output}: cannot write there from this "
                             f"host: Read-only file system; {FIX}\n")
    queued = slurm_cluster.run("squeue", "--noheader", "--name", name, "--format", "%i")
    assert queued.stdout.strip() == "" and not (output / "slurm").exists()
