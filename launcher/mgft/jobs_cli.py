"""`mgft status|logs|cancel|list`: thin commands that hand a `JobQuery` to the job's backend.

Each backend module implements `status`, `logs`, `cancel` and `list_jobs` taking a JobQuery
and returning an exit code; a backend without them says so.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import click

from mgft.errors import SpecError, SubmitError
from mgft.jobs import JobQuery
from mgft.spec import Backend, K8sApi

_REMOTE = [b.value for b in Backend if b is not Backend.LOCAL]


def _run(operation: str, backend: str, query: JobQuery) -> None:
    from mgft import backends

    module = backends.load(Backend(backend))
    func: Callable[[JobQuery], int] | None = getattr(module, operation, None)
    if func is None:
        command = operation.removesuffix("_jobs")
        raise SubmitError(f"`mgft {command}` is not available for --backend {backend} in "
                          "this version")
    sys.exit(func(query))


def _errors_are_one_line(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (SpecError, SubmitError) as err:
            click.echo(f"mgft: error: {err}", err=True)
            sys.exit(2)

    return wrapper


def _where(func: Callable[..., Any]) -> Callable[..., Any]:
    """--backend, --namespace and --k8s-api, shared by every job command."""
    func = click.option("--k8s-api", type=click.Choice([a.value for a in K8sApi]),
                        help="k8s: the job's API; by default a PyTorchJob, then a TrainJob, "
                        "is looked for.")(func)
    func = click.option("--namespace", "-n", default="default", show_default=True,
                        help="k8s: the job's namespace.")(func)
    return click.option("--backend", type=click.Choice(_REMOTE), required=True,
                        help="Where the job was submitted.")(func)


def _query(name: str | None, namespace: str, k8s_api: str | None, **more: Any) -> JobQuery:
    return JobQuery(name=name, namespace=namespace, api=K8sApi(k8s_api) if k8s_api else None,
                    **more)


@click.command()
@click.argument("name")
@_where
@_errors_are_one_line
def status(name: str, backend: str, namespace: str, k8s_api: str | None) -> None:
    """Show a job's state and its pods (k8s: by the operator's labels)."""
    _run("status", backend, _query(name, namespace, k8s_api))


@click.command()
@click.argument("name")
@_where
@click.option("--follow", "-f", is_flag=True, help="Keep streaming until the pod ends.")
@click.option("--rank", type=click.IntRange(min=0), default=0, show_default=True,
              help="Node rank whose output to show (0 is the master).")
@_errors_are_one_line
def logs(name: str, backend: str, namespace: str, k8s_api: str | None, follow: bool,
         rank: int) -> None:
    """Print a job's output, from the node of the given rank."""
    _run("logs", backend, _query(name, namespace, k8s_api, rank=rank, follow=follow))


@click.command()
@click.argument("name")
@_where
@_errors_are_one_line
def cancel(name: str, backend: str, namespace: str, k8s_api: str | None) -> None:
    """Stop a job and delete its pods (outputs on a claim are kept)."""
    _run("cancel", backend, _query(name, namespace, k8s_api))


@click.command(name="list")
@_where
@_errors_are_one_line
def list_(backend: str, namespace: str, k8s_api: str | None) -> None:
    """List the mgft jobs submitted there."""
    _run("list_jobs", backend, _query(None, namespace, k8s_api))


def register(group: click.Group) -> None:
    for command in (status, logs, cancel, list_):
        group.add_command(command)
