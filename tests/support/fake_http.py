"""What the fake Google APIs share: errors as the APIs return them (an HTTP status, a message
and a reason), a threaded loopback server that hands each request (verb, path, query, JSON
body) to the fake and sends its (status, JSON) back, and strict routing (RoutedApi)."""

from __future__ import annotations

import http.server
import json
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

from tests.support import discovery

_STATUS_TEXT = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


class ApiError(Exception):
    def __init__(self, code: int, message: str, reason: str = "invalid"):
        super().__init__(message)
        self.code, self.message, self.reason = code, message, reason


def error_body(code: int, message: str, reason: str = "invalid") -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "status": _STATUS_TEXT.get(code, "UNKNOWN"),
            "errors": [{"message": message, "domain": "global", "reason": reason}],
        }
    }


def not_found(path: str) -> ApiError:
    return ApiError(404, f"The resource '{path}' was not found", "notFound")


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
            # JSON nulls mean "not set" to the real APIs (Packer sends some): drop them, as their parser does.
            status, payload = dispatch(self.command, url.path, params, discovery.without_nulls(body))
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


class RoutedApi:
    """Routing and strict validation shared by the fakes: each request is recorded, may meet an
    injected 429/5xx burst, is routed to `_<resource>_<method>` (the last part of a dotted
    resource) and checked against the discovery document `API` before the handler runs.

    A fake sets API, NAME, _ROUTES [(verb, path regex, resource, method)], self._lock,
    self.requests, self.faults.http_burst; it may override `_admit` (after validation) and
    `_lost_response` (after the handler)."""

    API: str
    NAME: str
    _ROUTES: list[tuple[str, str, str, str]]

    def _route(self, verb: str, path: str) -> tuple[str, str, dict[str, str]] | None:
        for route_verb, pattern, resource, name in self._ROUTES:
            match = re.fullmatch(pattern, path)
            if route_verb == verb and match:
                return resource, name, match.groupdict()
        return None

    def _admit(self, resource: str, name: str, args: dict[str, str]) -> None:
        """What the service refuses before the method runs (wrong project, missing permission)."""

    def _lost_response(self, name: str) -> bool:
        """Whether to lose the response of a method that was performed."""
        return False

    def _dispatch(self, verb: str, path: str, params: dict[str, str], body: Any) -> tuple[int, dict[str, Any]]:
        with self._lock:  # type: ignore[attr-defined]
            self.requests.append((verb, path, body))  # type: ignore[attr-defined]
            burst = self.faults.http_burst  # type: ignore[attr-defined]
            if burst:
                code = burst.pop(0)
                return code, error_body(code, "injected: the service is busy, try again", "backendError")
            route = self._route(verb, path)
            if route is None:
                return 404, error_body(404, f"fake {self.NAME}: no route for {verb} {path}", "notFound")
            resource, name, args = route
            try:
                errors = discovery.check_params(resource, name, {**params, **args}, api=self.API)
                spec = discovery.method(resource, name, api=self.API)
                if "request" in spec:  # the body schema the discovery document names for this method
                    int_enums = "enum-encoding=int" in params.get("$alt", "")
                    errors += discovery.check_body(spec["request"]["$ref"], body or {}, spec["id"], self.API, int_enums)
                if errors:
                    raise ApiError(400, "; ".join(errors))
                self._admit(resource, name, args)
                result = getattr(self, f"_{resource.rsplit('.', 1)[-1]}_{name}")(params=params, body=body, **args)
            except ApiError as exc:
                return exc.code, error_body(exc.code, exc.message, exc.reason)
            if self._lost_response(name):
                return 503, error_body(503, f"injected: the {name} was performed but its response was lost", "backendError")
            return 200, result
