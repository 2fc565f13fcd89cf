"""A small Kubernetes API server on 127.0.0.1 for tests: real HTTP and JSON, so torchship's
calls go through the official client unchanged (URL routes, bodies, label selectors, errors).
It stores what is created, lists and deletes it, and serves the pods, logs and nodes a test
puts in; it runs no controllers (the test plays the cluster by setting status and pods)."""

from __future__ import annotations

import json
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}  # collection path + "/" + name
        self.pods: dict[str, list[dict[str, Any]]] = {}  # namespace → pods
        self.logs: dict[str, str] = {}  # pod name → log text
        self.nodes: list[dict[str, Any]] = []
        self.missing_groups: set[str] = set()  # API groups the cluster lacks (no CRD)
        self.forbidden: set[str] = set()  # HTTP methods answered 403
        self.requests: list[tuple[str, str]] = []
        self.uid = str(uuid.uuid4())  # kube-system's UID: the cluster's own identity
        self.uid_readable = True  # False: this user may not read namespaces (403)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        # a short poll: shutdown() waits for it, and tests start many of these servers
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeKube:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def api_client(self) -> Any:
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.url
        return client.ApiClient(cfg)

    def kubeconfig(self, path: Path, context: str = "fake") -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": context,
            "clusters": [{"name": context, "cluster": {"server": self.url}}],
            "users": [{"name": context, "user": {"token": "test"}}],
            "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
        }))  # fmt: skip
        return path

    def find(self, kind_plural: str) -> list[dict[str, Any]]:
        return [o for k, o in self.objects.items() if f"/{kind_plural}/" in k]

    def add_pod(self, namespace: str, name: str, labels: dict[str, str], phase: str,
                exit_code: int | None = None, log: str = "") -> None:  # fmt: skip
        state: dict[str, Any] = {"running": {}}
        if exit_code is not None:
            state = {"terminated": {"exitCode": exit_code, "reason": "Completed" if exit_code == 0
                                    else "Error"}}  # fmt: skip
        self.pods.setdefault(namespace, []).append({
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "status": {"phase": phase, "containerStatuses": [{
                "name": "train", "image": "img", "imageID": "", "ready": phase == "Running",
                "restartCount": 0, "state": state}]},
        })  # fmt: skip
        self.logs[name] = log

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: Any, ctype: str = "application/json") -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, code: int, reason: str) -> None:
                self._send(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                  "reason": reason, "code": code})  # fmt: skip

            def _route(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                fake.requests.append((method, parts.path))
                if method in fake.forbidden:
                    return self._status(403, "Forbidden")
                seg = parts.path.strip("/").split("/")
                if seg[0] == "apis" and seg[1] in fake.missing_groups:
                    return self._status(404, "NotFound")
                if parts.path == "/api/v1/namespaces/kube-system":
                    if not fake.uid_readable:
                        return self._status(403, "Forbidden")
                    ns = {"kind": "Namespace", "apiVersion": "v1",
                          "metadata": {"name": "kube-system", "uid": fake.uid}}  # fmt: skip
                    return self._send(200, ns)
                if parts.path == "/api/v1/nodes":
                    return self._send(200, {"kind": "NodeList", "items": fake.nodes})
                if seg[:2] == ["api", "v1"] and len(seg) >= 5 and seg[4] == "pods":
                    return self._pods(seg, parse_qs(parts.query))
                if seg[0] == "apis" and len(seg) in (6, 7):
                    return self._objects(method, parts.path, seg, parse_qs(parts.query))
                return self._status(404, "NotFound")

            def _pods(self, seg: list[str], query: dict[str, list[str]]) -> None:
                if len(seg) == 7 and seg[6] == "log":
                    return self._send(200, fake.logs.get(seg[5], ""), "text/plain")
                selector = query.get("labelSelector", [""])[0]
                items = [p for p in fake.pods.get(seg[3], [])
                         if selects(selector, p["metadata"]["labels"])]  # fmt: skip
                return self._send(200, {"kind": "PodList", "apiVersion": "v1", "items": items})

            def _objects(self, method: str, path: str, seg: list[str],
                         query: dict[str, list[str]]) -> None:  # fmt: skip
                if method == "POST" and len(seg) == 6:
                    body = json.loads(self.body)
                    key = f"{path}/{body['metadata']['name']}"
                    if key in fake.objects:
                        return self._status(409, "AlreadyExists")
                    fake.objects[key] = body
                    return self._send(201, body)
                if method == "GET" and len(seg) == 6:  # a list, by label selector
                    selector = query.get("labelSelector", [""])[0]
                    items = [o for k, o in sorted(fake.objects.items())
                             if k.rsplit("/", 1)[0] == path
                             and selects(selector, o["metadata"].get("labels") or {})]  # fmt: skip
                    return self._send(200, {"apiVersion": "/".join(seg[1:3]), "items": items,
                                            "kind": "List", "metadata": {}})  # fmt: skip
                if len(seg) != 7:
                    return self._status(405, "MethodNotAllowed")
                if path not in fake.objects:
                    return self._status(404, "NotFound")
                if method == "DELETE":
                    del fake.objects[path]
                    return self._send(200, {"kind": "Status", "status": "Success"})
                return self._send(200, fake.objects[path])

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

            def do_DELETE(self) -> None:
                self._route("DELETE")

        return Handler


def selects(selector: str, labels: dict[str, str]) -> bool:
    """Whether a label selector, as the API server reads it, matches `labels`: requirements
    joined by commas, each `key`, `!key`, `key=v` (`==`), `key!=v`, `key in (a,b)` or
    `key notin (a,b)` (k8s.io/apimachinery/pkg/labels/selector.go)."""
    for part in re.findall(r"(?:[^,(]|\([^)]*\))+", selector):
        req = part.strip()
        if m := re.fullmatch(r"(\S+)\s+(in|notin)\s+\(([^)]*)\)", req):
            key, op, values = m[1], m[2], {v.strip() for v in m[3].split(",")}
            if (key in labels and labels[key] in values) != (op == "in"):
                return False
        elif m := re.fullmatch(r"(\S+?)\s*(!=|==|=)\s*(\S*)", req):
            if (labels.get(m[1]) == m[3]) != (m[2] != "!="):
                return False
        elif req.startswith("!"):
            if req[1:] in labels:
                return False
        elif req and req not in labels:
            return False
    return True


def write_kubeconfig(path: Path, servers: dict[str, str], current: str) -> Path:
    """A kubeconfig with one context per server, named as given, and its current context."""
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": current,
        "clusters": [{"name": n, "cluster": {"server": url}} for n, url in servers.items()],
        "users": [{"name": "me", "user": {"token": "test"}}],
        "contexts": [{"name": n, "context": {"cluster": n, "user": "me"}} for n in servers],
    }))  # fmt: skip
    return path
