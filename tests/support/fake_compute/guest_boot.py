"""Instances of OS images (debian-cloud/debian-12, or an image baked from one) boot as a
VM-like guest (tests/support/fake_compute/guest.py): systemd, sshd on 127.0.0.1 at the
fake's guest_ssh_port, the users and keys of the instance's `ssh-keys` metadata with sudo.
The guest shares the host's network, so the instance's networkIP is 127.0.0.1 (never a
bridge or private address)."""

from __future__ import annotations

import threading
from typing import Any

from tests.support.fake_compute.state import FakeInstance


class GuestMixin:
    def _boot_guest(self, instance: FakeInstance, docker_ref: str, op: dict[str, Any]) -> None:
        from tests.support.fake_compute.guest import start_guest

        if not self.guest_ssh_port:
            self._finish(op, ("INTERNAL", "fake compute: set guest_ssh_port before booting an OS image"))
            return
        try:
            container = start_guest(instance.name, self.guest_ssh_port, instance.metadata().get("ssh-keys", ""), image=docker_ref)
        except (RuntimeError, TimeoutError) as exc:
            self._finish(op, ("INTERNAL", f"the guest did not boot: {exc}"))
            return
        with self._lock:
            instance.container = container
            for nic in instance.body.setdefault("networkInterfaces", [{}]):
                nic["networkIP"] = "127.0.0.1"
            instance.status = "RUNNING"
        self._finish(op)
        threading.Thread(target=self._follow_serial, args=(instance,), daemon=True).start()
