"""Build the one validated `JobSpec` from a YAML file, CLI flags and `--set` overrides.

Precedence, lowest first: field defaults, the YAML file, flags, `--set a.b=c`.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from mgft.spec import validate
from mgft.spec.errors import NO_VALUE, SpecError, fail
from mgft.spec.flags import display_name
from mgft.spec.job import (
    Backend,
    DistSpec,
    GenerateSpec,
    JobSpec,
    K8sSpec,
    PlanSpec,
    Resources,
    SlurmSpec,
    Strategy,
    TrainSpec,
)
from mgft.spec.names import derive_name

if TYPE_CHECKING:
    import yaml

SECTIONS: dict[str, type] = {
    "train": TrainSpec, "resources": Resources, "k8s": K8sSpec, "slurm": SlurmSpec,
    "dist": DistSpec, "plan": PlanSpec, "generate": GenerateSpec}


@functools.cache
def _adapter() -> TypeAdapter[JobSpec]:
    return TypeAdapter(JobSpec)


def json_schema() -> dict[str, Any]:
    schema = _adapter().json_schema()
    schema["title"] = "mgft job"
    return schema


class _Typed:
    """A plain YAML scalar that YAML 1.1 read as a number, bool or date, with the text the
    user typed: a string field gets the text (`time: 12:00:00` is not 43200, `account: 0123`
    is not 83), any other field the value. `build_spec` unwraps it; pydantic never sees it."""

    __slots__ = ("value", "text")

    def __init__(self, value: Any, text: str) -> None:
        self.value, self.text = value, text


def _keep_text(construct: Callable[[yaml.SafeLoader, yaml.ScalarNode], Any]
               ) -> Callable[[yaml.SafeLoader, yaml.ScalarNode], _Typed]:
    """`construct`'s value, with the text of the scalar it came from."""
    return lambda loader, node: _Typed(construct(loader, node), node.value)


@functools.cache
def _text_keeping_loader() -> type[yaml.SafeLoader]:
    """Built when a --config file or --set is read: most jobs come from flags alone, and
    importing PyYAML is a noticeable part of `mgft render`'s start-up."""
    import yaml

    class TextKeepingLoader(yaml.SafeLoader):
        pass

    for kind in ("bool", "int", "float", "timestamp"):
        tag = f"tag:yaml.org,2002:{kind}"
        TextKeepingLoader.add_constructor(tag, _keep_text(yaml.SafeLoader.yaml_constructors[tag]))
    return TextKeepingLoader


def _load(text: str) -> Any:
    import yaml

    return yaml.load(text, Loader=_text_keeping_loader())  # noqa: S506 - a SafeLoader


def load_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = _load(path.read_text(encoding="utf-8")) or {}
    except OSError as err:
        raise SpecError("--config", str(path), err.strerror or "cannot be read",
                        "pass an existing YAML file") from None
    except UnicodeDecodeError as err:
        raise SpecError("--config", str(path), f"not UTF-8 text ({err.reason} at byte "
                        f"{err.start})", "save the file as UTF-8") from None
    except yaml.YAMLError as err:
        raise SpecError("--config", str(path), f"is not valid YAML ({err})",
                        "fix the syntax at the position shown") from None
    if not isinstance(data, dict):
        raise SpecError("--config", str(path), "must hold a mapping of options",
                        "see `mgft config schema`")
    return data


def set_path(raw: dict[str, Any], dotted: str, value: Any, origin: str) -> None:
    """Set `a.b.c` in a nested dict, creating sections as needed."""
    node = raw
    *parents, leaf = dotted.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise SpecError(origin, dotted, f"'{part}' is a value, not a section",
                            "set the value itself, e.g. --set train.lr=1e-4")
        node = child
    node[leaf] = value


