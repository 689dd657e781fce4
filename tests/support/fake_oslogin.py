"""A fake Cloud OS Login API (oslogin.googleapis.com/v1) on loopback, beside the fake Compute API.

Where the org policy `compute.requireOsLogin` is enforced, VMs run with OS Login: "Compute
Engine ... doesn't accept SSH keys that are stored in metadata" (OS Login docs,
https://cloud.google.com/compute/docs/oslogin). A caller instead imports its public key into its
own login profile (users.importSshPublicKey) and logs in as the POSIX username the profile
returns; a service account's is `sa_` + its numeric unique id (OS Login docs, "Connect as a
service account"). With `FakeCompute.os_login` set to this fake, guests boot with the users and
keys of these profiles instead of the `ssh-keys` metadata (tests/support/fake_vm/guest.py).

Routes, checked against oslogin.v1.json (google-api-python-client's discovery document):
    POST   /v1/users/{user}:importSshPublicKey   body SshPublicKey {key, expirationTimeUsec?}
           -> ImportSshPublicKeyResponse {loginProfile}
    GET    /v1/users/{user}/loginProfile         -> LoginProfile
    DELETE /v1/users/{user}/sshPublicKeys/{fingerprint} -> {}
A key's fingerprint is the hex SHA-256 of the key as given (as the profile reports it).

Where it is kinder than the cloud: a guest learns the profiles' keys when it boots (the real
guest asks the metadata server at every login), so import before you create the VM, as Packer
and mlbatch do; every profile gets passwordless sudo (roles/compute.osAdminLogin assumed).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import urllib.parse
from typing import Any

from tests.support.discovery import document
from tests.support.loopback import JsonServer

_IMPORT = re.compile(r"^/v1/users/([^/:]+):importSshPublicKey$")
_PROFILE = re.compile(r"^/v1/users/([^/:]+)/loginProfile$")
_KEY = re.compile(r"^/v1/users/([^/:]+)/sshPublicKeys/([0-9a-f]{64})$")
SSH_PUBLIC_KEY_FIELDS = set(document("oslogin.v1")["schemas"]["SshPublicKey"]["properties"])


def _error(status: int, message: str, reason: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"code": status, "message": message, "status": reason}}


class FakeOsLogin:
    def __init__(self) -> None:
        self.profiles: dict[str, dict[str, str]] = {}  # account email -> fingerprint -> key
        self._ids: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server = JsonServer(self._respond)
        self.endpoint = self._server.url

    def start(self) -> FakeOsLogin:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def username(self, email: str) -> str:
        with self._lock:
            unique_id = self._ids.setdefault(email, 100000000000000000000 + len(self._ids))
        return f"sa_{unique_id}" if email.endswith(".gserviceaccount.com") else re.sub(r"[^a-z0-9_]", "_", email.lower())

    def authorized_keys(self) -> str:
        """`user:key` lines, the form the fake guest's boot reads: what OS Login lets in right now."""
        with self._lock:
            profiles = {email: dict(keys) for email, keys in self.profiles.items()}
        return "\n".join(f"{self.username(email)}:{key}" for email, keys in profiles.items() for key in keys.values())

    def _profile(self, email: str) -> dict[str, Any]:
        with self._lock:
            keys = dict(self.profiles.get(email, {}))
        username = self.username(email)
        return {
            "name": email,
            "posixAccounts": [
                {
                    "primary": True,
                    "username": username,
                    "uid": str(1000 + int(username[3:]) % 60000) if username.startswith("sa_") else "1001",
                    "gid": "1000",
                    "homeDirectory": f"/home/{username}",
                    "operatingSystemType": "LINUX",
                    "accountId": "mlbatch-test",
                }
            ],
            "sshPublicKeys": {
                fp: {"key": key, "fingerprint": fp, "name": f"users/{email}/sshPublicKeys/{fp}"} for fp, key in keys.items()
            },
        }

    def _respond(self, verb: str, path: str, headers, raw: bytes) -> tuple[int, dict[str, Any]]:
        route = urllib.parse.unquote(path.split("?", 1)[0])
        if verb == "POST" and (match := _IMPORT.match(route)):
            body = json.loads(raw or b"{}")
            unknown = set(body) - SSH_PUBLIC_KEY_FIELDS
            if unknown or not isinstance(body.get("key"), str) or not body["key"].startswith(("ssh-", "ecdsa-")):
                return _error(400, f"Invalid SshPublicKey: {sorted(unknown) or body.get('key')!r}", "INVALID_ARGUMENT")
            key = body["key"].strip()
            with self._lock:
                self.profiles.setdefault(match[1], {})[hashlib.sha256(key.encode()).hexdigest()] = key
            return 200, {"loginProfile": self._profile(match[1])}
        if verb == "GET" and (match := _PROFILE.match(route)):
            return 200, self._profile(match[1])
        if verb == "DELETE" and (match := _KEY.match(route)):
            with self._lock:
                if self.profiles.get(match[1], {}).pop(match[2], None) is None:
                    return _error(404, f"SSH public key {match[2]} not found.", "NOT_FOUND")
            return 200, {}
        return _error(404, f"no route for {verb} {route}", "NOT_FOUND")
