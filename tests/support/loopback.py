"""A threaded JSON-over-HTTP server on 127.0.0.1: the one server behind every fake Google API
(token endpoint, IAM, and through fake_http.json_server the Compute and Batch fakes)."""

from __future__ import annotations

import contextlib
import http.server
import json
import socketserver
import threading
from collections.abc import Callable, Iterator
from typing import Any

# (verb, path with query, headers, raw body) -> (status, JSON payload)
Respond = Callable[[str, str, Any, bytes], tuple[int, dict[str, Any]]]


# How often a serving loop looks for shutdown(): socketserver's default of 0.5 s makes every
# stop of a test's server wait up to half a second (most of the unit suite's teardown time).
SHUTDOWN_POLL = 0.01


def start_serving(server: socketserver.BaseServer, name: str) -> threading.Thread:
    """Serve `server` on a daemon thread of its own, answering shutdown() within SHUTDOWN_POLL."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": SHUTDOWN_POLL}, name=name, daemon=True)
    thread.start()
    return thread


class JsonServer:
    def __init__(self, respond: Respond):
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _serve(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, payload = respond(self.command, self.path, self.headers, raw)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PATCH = _serve

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> None:
        start_serving(self._server, "json-server")

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextlib.contextmanager
def serving(server: http.server.HTTPServer, name: str) -> Iterator[None]:
    """Serve on a thread of its own while the block runs; then stop and close the server."""
    thread = start_serving(server, name)
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def send_metadata(handler: http.server.BaseHTTPRequestHandler, status: int, text: str, content_type: str) -> None:
    """A metadata server's answer: it always carries `Metadata-Flavor: Google` (the header
    google-auth's ping looks for)."""
    data = text.encode()
    handler.send_response(status)
    handler.send_header("Metadata-Flavor", "Google")
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
