"""OS Login for the image-test VM, where the org policy compute.requireOsLogin makes VMs ignore
`ssh-keys` metadata (https://cloud.google.com/compute/docs/oslogin).

The release identity imports the test's throw-away public key into its own login profile
(users.importSshPublicKey), logs in as the profile's primary POSIX username, and deletes the key
when the test ends. The identity needs roles/compute.osAdminLogin (the checks use sudo).
Packer does the same for the bake with `use_os_login` (packer/mlbatch.pkr.hcl).
"""

from __future__ import annotations

import urllib.parse

from mlbatch.core.errors import MlbatchError
from mlbatch.gcp import errors
from mlbatch.gcp.clients import OSLOGIN, Clients

GRANT = "the release identity needs roles/compute.osAdminLogin"


def _check(response, what: str) -> dict:
    """The response's JSON, or its error as the mlbatch error it means (the one translator)."""
    from google.api_core import exceptions as gexc

    if response.status_code >= 400:
        raise errors.translate(gexc.from_http_response(response), what, GRANT)
    return response.json() if response.content else {}


def import_key(clients: Clients, account: str, public_key: str) -> tuple[str, str]:
    """Import `public_key` into `account`'s login profile; return (POSIX username, key fingerprint)."""
    session, api = clients.session(clients.settings.oslogin_endpoint, OSLOGIN)
    user = urllib.parse.quote(f"users/{account}", safe="/")
    response = session.post(
        f"{api}/v1/{user}:importSshPublicKey", params={"projectId": clients.settings.project}, json={"key": public_key.strip()}
    )
    profile = _check(response, f"importing the image test's ssh key into the OS Login profile of {account}")["loginProfile"]
    accounts = [a for a in profile.get("posixAccounts", []) if a.get("primary")]
    keys = profile.get("sshPublicKeys", {})
    fingerprints = [fp for fp, key in keys.items() if key.get("key", "").strip() == public_key.strip()]
    if not accounts or not fingerprints:
        raise MlbatchError(f"the OS Login profile of {account} has no primary POSIX account or lacks the imported key")
    return accounts[0]["username"], fingerprints[0]


def delete_key(clients: Clients, account: str, fingerprint: str) -> None:
    session, api = clients.session(clients.settings.oslogin_endpoint, OSLOGIN)
    name = urllib.parse.quote(f"users/{account}/sshPublicKeys/{fingerprint}", safe="/")
    response = session.delete(f"{api}/v1/{name}")
    if response.status_code != 404:  # already gone
        _check(response, f"deleting the image test's ssh key from the OS Login profile of {account}")
