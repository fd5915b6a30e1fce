"""`mgft status|logs|cancel|list`: thin commands that hand a `JobQuery` to the job's backend.

Each backend module implements `status`, `logs`, `cancel` and `list_jobs` taking a JobQuery
and returning an exit code; a backend without them says so.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from mgft.backends.query import JobQuery
from mgft.spec.choices import Backend, K8sApi
from mgft.spec.errors import one_line_errors

_BACKENDS = [b.value for b in Backend]


def _run(operation: str, backend: str | None, query: JobQuery) -> None:
    from mgft.cli import dispatch as manage

    if query.name is None and backend is None:  # list: every backend that lists by default
        sys.exit(max(getattr(manage.manager(b, "list"), operation)(query)
                     for b in manage.LISTED))
    assert query.name is not None or backend is not None
    chosen = manage.backend_for(query.name or "", backend)
    module = manage.manager(chosen, operation.removesuffix("_jobs"))
    func: Callable[[JobQuery], int] = getattr(module, operation)
    sys.exit(func(query))


def _where(func: Callable[..., Any]) -> Callable[..., Any]:
    """--backend, --namespace and --k8s-api, shared by every job command."""
    func = click.option("--k8s-api", type=click.Choice([a.value for a in K8sApi]),
                        help="k8s: the job's API; by default a PyTorchJob, then a TrainJob, "
                        "is looked for.")(func)
    func = click.option("--namespace", "-n", default="default", show_default=True,
                        help="k8s: the job's namespace.")(func)
    return click.option("--backend", type=click.Choice(_BACKENDS), default=None,
                        help="Where the job was submitted. Default: slurm for a numeric job "
                        "id, k8s for a name.")(func)


def _query(name: str | None, namespace: str, k8s_api: str | None, **more: Any) -> JobQuery:
    return JobQuery(name=name, namespace=namespace, api=K8sApi(k8s_api) if k8s_api else None,
                    **more)


_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


@click.command()
@click.argument("name")
@_where
@_JSON
@one_line_errors
def status(name: str, backend: str | None, namespace: str, k8s_api: str | None,
           as_json: bool) -> None:
    """Where a job is: state, exit code and a failure's last lines (k8s: its pods)."""
    _run("status", backend, _query(name, namespace, k8s_api, as_json=as_json))


@click.command()
@click.argument("name")
@_where
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the job ends (k8s: "
              "first wait for the pod to start).")
@click.option("--rank", type=click.IntRange(min=0), default=None, metavar="N",
              help="Slurm: only this global rank's lines. k8s: the pod of this node rank "
              "(default: the master, 0).")
@one_line_errors
def logs(name: str, backend: str | None, namespace: str, k8s_api: str | None, follow: bool,
         rank: int | None) -> None:
    """Print a job's output."""
    _run("logs", backend, _query(name, namespace, k8s_api, rank=rank, follow=follow))


@click.command()
@click.argument("name")
@_where
@one_line_errors
def cancel(name: str, backend: str | None, namespace: str, k8s_api: str | None) -> None:
    """Stop a job and wait until it has, at most 90 s (Slurm: scancel, then until Slurm says
    it ended; k8s: delete the job, then until its pods are gone; claims with outputs are kept).
    """
    _run("cancel", backend, _query(name, namespace, k8s_api))


@click.command(name="list")
@_where
@_JSON
@one_line_errors
def list_(backend: str | None, namespace: str, k8s_api: str | None, as_json: bool) -> None:
    """The jobs submitted with mgft (Slurm: from here; k8s: in the namespace)."""
    _run("list_jobs", backend, _query(None, namespace, k8s_api, as_json=as_json))


def register(group: click.Group) -> None:
    for command in (status, logs, cancel, list_):
        group.add_command(command)
