"""OS Login for the image-test VM, where the org policy compute.requireOsLogin makes VMs ignore
`ssh-keys` metadata (https://cloud.google.com/compute/docs/oslogin).

The release identity imports the test's throw-away public key into its own login profile
(users.importSshPublicKey), logs in as the profile's primary POSIX username, and deletes the key
when the test ends. The identity needs roles/compute.osAdminLogin (the checks use sudo).
Packer does the same for the bake with `use_os_login` (packer/mlbatch.pkr.hcl).
"""

from __future__ import annotations

import urllib.parse

from mlbatch.core.errors import MlbatchError, PermissionDenied
from mlbatch.core.settings import Settings

API = "https://oslogin.googleapis.com"


def _session(settings: Settings, credentials):
    from google.auth.credentials import AnonymousCredentials
    from google.auth.transport.requests import AuthorizedSession

    # The fake OS Login API of the test profile takes no token (as the fake Compute API).
    return AuthorizedSession(AnonymousCredentials() if settings.oslogin_endpoint else credentials)


def _url(settings: Settings, path: str) -> str:
    return f"{settings.oslogin_endpoint or API}/v1/{path}"


def _check(response, what: str) -> dict:
    if response.status_code == 403:
        raise PermissionDenied(f"{what}: {response.text[:500]} (the release identity needs roles/compute.osAdminLogin)")
    if response.status_code >= 400:
        raise MlbatchError(f"{what}: HTTP {response.status_code}: {response.text[:500]}")
    return response.json() if response.content else {}


def import_key(settings: Settings, credentials, account: str, public_key: str) -> tuple[str, str]:
    """Import `public_key` into `account`'s login profile; return (POSIX username, key fingerprint)."""
    user = urllib.parse.quote(f"users/{account}", safe="/")
    response = _session(settings, credentials).post(
        _url(settings, f"{user}:importSshPublicKey"), params={"projectId": settings.project}, json={"key": public_key.strip()}
    )
    profile = _check(response, f"importing the image test's ssh key into the OS Login profile of {account}")["loginProfile"]
    accounts = [a for a in profile.get("posixAccounts", []) if a.get("primary")]
    keys = profile.get("sshPublicKeys", {})
    fingerprints = [fp for fp, key in keys.items() if key.get("key", "").strip() == public_key.strip()]
    if not accounts or not fingerprints:
        raise MlbatchError(f"the OS Login profile of {account} has no primary POSIX account or lacks the imported key")
    return accounts[0]["username"], fingerprints[0]


def delete_key(settings: Settings, credentials, account: str, fingerprint: str) -> None:
    name = urllib.parse.quote(f"users/{account}/sshPublicKeys/{fingerprint}", safe="/")
    response = _session(settings, credentials).delete(_url(settings, name))
    if response.status_code != 404:  # already gone
        _check(response, f"deleting the image test's ssh key from the OS Login profile of {account}")