def parse_set(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise SpecError("--set", item, "is not KEY=VALUE", "write e.g. --set train.lr=1e-4")
    # YAML typing, so `--set resources.gpus=4` is an int and `--set name=null` clears it;
    # a string field still gets the text (`--set slurm.account=12345`).
    import yaml

    try:
        return key.strip(), _load(text) if text else ""
    except yaml.YAMLError:
        return key.strip(), text


def parse_env_items(items: Iterable[str]) -> dict[str, str]:
    """`--env KEY=VALUE` items as spec paths (`env.KEY`: VALUE), for `mgft submit/render` and
    `mgft generate` alike. The value may itself hold `=`."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SpecError("--env", item, "is not KEY=VALUE",
                            "write e.g. --env WANDB_MODE=offline")
        out[f"env.{key}"] = value
    return out


def flag_paths(flag_values: Mapping[str, Any], paths: Mapping[str, str]) -> dict[str, Any]:
    """Click's option values (keyed by parameter name, e.g. micro_batch) as spec paths, by a
    `--flag: path` table (mgft.spec.flags); options left unset are left out."""
    return {paths["--" + name.replace("_", "-")]: value for name, value in flag_values.items()
            if value is not None}


def merge(file_data: Mapping[str, Any], flags: Mapping[str, Any],
          overrides: Iterable[str]) -> dict[str, Any]:
    """Combine the sources into one raw dict (flags keyed by dotted path)."""
    raw: dict[str, Any] = _deep_copy(file_data)
    for path, value in flags.items():
        set_path(raw, path, value, display_name(path))
    for item in overrides:
        key, value = parse_set(item)
        set_path(raw, key, value, "--set")
    return raw


# `--strategy auto`: the planner that picks a strategy for the job, and says why.
ResolveAuto = Callable[[JobSpec], tuple[JobSpec, str]]


def build_spec(raw: Mapping[str, Any], note: Callable[[str], None] | None = None, *,
               resolve_auto: ResolveAuto | None = None) -> JobSpec:
    """The one place a JobSpec is created: types, defaults, derived fields, rules. `note`
    hears what was decided for the user (the strategy `auto` chose, and why).
    `resolve_auto` (mgft.plan.auto.resolve_auto, passed in by the CLI, which sits above both
    the spec and the plan) replaces `--strategy auto` before the rules run."""
    spec = _validate(raw)
    if spec.train.strategy is Strategy.AUTO:
        if resolve_auto is None:
            fail("train.strategy", "auto", "this caller has no planner to choose a strategy",
                 "name one: ddp, fsdp, zero1, zero2, zero3, zero3-offload or mp")
        assert resolve_auto is not None
        spec, why = resolve_auto(spec)
        if note is not None:
            note(why)
    spec = _fill_derived(spec)
    validate.check(spec)
    return spec


def _validate(raw: Mapping[str, Any]) -> JobSpec:
    texts: dict[tuple[Any, ...], str] = {}
    plain = _unwrap(raw, (), texts)
    while True:
        try:
            return _adapter().validate_python(plain)
        except ValidationError as err:
            # Where a string is wanted, a YAML-typed scalar is read again as the text typed.
            retyped = [tuple(e["loc"]) for e in err.errors()
                       if e["type"] == "string_type" and tuple(e["loc"]) in texts]
            if not retyped:
                raise _spec_error(err) from None
            for loc in retyped:
                node = plain
                for part in loc[:-1]:
                    node = node[part]
                node[loc[-1]] = texts.pop(loc)


def _unwrap(node: Any, loc: tuple[Any, ...], texts: dict[tuple[Any, ...], str]) -> Any:
    """Plain values for pydantic, and the typed text of each YAML-typed scalar by location."""
    if isinstance(node, _Typed):
        texts[loc] = node.text
        return node.value
    if isinstance(node, Mapping):
        out = {}
        for key, value in node.items():
            key = key.value if isinstance(key, _Typed) else key
            out[key] = _unwrap(value, (*loc, key), texts)
        return out
    if isinstance(node, list | tuple):
        return [_unwrap(value, (*loc, i), texts) for i, value in enumerate(node)]
    return node


def _fill_derived(spec: JobSpec) -> JobSpec:
    res = spec.resources
    if res.nproc_per_node is None:
        one_per_gpu = res.gpus > 0 and spec.train.strategy is not Strategy.MP
        res = dataclasses.replace(res, nproc_per_node=res.gpus if one_per_gpu else 1)
        spec = dataclasses.replace(spec, resources=res)
    if spec.name is None:
        # Only what differs from the defaults names a job, so a release that adds an option
        # renames no existing job; nor does how `auto` sized it.
        canonical = _adapter().dump_python(spec, mode="json", exclude_defaults=True)
        canonical.pop("plan", None)
        spec = dataclasses.replace(spec, name=derive_name(spec.train.model, canonical))
    return spec


def check_local_inputs(spec: JobSpec) -> None:
    """Local runs read the model, the data (or prompts) and an adapter from this machine:
    check they are there before starting."""
    if spec.backend is not Backend.LOCAL:
        return
    if not Path(spec.train.model, "config.json").is_file():
        fail("train.model", spec.train.model, "no model directory with a config.json there",
             "pass a local model directory (config, weights and tokenizer)")
    if spec.generate is not None:
        if not Path(spec.train.dataset).is_file():
            fail("train.dataset", spec.train.dataset, "file not found",
                 "pass an existing .jsonl file of prompts")
        adapter = spec.generate.adapter
        if adapter is not None and not Path(adapter, "adapter_config.json").is_file():
            fail("generate.adapter", adapter, "no adapter_config.json there",
                 "pass the adapter directory a LoRA run saved (<output>/adapter)")
        return
    for path in ("train.dataset", "train.eval_dataset"):
        data = getattr(spec.train, path.removeprefix("train."))
        if data is not None and not Path(data).exists():
            fail(path, data, "not found", "pass an existing .jsonl, .json or .parquet file, "
                 "or a save_to_disk directory")


def _spec_error(err: ValidationError) -> SpecError:
    first = err.errors()[0]
    loc = list(first["loc"])
    while loc and isinstance(loc[-1], int):  # one item of a list (--report-to): name the list
        loc.pop()
    path = ".".join(str(p) for p in loc)
    name, kind, ctx = display_name(path), first["type"], first.get("ctx", {})
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        close = difflib.get_close_matches(path, _known_paths(), n=1)
        fix = f"did you mean '{close[0]}'?" if close else "see `mgft config schema`"
        return SpecError(name, first["input"], "unknown option", fix)
    if kind in ("missing", "missing_keyword_argument"):
        return _missing(err)
    fixes = {
        "greater_than_equal": f"use {ctx.get('ge')} or more",
        "greater_than": f"use a value above {ctx.get('gt')}",
        "less_than_equal": f"use {ctx.get('le')} or less",
        "less_than": f"use a value below {ctx.get('lt')}",
        "enum": f"use one of: {ctx.get('expected')}",
        "int_parsing": "use a whole number",
        "int_from_float": "use a whole number",
        "float_parsing": "use a number, e.g. 2e-4",
        "string_too_short": "give a non-empty value",
    }
    # Only the first letter: the message may quote the accepted spellings ('Equal', 'Exists').
    msg = first["msg"]
    problem = "not one of the choices" if kind == "enum" else msg[:1].lower() + msg[1:]
    return SpecError(name, first.get("input"), problem,
                     fixes.get(kind, "see `mgft config schema` for the accepted values"))


def _missing(err: ValidationError) -> SpecError:
    """Every required option left out, by flag: a missing section stands for its fields."""
    paths = []
    for e in err.errors():
        if e["type"] in ("missing", "missing_keyword_argument"):
            path = ".".join(str(p) for p in e["loc"])
            cls = SECTIONS.get(path)
            paths += [path] if cls is None else [
                f"{path}.{f.name}" for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    names = [display_name(p) for p in paths]
    if len(names) == 1:
        return SpecError(names[0], NO_VALUE, "is required",
                         f"pass {names[0]} (or set {paths[0]} in the YAML file)")
    return SpecError(_and(names), NO_VALUE, "are required",
                     f"pass them (or set {_and(paths)} in the YAML file)")


def _and(words: list[str]) -> str:
    return ", ".join(words[:-1]) + " and " + words[-1]


def _known_paths() -> list[str]:
    top = [f.name for f in dataclasses.fields(JobSpec) if f.name not in SECTIONS]
    return top + [f"{section}.{f.name}" for section, cls in SECTIONS.items()
                  for f in dataclasses.fields(cls)]


def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}
