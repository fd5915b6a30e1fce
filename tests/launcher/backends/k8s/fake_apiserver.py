"""A stand-in for the Kubernetes API server, since none can run here: an HTTP server on
127.0.0.1 that answers from a table of routes and records every request (method, path, query,
content type, JSON body, the status answered), so tests check exactly what the real client
sent.

It is taught the answers a real kube-apiserver (1.36, RBAC on) gives where they differ from
the happy path: 204 No Content with no body for the log of a pod that no node runs yet
(`no_content`), RBAC refusals worded as the server words them (`forbidden`, e.g. `patch`
refused where `update` is allowed), and answers that depend on what came before (a route may
be a function of the request: a pod that is scheduled after a few looks), and API discovery
as it answers for a group/version that is served (`api_resources`) or not (`unserved`).
`left_behind` says which created objects were never deleted.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    body: Any
    status: int = 0  # what the stand-in answered


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


def not_found(what: str) -> tuple[int, dict[str, Any]]:
    return 404, status_body(404, "NotFound", f"{what} not found")


def no_content() -> tuple[int, None]:
    """The answer for the log of a pod no node runs yet (not scheduled): 204 and no body."""
    return 204, None


def forbidden(verb: str, resource: str, namespace: str, name: str = "",
              group: str = "") -> tuple[int, dict[str, Any]]:
    """An RBAC refusal, worded as kube-apiserver words it."""
    what = f"{resource}.{group}" if group else resource
    subject = f'{what} "{name}"' if name else what
    return 403, status_body(403, "Forbidden", (
        f'{subject} is forbidden: User "me" cannot {verb} resource "{resource}" in API group '
        f'"{group}" in the namespace "{namespace}"'))


def unserved() -> tuple[int, dict[str, Any]]:
    """API discovery of a group/version no CRD or aggregated API serves: kube-apiserver's
    NotFound handler answers a Status with this message and empty details (what
    `kubectl get --raw /apis/trainer.kubeflow.org/v1alpha1` prints as `Error from server
    (NotFound): the server could not find the requested resource`)."""
    body = status_body(404, "NotFound", "the server could not find the requested resource")
    return 404, {**body, "details": {}}


def strict_decoding_error(kind: str, version: str, field: str) -> tuple[int, dict[str, Any]]:
    """A create with fieldValidation=Strict carrying a field the CRD's schema lacks: 400
    BadRequest, worded as kube-apiserver words it (kubernetes/kubernetes#109215)."""
    return 400, status_body(400, "BadRequest", (
        f'{kind} in version "{version}" cannot be handled as a {kind}: strict decoding error: '
        f'unknown field "{field}"'))


def api_resources(group_version: str, kind: str, plural: str) -> dict[str, Any]:
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
            "resources": [{"name": plural, "singularName": kind.lower(), "namespaced": True,
                           "kind": kind, "verbs": ["create", "delete", "get", "list", "patch",
                                                   "update", "watch"]}]}


Response = tuple[int, Any] | Callable[[Request], tuple[int, Any]]


@dataclass
class FakeApiServer:
    # (METHOD, path) -> responses in order; the last one repeats. A response is
    # (status, JSON body), (status, str) for plain text such as pod logs, (204, None) for no
    # content, or a function of the Request that returns one of those.
    routes: dict[tuple[str, str], list[Response]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)

    def on(self, method: str, path: str, *responses: Response) -> None:
        self.routes[(method, path)] = list(responses)

    def answer(self, request: Request) -> tuple[int, Any]:
        queue = self.routes.get((request.method, request.path))
        if not queue:
            return not_found(request.path)
        response = queue.pop(0) if len(queue) > 1 else queue[0]
        return response(request) if callable(response) else response

    def calls(self) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self.requests]

    def left_behind(self) -> list[str]:
        """The paths of objects created (a POST answered 2xx) and not deleted since."""
        made = [f"{r.path}/{r.body['metadata']['name']}" for r in self.requests
                if r.method == "POST" and 200 <= r.status < 300]
        gone = {r.path for r in self.requests if r.method == "DELETE" and 200 <= r.status < 300}
        return [path for path in made if path not in gone]

    def __enter__(self) -> FakeApiServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                request = Request(
                    method=self.command, path=url.path,
                    query={k: v[-1] for k, v in parse_qs(url.query).items()},
                    content_type=self.headers.get("Content-Type"),
                    body=json.loads(raw) if raw else None)
                server.requests.append(request)
                code, body = server.answer(request)
                request.status = code
                self.send_response(code)
                if code == 204:  # no body, no Content-Type, as the real server sends
                    self.end_headers()
                    return
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_header("Content-Type", "text/plain" if isinstance(body, str)
                                 else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"


def write_kubeconfig(path: Path, server_url: str, namespace: str = "default") -> Path:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": server_url}}],
        "users": [{"name": "me", "user": {"token": "secret-token"}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "me",
                                                  "namespace": namespace}}]}))
    return path
