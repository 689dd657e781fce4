"""Application Default Credentials for the gcp release, via google-auth: a key file in
GOOGLE_APPLICATION_CREDENTIALS, a workload identity federation config, or the metadata
server. The access token is also the registry login: Artifact Registry takes it as the
password of user `oauth2accesstoken`, so no gcloud and no credential helper is needed."""

from __future__ import annotations

from mlbatch.core.errors import PermissionDenied

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
REGISTRY_USER = "oauth2accesstoken"  # Artifact Registry's user name for an OAuth access token


def credentials():
    """ADC with a fresh access token, or PermissionDenied saying how to provide them."""
    import google.auth
    import google.auth.exceptions
    import google.auth.transport.requests

    try:
        found, _ = google.auth.default(scopes=[SCOPE])
        found.refresh(google.auth.transport.requests.Request())
    except google.auth.exceptions.DefaultCredentialsError as exc:
        raise PermissionDenied(
            f"no Application Default Credentials ({exc}): set GOOGLE_APPLICATION_CREDENTIALS to the release "
            "service account's key file, or run where workload identity or a metadata server provides them"
        ) from None
    except google.auth.exceptions.RefreshError as exc:
        raise PermissionDenied(f"the token endpoint refused the Application Default Credentials: {exc}") from None
    return found


def refreshed(current):
    """The same credentials, refreshed when the token has expired (tokens last an hour; a bake may take longer)."""
    if not current.valid:
        import google.auth.transport.requests

        current.refresh(google.auth.transport.requests.Request())
    return current


def principal(current) -> str:
    return getattr(current, "service_account_email", "") or "the release identity"
