"""The Slurm jobs this user submitted with mgft: where each one's logs and output are.

One small JSON file per job under $MGFT_STATE_DIR (default ~/.local/state/mgft), so `mgft
status`, `logs` and `list` find a job's files after Slurm has forgotten the job. Slurm reuses
job ids when a cluster's state is wiped, so an entry counts only if its job name still matches.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from mgft.contract.env import MGFT_STATE_DIR


@dataclass(frozen=True, kw_only=True, slots=True)
class Entry:
    job_id: str
    name: str
    folder: str  # submitit's folder: the pickled task and each node's stdout/stderr
    output: str  # the trainer's --output, absolute
    nodes: int
    submitted: str  # ISO time

    def log_files(self) -> list[Path]:
        """Each node's stdout then stderr, in node order (submitit's %j_%t_log.* names)."""
        folder = Path(self.folder)
        return [folder / f"{self.job_id}_{task}_log.{kind}"
                for task in range(self.nodes) for kind in ("out", "err")]


def state_dir() -> Path:
    base = os.environ.get(MGFT_STATE_DIR) or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "mgft")
    return Path(base) / "slurm"


def record(entry: Entry) -> Path:
    path = state_dir() / f"{entry.job_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(asdict(entry), indent=1) + "\n")
    os.replace(tmp, path)
    return path


def find(job_id: str) -> Entry | None:
    path = state_dir() / f"{job_id}.json"
    try:
        return Entry(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def entries() -> list[Entry]:
    """Every recorded job, newest first."""
    found = [find(p.stem) for p in state_dir().glob("*.json")]
    return sorted((e for e in found if e is not None), key=lambda e: int(e.job_id.split("_")[0]),
                  reverse=True)
