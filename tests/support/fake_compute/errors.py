"""Errors as the Compute API returns them: an HTTP status, a message, a reason in `errors[]`
(domain and reason, the legacy shape) and, where the real API gives one, a google.rpc.ErrorInfo
in `details[]` (what google-api-core exposes as `exc.reason`)."""

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

# Synchronous errors a test can inject by reason (Faults.reply_errors): status, domain, message,
# and the ErrorInfo reason the real API adds. Shapes as Compute answers them.
REASONS: dict[str, tuple[int, str, str, str]] = {
    "rateLimitExceeded": (
        403,
        "usageLimits",
        "Quota exceeded for quota group 'default' and limit 'Queries per user per 100 seconds' of service "
        "'compute.googleapis.com' for consumer 'project_number:123456'.",
        "RATE_LIMIT_EXCEEDED",
    ),
    # Only the legacy errors[] shape: a caller must read errors[].reason to tell quota from permission.
    "quotaExceeded": (403, "usageLimits", "Quota 'CPUS' exceeded.  Limit: 8.0 in region europe-west4.", ""),
    "resourceNotReady": (400, "global", "The resource '{target}' is not ready", ""),
    "forbidden": (403, "global", "Required 'compute.{method}' permission for '{target}'", "IAM_PERMISSION_DENIED"),
    "backendError": (503, "global", "Internal error. Please try again or contact Google Support.", ""),
}


class ApiError(Exception):
    def __init__(self, code: int, message: str, reason: str = "invalid", domain: str = "global", info_reason: str = ""):
        super().__init__(message)
        self.code, self.message, self.reason = code, message, reason
        self.domain, self.info_reason = domain, info_reason


def by_reason(reason: str, method: str = "", target: str = "") -> ApiError:
    code, domain, message, info_reason = REASONS[reason]
    return ApiError(code, message.format(method=method, target=target), reason, domain, info_reason)


def error_body(code: int, message: str, reason: str = "invalid", domain: str = "global", info_reason: str = "") -> dict[str, Any]:
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


def bad_filter(expression: str) -> ApiError:
    return ApiError(400, f"Invalid value for field 'filter': '{expression}'. Invalid list filter expression.")
