from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from mgft.render import compiled, precompiled, template
from mgft.render.local import render_local
from mgft.render.pytorchjob import render_pytorchjob
from mgft.render.sbatch import render_sbatch
from mgft.render.trainjob import render_trainjob

from tests.launcher.render import cases

COMPILED = Path(compiled.__file__).parent
GOLDEN = Path(__file__).parent / "golden"


def test_compiled_templates_are_current(request: pytest.FixtureRequest) -> None:
    expected = precompiled.compiled_modules(template.source_environment())
    if request.config.getoption("--update-golden"):
        for stale in COMPILED.glob("*.py"):
            stale.unlink()
        for name, text in expected.items():
            (COMPILED / name).write_text(text)
    written = {path.name: path.read_text() for path in COMPILED.glob("*.py")}
    assert written == expected, (
        "mgft/render/compiled/ is out of date with launcher/mgft/templates: run `make golden` "
        "and review the diff")


def test_renderers_use_the_compiled_templates() -> None:
    assert precompiled.current()
    assert isinstance(template.environment().loader, precompiled.PrecompiledLoader)


def _every_golden_case() -> dict[str, str]:
    """Golden file name -> its renderer's output."""
    out = {f"sbatch-{k}.sh": render_sbatch(s) for k, s in cases.slurm().items()}
    out |= {f"local-{k}.txt": render_local(s) for k, s in cases.local().items()}
    for api, render in (("pytorchjob", render_pytorchjob), ("trainjob", render_trainjob)):
        out |= {f"{api}-{k}.yaml": render(s) for k, s in cases.k8s(api).items()}
        out |= {f"k8s-{api}-{k}.yaml": render(s) for k, s in cases.k8s_options(api).items()}
    return out


def test_templates_from_source_render_the_golden_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under another Jinja release the templates are compiled from source, to the same text."""
    monkeypatch.setattr(template, "environment", template.source_environment)
    rendered = _every_golden_case()
    assert rendered.keys() == {p.name for p in GOLDEN.iterdir()}
    for name, text in rendered.items():
        assert text == (GOLDEN / name).read_text(), name


@given(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E))
       | st.text(st.characters(exclude_categories=("Cs",))))
@example("")
@example(" lead and trail ")
@example("...")
@example("'quoted' #not-a-comment: x")
def test_yaml_filter_writes_what_pyyaml_writes(text: str) -> None:
    """Plain ASCII is written without PyYAML: exactly as PyYAML would write it."""
    assert template.yaml_scalar(text) == template.pyyaml_scalar(text)
