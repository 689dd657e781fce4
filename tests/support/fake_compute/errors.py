"""Errors as the Compute API returns them: an HTTP status, a message, a reason in `errors[]`
(domain and reason, the legacy shape) and, where the real API gives one, a google.rpc.ErrorInfo
in `details[]` (what google-api-core exposes as `exc.reason`). The shapes themselves are
shared by the fakes (tests/support/fake_http.py); this module holds Compute's reasons."""

from __future__ import annotations

from tests.support.fake_http import ApiError, error_body, not_found

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


def by_reason(reason: str, method: str = "", target: str = "") -> ApiError:
    code, domain, message, info_reason = REASONS[reason]
    return ApiError(code, message.format(method=method, target=target), reason, domain, info_reason)


def bad_filter(expression: str) -> ApiError:
    return ApiError(400, f"Invalid value for field 'filter': '{expression}'. Invalid list filter expression.")


__all__ = ["REASONS", "ApiError", "bad_filter", "by_reason", "error_body", "not_found"]
