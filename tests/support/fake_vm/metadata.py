"""The metadata server of one fake VM (GCE_METADATA_HOST points at it), shared by the fake
Compute API (its instances) and the fake Cloud Batch API (its task VMs, which are Compute
Engine VMs too).

What it answers, as https://cloud.google.com/compute/docs/metadata/predefined-metadata-keys
and https://cloud.google.com/compute/docs/metadata/querying-metadata describe it:
- every request needs `Metadata-Flavor: Google` (else 403); every answer carries it;
- `instance/attributes/KEY`: the VM's custom metadata; a key the VM does not carry is 404;
- `instance/name`, `instance/id`, `instance/zone` (projects/NUMBER/zones/ZONE),
  `project/project-id`, `instance/preempted` (TRUE once a Spot preemption began);
- `instance/service-accounts/`: a directory of the service accounts attached to the VM, each
  with its `email` and `token`. A VM created without one (no serviceAccounts in its insert
  body, gcloud's --no-service-account: the image-test VM) has none in that directory, so
  `instance/service-accounts/default/token` and `.../email` are 404, like any key the server
  does not have: nothing on such a VM gets an access token
  (https://cloud.google.com/compute/docs/access/service-accounts: applications on a VM
  authenticate as its attached service account).
  The token is one of the VM's own, the same for every request while the VM lives (the real
  server hands out a cached token until shortly before it expires): `ya29.vm-` and random
  characters, recorded with its account and the VM's scopes in the fake's `vm_tokens`
  (VmTokens), so that a fake of another service can tell whose it is and what its scopes allow
  (a token "is limited by the access scopes of the VM",
  https://cloud.google.com/compute/docs/access/service-accounts#accesscopesiam) and a test can
  look for it where it must not be.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import secrets
import threading
import urllib.parse
from typing import Any, Protocol

from tests.support.loopback import send_metadata, start_serving


@dataclasses.dataclass
class MetadataFaults:
    """What a test may break in the metadata servers of a fake (its Faults extend this)."""

    metadata_unavailable: int = 0  # the next N metadata requests fail with 503 (the server is still starting)
    corrupt_run_spec: bool = False  # the run spec attribute is not JSON (an agent bug or a bad controller)


class MetadataVm(Protocol):
    """What the metadata server reads of a VM, each time it answers (values change: preempted)."""

    name: str
    zone: str
    preempted: bool

    @property
    def instance_id(self) -> str: ...

    @property
    def service_account(self) -> str:
        """The email of the VM's service account; "" for a VM created without one."""
        ...

    @property
    def scopes(self) -> tuple[str, ...]:
        """The access scopes of that account on the VM."""
        ...

    def metadata(self) -> dict[str, str]: ...


@dataclasses.dataclass(frozen=True)
class IssuedToken:
    account: str
    scopes: tuple[str, ...]
    vm: str  # the name of the VM whose metadata server gave it


class VmTokens:
    """The access tokens the metadata servers of one fake's VMs gave out: one per VM, kept after
    the VM is gone (a token outlives its VM until it expires)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_vm: dict[tuple[str, str], str] = {}
        self.issued: dict[str, IssuedToken] = {}  # token -> whose

    def issue(self, vm: MetadataVm) -> str:
        with self._lock:
            key = (vm.name, vm.service_account)
            if key not in self._by_vm:
                token = "ya29.vm-" + secrets.token_urlsafe(24)
                self._by_vm[key] = token
                self.issued[token] = IssuedToken(vm.service_account, tuple(vm.scopes), vm.name)
            return self._by_vm[key]

    def of(self, vm_name: str) -> list[str]:
        """The tokens the VM named `vm_name` was given (a test looks for them where they must not be)."""
        with self._lock:
            return [token for token, issued in self.issued.items() if issued.vm == vm_name]


def metadata_server(fake: Any, vm: MetadataVm) -> http.server.ThreadingHTTPServer:
    """Start `vm`'s metadata server; `fake` gives `project`, `_lock`, `faults` (MetadataFaults)
    and `vm_tokens` (VmTokens)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.headers.get("Metadata-Flavor") != "Google":
                return self._reply(403, "Missing Metadata-Flavor:Google header", "text/plain")
            with fake._lock:
                unavailable = fake.faults.metadata_unavailable > 0
                fake.faults.metadata_unavailable -= 1 if unavailable else 0
            if unavailable:  # early in boot the metadata server may not answer yet
                return self._reply(503, "Service Unavailable", "text/plain")
            path = urllib.parse.urlsplit(self.path).path.removeprefix("/computeMetadata/v1/")
            attrs = vm.metadata()
            if fake.faults.corrupt_run_spec and "mlbatch-run-spec" in attrs:
                attrs["mlbatch-run-spec"] = attrs["mlbatch-run-spec"][: len(attrs["mlbatch-run-spec"]) // 2]
            if path.startswith("instance/attributes/") and path.split("/", 2)[2] in attrs:
                return self._reply(200, attrs[path.split("/", 2)[2]], "text/plain")
            values = {
                "instance/name": vm.name,
                "instance/zone": f"projects/123456/zones/{vm.zone}",
                "project/project-id": fake.project,
                "instance/id": vm.instance_id,
                # TRUE once a preemption began (a max run duration or a delete leaves it FALSE).
                "instance/preempted": "TRUE" if vm.preempted else "FALSE",
                "instance/service-accounts/": f"default/\n{vm.service_account}/\n" if vm.service_account else "",
            }
            if path in values:
                return self._reply(200, values[path], "text/plain")
            account = vm.service_account
            if account and path.startswith("instance/service-accounts/default/token"):
                token = {"access_token": fake.vm_tokens.issue(vm), "expires_in": 3600, "token_type": "Bearer"}
                return self._reply(200, json.dumps(token), "application/json")
            if account and path.startswith("instance/service-accounts/default/email"):
                return self._reply(200, account, "text/plain")
            return self._reply(404, "Not Found", "text/plain")

        def _reply(self, status, text, content_type):
            send_metadata(self, status, text, content_type)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    start_serving(server, f"metadata-{vm.name}")
    return server
