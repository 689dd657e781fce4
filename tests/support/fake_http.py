"""What the fake Google APIs share: errors as the APIs return them (an HTTP status, a message
and a reason), a threaded loopback server that hands each request (verb, path, query, JSON
body) to the fake and sends its (status, JSON) back, and strict routing (RoutedApi)."""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

from tests.support import discovery
from tests.support.loopback import JsonServer

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
    def __init__(self, code: int, message: str, reason: str = "invalid", domain: str = "global", info_reason: str = ""):
        super().__init__(message)
        self.code, self.message, self.reason = code, message, reason
        self.domain, self.info_reason = domain, info_reason


def error_body(code: int, message: str, reason: str = "invalid", domain: str = "global", info_reason: str = "") -> dict[str, Any]:
    """The legacy `errors[]` shape (domain, reason) and, where the real API gives one, a
    google.rpc.ErrorInfo in `details[]` (what google-api-core exposes as `exc.reason`)."""
    error: dict[str, Any] = {
        "code": code,
        "message": message,
        "status": _STATUS_TEXT.get(code, "UNKNOWN"),
        "errors": [{"message": message, "domain": domain, "reason": reason}],
    }
    if info_reason:
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": info_reason,
                "domain": "googleapis.com",
                "metadata": {"service": "compute.googleapis.com"},
            }
        ]
    return {"error": error}


def not_found(path: str) -> ApiError:
    return ApiError(404, f"The resource '{path}' was not found", "notFound")


Dispatch = Callable[[str, str, dict[str, str], Any], tuple[int, dict[str, Any]]]


def json_server(dispatch: Dispatch, invalid_json: dict[str, Any]) -> JsonServer:
    """The loopback server with requests parsed as the REST fakes want them: path, query
    parameters and the JSON body, or `invalid_json` (400) when the body is not JSON."""

    def respond(verb: str, target: str, headers: Any, raw: bytes) -> tuple[int, dict[str, Any]]:
        url = urllib.parse.urlsplit(target)
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            return 400, invalid_json
        # JSON nulls mean "not set" to the real APIs (Packer sends some): drop them, as their parser does.
        return dispatch(verb, url.path, dict(urllib.parse.parse_qsl(url.query)), discovery.without_nulls(body))

    return JsonServer(respond)


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

    def _validate(self, resource: str, name: str, params: dict[str, str], args: dict[str, str], body: Any) -> list[str]:
        """The request against the discovery document: parameters, and the body schema the method names."""
        errors = discovery.check_params(resource, name, {**params, **args}, api=self.API)
        spec = discovery.method(resource, name, api=self.API)
        if "request" in spec:
            int_enums = "enum-encoding=int" in params.get("$alt", "")
            errors += discovery.check_body(spec["request"]["$ref"], body or {}, spec["id"], self.API, int_enums)
        return errors

    def _received(self, method_id: str, path: str, params: dict[str, str]) -> None:
        """Each routed request, before validation (a fake may count calls or inject errors here)."""

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
            method_id = f"{resource}.{name}"
            try:
                self._received(method_id, path, params)
                errors = self._validate(resource, name, params, args, body)
                if errors:
                    raise ApiError(400, "; ".join(errors))
                self._admit(resource, name, args)
                handler = getattr(self, f"_{resource.rsplit('.', 1)[-1].replace(':', '_')}_{name}")
                result = handler(params=params, body=body, **args)
            except ApiError as exc:
                return exc.code, error_body(exc.code, exc.message, exc.reason, exc.domain, exc.info_reason)
            if self._lost_response(name):
                return 503, error_body(503, f"injected: the {name} was performed but its response was lost", "backendError")
            return 200, result
