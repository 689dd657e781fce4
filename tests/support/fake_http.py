"""The HTTP plumbing the fake Google APIs share: a threaded loopback server that hands each
request (verb, path, query, JSON body) to the fake and sends its (status, JSON) back."""

from __future__ import annotations

import http.server
import json
import urllib.parse
from collections.abc import Callable
from typing import Any

Dispatch = Callable[[str, str, dict[str, str], Any], tuple[int, dict[str, Any]]]


def json_server(dispatch: Dispatch, invalid_json: dict[str, Any]) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _serve(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            url = urllib.parse.urlsplit(self.path)
            params = dict(urllib.parse.parse_qsl(url.query))
            try:
                body = json.loads(raw) if raw else None
            except json.JSONDecodeError:
                return self._reply(400, invalid_json)
            status, payload = dispatch(self.command, url.path, params, body)
            self._reply(status, payload)

        def _reply(self, status, payload):
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = do_PATCH = _serve

    return http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
