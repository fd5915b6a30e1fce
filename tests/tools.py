"""Real command-line tools the tests run: from .tools/ (`make tools` fetches them from the
package registries) or PATH."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def tool(name: str) -> str:
    for candidate in (REPO / ".tools" / name, Path(sys.executable).with_name(name)):
        if candidate.is_file():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found in .tools/, the venv or PATH: run `make tools` "
                    "(make test does it)")
    return found
