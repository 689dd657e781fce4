"""A fault-injecting HTTP proxy in front of fake-gcs-server, on loopback only.

Point STORAGE_EMULATOR_HOST at it and it forwards every request to the emulator, except
the ones a test asked to fail: a bounded number of requests of a chosen kind (upload,
compose, download, metadata, list, delete), optionally only for object names containing
a string, answered with 503 or 429 (the JSON error body GCS sends), or with the
connection dropped before the request reaches the emulator, or after it was processed
(the write happened, its answer is lost: what preconditions on retries are for).

With a `gate` (tests/support/gcs_iam.py, the model of the bucket's IAM), each request is
first put to the gate, which may answer it itself (a refusal) instead of forwarding it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import http.server
import json
import re
import threading
import urllib.parse
from collections.abc import Iterator

from tests.support.loopback import serving

ACTIONS = ("503", "429", "drop-before", "drop-after")
KINDS = ("upload", "compose", "download", "metadata", "list", "delete", "any")


@dataclasses.dataclass
class Fault:
    kind: str
    action: str
    times: int = 1
    name_contains: str = ""
    injected: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS or self.action not in ACTIONS or self.times < 1:
            raise ValueError(f"invalid fault {self.kind}/{self.action} x{self.times}: kinds {KINDS}, actions {ACTIONS}")


_BODY_NAME = re.compile(rb'"name"\s*:\s*"([^"]+)"')


def request_kind(method: str, path: str, body: bytes = b"", sessions: dict[str, str] | None = None) -> tuple[str, str]:
    """(kind, object name) of a GCS JSON API request; `sessions` maps resumable upload ids to names."""
    url = urllib.parse.urlsplit(path)
    query = urllib.parse.parse_qs(url.query)
    parts = url.path.split("/o/", 1)
    name = urllib.parse.unquote(parts[1]) if len(parts) == 2 else query.get("name", [""])[0]
    if url.path.startswith("/upload/"):
        found = _BODY_NAME.search(body[:4096])  # multipart and resumable starts carry the name in JSON
        session = (sessions or {}).get(query.get("upload_id", [""])[0], "")
        return "upload", name or (found.group(1).decode() if found else session)
    if url.path.endswith("/compose"):
        return "compose", name.removesuffix("/compose")
    if method == "DELETE":
        return "delete", name
    if url.path.startswith("/download/") or query.get("alt") == ["media"]:
        return "download", name
    if method == "GET" and url.path.rstrip("/").endswith("/o"):
        return "list", query.get("prefix", [""])[0]
    return "metadata", name


class FaultProxy:
    def __init__(self, upstream: str, gate=None):
        self.upstream = urllib.parse.urlsplit(upstream)
        self.gate = gate
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str]] = []
        self.sessions: dict[str, str] = {}  # resumable upload id -> object name
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def injected(self) -> int:
        return sum(f.injected for f in self.faults)

    def inject(self, kind: str, action: str, times: int = 1, name_contains: str = "") -> Fault:
        fault = Fault(kind, action, times, name_contains)
        with self._lock:
            self.faults.append(fault)
        return fault

    def _take(self, kind: str, name: str) -> str | None:
        with self._lock:
            self.requests.append((kind, name))
            for fault in self.faults:
                if fault.kind in (kind, "any") and fault.name_contains in name and fault.injected < fault.times:
                    fault.injected += 1
                    return fault.action
        return None

    def _handler(self):
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().strip().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))

            def _error(self, code: int) -> None:
                reason = "rateLimitExceeded" if code == 429 else "backendError"
                self._json(code, {"error": {"code": code, "message": f"injected {code}", "errors": [{"reason": reason}]}})

            def _json(self, code: int, payload: dict) -> None:
                body = json.dumps(payload)
                self.send_response(code)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def _drop(self) -> None:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(2)

            def _forward(self) -> None:
                body = self._body()
                if proxy.gate is not None and (answer := proxy.gate.before(self.command, self.path, self.headers, body)):
                    self._json(*answer)
                    return
                kind, name = request_kind(self.command, self.path, body, proxy.sessions)
                action = proxy._take(kind, name)
                if action in ("503", "429"):
                    self._error(int(action))
                    return
                if action == "drop-before":
                    self._drop()
                    return
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding", "connection")}
                headers["Content-Length"] = str(len(body))
                conn.request(
                    self.command, self.path, body=body if body or self.command in ("POST", "PUT") else None, headers=headers
                )
                response = conn.getresponse()
                data = response.read()
                conn.close()
                if proxy.gate is not None:
                    proxy.gate.after(self.command, self.path, body, response.status)
                if action == "drop-after":  # the emulator did it; the client never hears so
                    self._drop()
                    return
                upstream = f"{proxy.upstream.scheme}://{proxy.upstream.netloc}"
                location = response.getheader("Location") or ""
                if "upload_id=" in location:
                    upload_id = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query).get("upload_id", [""])[0]
                    proxy.sessions[upload_id] = name
                if "json" in (response.getheader("Content-Type") or ""):  # mediaLink, selfLink
                    data = data.replace(upstream.encode(), proxy.endpoint.encode())
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() in ("transfer-encoding", "connection", "content-length"):
                        continue
                    self.send_header(key, value.replace(upstream, proxy.endpoint))  # resumable upload sessions
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _forward

        return Handler

    @contextlib.contextmanager
    def running(self) -> Iterator[FaultProxy]:
        with serving(self._server, "fault-proxy"):
            yield self
