"""Shared fixtures: golden files (`pytest --update-golden`) and the specs the tests render."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true",
                     help="Rewrite golden files from the current renderers instead of comparing.")


@pytest.fixture
def golden(request: pytest.FixtureRequest):
    """`golden(path, text)`: compare text with the file, or rewrite it with --update-golden."""
    update = request.config.getoption("--update-golden")

    def check(path: Path, text: str) -> None:
        if update:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            return
        assert path.is_file(), f"{path} missing: run `pytest --update-golden` and review the diff"
        assert text == path.read_text(), (
            f"{path.name} differs from the renderer's output; if the change is intended, "
            "run `pytest --update-golden` and review the diff")

    return check
