"""What core and the agent need of Google's APIs, free of any client and of settings: Application
Default Credentials with the one message a user gets without them, and the one retry predicate.
The rest of the Google Cloud plumbing (clients, the error translator, the operation waiter) is
mlbatch.gcp, built on this; core imports nothing outside core, so these pieces live here.

Credentials: google-auth looks, in order, at GOOGLE_APPLICATION_CREDENTIALS (a service account
key file, or a workload identity federation configuration), at gcloud's application-default
login, and at the metadata server of a Google Cloud machine
(https://cloud.google.com/docs/authentication/application-default-credentials). Without any of
them every gcp task stops with exit 111 and one message naming those ways, before it opens or
creates anything: the GCS bucket and every client ask `default_credentials` when they are made.
The access token is also the registry login: Artifact Registry takes it as the password of user
`oauth2accesstoken`, so no gcloud nor credential helper is needed.

Retries: 429 and 5xx, connection errors and timeouts (of requests, which the REST clients use,
and of urllib, which the agent uses), and the errors whose reason says "try again" whatever
their status: Compute answers a rate limit with 403 `rateLimitExceeded`, and a resource another
operation holds with 400 `resourceNotReady`.
"""

from __future__ import annotations

import contextlib
import urllib.error
from collections.abc import Iterator
from typing import Any

from mlbatch.core.errors import MlbatchError, PermissionDenied
from mlbatch.core.scrub import remember, scrub

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
REGISTRY_USER = "oauth2accesstoken"  # Artifact Registry's user name for an OAuth access token
DOCS = "https://cloud.google.com/docs/authentication/provide-credentials-adc"
WAYS = (
    "run `gcloud auth application-default login` (a person at a workstation); "
    "or set GOOGLE_APPLICATION_CREDENTIALS to a service account key file or to a workload identity federation "
    "configuration (CI outside Google Cloud); "
    "or run on Google Cloud with a service account attached, which the metadata server provides"
)
TRANSIENT_STATUS = (429, 500, 502, 503, 504)
# Reasons (errors[].reason or the ErrorInfo reason) worth retrying whatever their status.
RETRY_REASONS = frozenset(
    {"rateLimitExceeded", "userRateLimitExceeded", "RATE_LIMIT_EXCEEDED", "resourceNotReady", "backendError"}
)


# --- credentials --------------------------------------------------------------------------
@contextlib.contextmanager
def credentials_required() -> Iterator[None]:
    """google-auth's errors about credentials -> the mlbatch error a user can act on (111),
    with no traceback: missing ones, ones the token endpoint refuses, an unreachable endpoint."""
    import google.auth.exceptions as auth_errors

    try:
        yield
    except auth_errors.DefaultCredentialsError as exc:
        # The first sentence says what google-auth found wrong (a named key file that is absent,
        # a file that is not a credential); its pointer to the docs is replaced by ours.
        found = str(exc).split(". To set up")[0].rstrip(".")
        found = "none found" if found.startswith("Your default credentials were not found") else found
        raise PermissionDenied(f"no Application Default Credentials ({found}). To provide them: {WAYS} (see {DOCS})") from None
    except auth_errors.RefreshError as exc:
        raise PermissionDenied(
            f"the token endpoint refused the Application Default Credentials: {scrub(str(exc))} "
            "(an expired or revoked login: run `gcloud auth application-default login` again, or check the key)"
        ) from None
    except auth_errors.TransportError as exc:
        raise MlbatchError(
            f"cannot reach the token endpoint for the Application Default Credentials: {scrub(str(exc))}"
        ) from None


def default_credentials(scopes: tuple[str, ...] = (SCOPE,)) -> tuple[Any, str | None]:
    """ADC and their project (None when they name none), with a fresh access token: credentials
    that cannot give one fail here, with what to do, not at the first API call."""
    import google.auth
    import google.auth.transport.requests

    with credentials_required():
        found, project = google.auth.default(scopes=list(scopes))
        found.refresh(google.auth.transport.requests.Request())
    remember(found.token)  # masked in every message quoting another program (core.scrub)
    return found, project


def refreshed(current: Any) -> Any:
    """The same credentials, refreshed when the token has expired (tokens last an hour; a bake may take longer)."""
    if not current.valid:
        import google.auth.transport.requests

        with credentials_required():
            current.refresh(google.auth.transport.requests.Request())
        remember(current.token)  # masked in every message quoting another program (core.scrub)
    return current


def principal(current: Any) -> str:
    """Who the credentials are, for messages: a service account's email, or a generic name."""
    return getattr(current, "service_account_email", "") or "the caller (Application Default Credentials)"


# --- retries ------------------------------------------------------------------------------


def reasons(exc: Any) -> set[str]:
    """Every reason a google-api-core error carries: errors[].reason (the legacy shape) and the ErrorInfo reason."""
    found = {str(e.get("reason", "")) for e in exc.errors if isinstance(e, dict)}
    if exc.reason:
        found.add(exc.reason)
    return found - {""}


def transient(exc: BaseException) -> bool:
    """THE retry predicate, for google-api-core's errors, requests' (REST clients) and urllib's (the agent)."""
    import requests
    from google.api_core import exceptions as gexc

    if isinstance(exc, gexc.GoogleAPICallError):
        return exc.code in TRANSIENT_STATUS or bool(reasons(exc) & RETRY_REASONS)
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code in TRANSIENT_STATUS
    return isinstance(exc, requests.ConnectionError | requests.Timeout | urllib.error.URLError | ConnectionError | TimeoutError)


# Seconds of the first wait between tries of a Google API call (it doubles, with jitter, up to the
# longest); read at each call, so the unit tests shorten it as they do the controller's waits.
BACKOFF_FIRST = 0.2


def retry(deadline: float, initial: float | None = None, maximum: float = 5.0) -> Any:
    """Bounded retries with exponential backoff (from BACKOFF_FIRST unless `initial`), of transient errors only."""
    from google.api_core import retry as gretry

    first = BACKOFF_FIRST if initial is None else initial
    return gretry.Retry(predicate=transient, initial=first, maximum=maximum, multiplier=2.0, timeout=deadline)
