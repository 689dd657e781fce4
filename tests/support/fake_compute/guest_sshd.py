"""A minimal VM-like guest for instances booted from an OS image (debian-cloud/debian-12, or an
image baked from one): a container on the host network whose sshd listens on 127.0.0.1 at the
fake's guest_ssh_port and admits the users and keys of the instance's `ssh-keys` metadata with
passwordless sudo, as the Google guest agent does on a real VM. No systemd runs in it.
"""

from __future__ import annotations

import subprocess
import threading
from typing import Any

from tests.support.fake_compute.state import CONTAINER_LABEL, FakeInstance

# What a Debian GCE image has that debian:bookworm-slim lacks, for Packer's communicator.
GUEST_DOCKERFILE = """\
FROM {base}
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \\
      openssh-server sudo ca-certificates python3 && rm -rf /var/lib/apt/lists/* /etc/ssh/ssh_host_*
"""

# The guest agent's part: users from `ssh-keys` metadata ("user:key-type key comment" lines).
_GUEST_INIT = r"""
set -eu
printf '%s\n' "$SSH_KEYS" | while IFS= read -r line; do
  user=${line%%:*}; key=${line#*:}
  [ -n "$user" ] && [ "$user" != "$line" ] || continue
  id "$user" >/dev/null 2>&1 || useradd -m -s /bin/bash "$user"
  home=$(getent passwd "$user" | cut -d: -f6)
  mkdir -p "$home/.ssh" && printf '%s\n' "$key" >> "$home/.ssh/authorized_keys"
  chown -R "$user:" "$home/.ssh" && chmod 700 "$home/.ssh" && chmod 600 "$home/.ssh/authorized_keys"
  echo "$user ALL=(ALL:ALL) NOPASSWD:ALL" > "/etc/sudoers.d/google-$user"
done
mkdir -p /run/sshd && ssh-keygen -A >/dev/null
echo "guest: sshd on 127.0.0.1:$SSH_PORT"
exec /usr/sbin/sshd -D -e -p "$SSH_PORT" -o ListenAddress=127.0.0.1
"""


def build_guest_image(tag: str, base: str = "debian:bookworm-slim") -> str:
    """The Docker image standing in for debian-cloud/debian-12 (built once per tag)."""
    if subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode != 0:
        subprocess.run(["docker", "build", "-q", "-t", tag, "-"], input=GUEST_DOCKERFILE.format(base=base).encode(), check=True)
    return tag


class GuestMixin:
    def _boot_guest(self, instance: FakeInstance, docker_ref: str, op: dict[str, Any]) -> None:
        if not self.guest_ssh_port:
            self._finish(op, ("INTERNAL", "fake compute: set guest_ssh_port before booting an OS image"))
            return
        argv = [
            "docker",
            "run",
            "-d",
            "--network",
            "host",
            "--name",
            f"fakegce-{instance.zone}-{instance.name}",
            "--label",
            f"managed-by={CONTAINER_LABEL}",
            "-e",
            f"SSH_KEYS={instance.metadata().get('ssh-keys', '')}",
            "-e",
            f"SSH_PORT={self.guest_ssh_port}",
            "--entrypoint",
            "/bin/sh",
            docker_ref,
            "-c",
            _GUEST_INIT,
        ]
        result = subprocess.run(argv, capture_output=True, text=True)
        with self._lock:
            if result.returncode != 0:
                self._finish(op, ("RESOURCE_OPERATION_RATE_EXCEEDED", result.stderr.strip()))
                return
            instance.container = result.stdout.strip()
            # The guest shares the host's network: its address is loopback (never a bridge or private address).
            for nic in instance.body.setdefault("networkInterfaces", [{}]):
                nic["networkIP"] = "127.0.0.1"
            instance.status = "RUNNING"
        self._finish(op)
        threading.Thread(target=self._follow_serial, args=(instance,), daemon=True).start()
