"""Errors as the Compute API returns them: an HTTP status, a message and a reason."""

from __future__ import annotations

from typing import Any

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
