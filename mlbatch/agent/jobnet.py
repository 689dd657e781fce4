"""Where a job container's network goes, so that it never reaches the VM's credentials
(docs/architecture.md, "Jobs and the VM's credentials").

The metadata server hands the VM's token (the runner's: it may write runs/ and read every
release) to any process that can reach 169.254.169.254 with `Metadata-Flavor: Google`. A
container on the host's network is such a process; so is one on a Docker bridge, whose
traffic the host routes and masquerades like its own. Hence:

- a job that declares neither `network: true` nor `google_access` gets no network at all
  (`network_mode: none`: only its own loopback), which holds wherever it runs;
- on a VM (GCE or Batch), any other job runs on the `mlbatch-jobs` bridge network
  (inter-container traffic off), once the agent has made sure the host rejects forwarded
  traffic to the metadata server: `iptables -I DOCKER-USER -d 169.254.169.254/32 -j REJECT`.
  DOCKER-USER is the chain Docker leaves to the administrator and evaluates before its own
  for traffic it forwards (https://docs.docker.com/engine/network/packet-filtering-firewalls/);
  a container's packets to the metadata server are forwarded traffic, the agent's own (from
  the host) are not. Docker's embedded DNS answers the containers of a user-defined network
  from the host, so name lookups (also served at 169.254.169.254 on GCE) keep working.
  `--add-host metadata.google.internal:...` would not do: the server is reached by its IP.
  If the rule cannot be ensured, the job is not started (fail closed). The agent serves a
  job's own token on the bridge's gateway, to the container's address alone;
- on a local instance (the local profile: no VM, so no VM credentials), any other job shares
  the host's network, as the instance itself does (`--network host`), and its token, when
  there is one to make, is served on the host's loopback. The local profile keeps nothing of
  the machine it runs on from such a job: it reaches what the host reaches.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import shutil
import subprocess
import urllib.parse
from typing import TYPE_CHECKING, Any

from mlbatch.core.errors import MlbatchError
from mlbatch.core.names import managed_labels
from mlbatch.core.scrub import scrub

if TYPE_CHECKING:
    from mlbatch.agent.tokens import TokenServer

NETWORK = "mlbatch-jobs"
NO_NETWORK = "none"
HOST_NETWORK = "host"
LOOPBACK = "127.0.0.1"  # where a local instance serves a job's token: the job shares the host's network
METADATA_IP = "169.254.169.254"
_RULE = ("DOCKER-USER", "-d", f"{METADATA_IP}/32", "-j", "REJECT")


def jobs_network(client) -> tuple[str, str]:
    """The bridge network jobs with a network run on (created once per engine), and its
    gateway: the host's address on it, where the agent serves a job its token."""
    import docker.errors

    try:
        network = client.networks.get(NETWORK)
    except docker.errors.NotFound:
        try:
            network = client.networks.create(
                NETWORK,
                driver="bridge",
                options={"com.docker.network.bridge.enable_icc": "false"},  # jobs never reach each other
                labels=managed_labels(),
            )
        except docker.errors.APIError as exc:  # another agent created it first
            if exc.status_code != 409:
                raise
            network = client.networks.get(NETWORK)
        network.reload()
    configs = network.attrs.get("IPAM", {}).get("Config") or []
    gateway = next((c["Gateway"] for c in configs if c.get("Gateway") and ":" not in c["Gateway"]), "")
    if not gateway:
        raise MlbatchError(f"the Docker network {NETWORK} has no IPv4 gateway: {configs}")
    return NETWORK, gateway


def metadata_is_local(host: str) -> bool:
    """Whether the metadata server named by GCE_METADATA_HOST is on the host's loopback (a
    test's fake): a bridge never reaches the host's loopback, so no rule is needed for it."""
    address = urllib.parse.urlsplit(f"//{host}").hostname or ""
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def block_metadata_server() -> None:
    """On a VM: make sure containers' traffic to the metadata server is rejected (idempotent).
    Raises MlbatchError when it cannot be made sure: the caller does not start the job."""
    host = os.environ.get("GCE_METADATA_HOST", "")
    if host and metadata_is_local(host):
        return
    iptables = shutil.which("iptables")
    if iptables is None:
        raise MlbatchError("cannot keep the job off the metadata server: iptables is not installed on this VM")
    if subprocess.run([iptables, "-C", *_RULE], capture_output=True).returncode == 0:
        return
    inserted = subprocess.run([iptables, "-I", *_RULE], capture_output=True, text=True)
    if inserted.returncode != 0:
        raise MlbatchError(
            f"cannot keep the job off the metadata server: iptables -I {' '.join(_RULE)}: {scrub(inserted.stderr.strip())}"
        )


@dataclasses.dataclass
class JobNetwork:
    """What a job container is created with (`network_mode` or `network`), what its
    environment gains, and the server of its token, if it has one."""

    arguments: dict[str, Any]
    environment: dict[str, str] = dataclasses.field(default_factory=dict)
    token_server: TokenServer | None = None

    def admit(self, container) -> None:
        """Once the container has started: its address is the only client its token server answers."""
        if self.token_server is None:
            return
        network = self.arguments.get("network")
        if network is None:  # the host's network: the job's requests come from the host's loopback
            self.token_server.allow(LOOPBACK)
            return
        container.reload()
        self.token_server.allow(container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"])
