"""Write constraints.txt: exact versions of everything `mgft[train,k8s,track]` needs at run
time, as installed in this environment (CI's venv). `make install` (CI) and both images
install through it, so an image runs the versions CI tested.
Run `make lock` after changing dependencies.

    python images/lock.py [--check]
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

CONSTRAINTS = Path(__file__).resolve().parents[1] / "constraints.txt"
HEADER = """\
# Exact versions for `mgft[train,k8s,track]` and everything it pulls in, as CI installs them
# (`make install`) and as images/cuda and images/cpu install them. torch: the +cpu or CUDA
# build of this version, by platform. Regenerate with `make lock`; review the diff.
"""


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(root: str = "mgft", extras: frozenset[str] = frozenset({"train", "k8s", "track"}),
            ) -> dict[str, str]:
    """{distribution: version} of what `root[extras]` requires here, transitively."""
    pins: dict[str, str] = {}
    todo = [(root, extras)]
    while todo:
        name, wanted = todo.pop()
        dist = metadata.distribution(name)
        key = _norm(dist.metadata["Name"])
        if key != _norm(root):
            if key in pins:
                continue
            pins[key] = dist.version.split("+")[0]  # local builds (+cpu) satisfy the pin
        for text in dist.requires or []:
            req = Requirement(text)
            envs = [{"extra": e} for e in wanted] or [{"extra": ""}]
            if req.marker and not any(req.marker.evaluate(e) for e in envs):
                continue
            todo.append((req.name, frozenset(req.extras)))
    return dict(sorted(pins.items()))


def render() -> str:
    return HEADER + "".join(f"{name}=={version}\n" for name, version in closure().items())


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if CONSTRAINTS.read_text() != text:
            print("constraints.txt differs from this environment: run `make lock`",
                  file=sys.stderr)
            return 1
        return 0
    CONSTRAINTS.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
