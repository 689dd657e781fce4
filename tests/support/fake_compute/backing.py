"""What stands behind an instance: a container of its image running the real agent, its serial
port, and the timers (preemption, max run duration) the real service enforces."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from typing import Any

from tests.support.fake_compute import guest
from tests.support.fake_compute.metadata import metadata_server
from tests.support.fake_compute.state import CONTAINER_LABEL, FakeInstance


class BackingMixin:
    def _boot(self, instance: FakeInstance, docker_ref: str, op: dict[str, Any]) -> None:
        instance.workdir = self._workroot / instance.name
        instance.workdir.mkdir(parents=True, exist_ok=True)
        instance.metadata_server = metadata_server(self, instance)
        md_host = f"127.0.0.1:{instance.metadata_server.server_port}"
        if guest.is_guest_image(docker_ref):  # a VM image (ssh, systemd), not the agent's container
            self._boot_guest(instance, docker_ref, md_host, op)
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
            "-v",
            f"{self.docker_socket}:/var/run/docker.sock",
            "-v",
            f"{instance.workdir}:{instance.workdir}",
            "-e",
            f"GCE_METADATA_HOST={md_host}",
            "-e",
            f"MLBATCH_WORKDIR={instance.workdir}",
        ]
        if self.storage_emulator:
            argv += ["-e", f"STORAGE_EMULATOR_HOST={self.storage_emulator}"]
        result = subprocess.run([*argv, docker_ref], capture_output=True, text=True)
        with self._lock:
            if result.returncode != 0:
                self._finish(op, ("RESOURCE_OPERATION_RATE_EXCEEDED", result.stderr.strip()))
                return
            instance.container = result.stdout.strip()
            instance.status = "RUNNING"
        self._finish(op)
        threading.Thread(target=self._follow_serial, args=(instance,), daemon=True).start()

    def _boot_guest(self, instance: FakeInstance, docker_ref: str, md_host: str, op: dict[str, Any]) -> None:
        try:
            container = guest.boot_instance(instance, docker_ref, md_host, self.storage_emulator)
        except (RuntimeError, TimeoutError) as exc:
            self._finish(op, ("RESOURCE_OPERATION_RATE_EXCEEDED", str(exc)[-500:]))
            return
        with self._lock:
            instance.container = container
            instance.status = "RUNNING"
        self._finish(op)
        threading.Thread(target=self._follow_serial, args=(instance,), daemon=True).start()

    def _follow_serial(self, instance: FakeInstance) -> None:
        proc = subprocess.Popen(["docker", "logs", "-f", instance.container], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        for chunk in iter(lambda: os.read(fd, 4096), b""):
            with self._lock:
                instance.serial += chunk
                limit = self.faults.serial_buffer_bytes
                if limit is not None and len(instance.serial) > limit:
                    drop = len(instance.serial) - limit
                    del instance.serial[:drop]
                    instance.serial_dropped += drop
        proc.wait()
        with self._lock:  # the agent ended: a VM whose OS halted is TERMINATED
            if instance.status in ("RUNNING", "STOPPING") and (instance.zone, instance.name) in self.instances:
                instance.status = "TERMINATED" if instance.status == "RUNNING" else instance.status

    def _delete_later(self, instance: FakeInstance, op: dict[str, Any]) -> None:
        # Like GCE: the guest gets a shutdown signal and up to ~90 s; the agent needs much less.
        self._stop_container(instance, grace=30)
        self._save_disks(instance)  # a disk without autoDelete keeps what the instance wrote
        with self._lock:
            self._remove(instance)
        self._finish(op)

    def _stop_container(self, instance: FakeInstance, grace: int) -> None:
        if instance.container:
            subprocess.run(["docker", "stop", "-t", str(grace), instance.container], capture_output=True)

    def _remove(self, instance: FakeInstance) -> None:
        """The instance is deleted: its container, metadata server and work dir go, and so does its name."""
        self._destroy(instance)
        self._drop_disks(instance)
        self.instances.pop((instance.zone, instance.name), None)

    def _destroy(self, instance: FakeInstance) -> None:
        if instance.container:
            subprocess.run(["docker", "rm", "-f", instance.container], capture_output=True)
        # Job containers the agent started run "on the VM": they go with it.
        jobs = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=org.mlbatch.instance={instance.name}"], capture_output=True, text=True
        ).stdout.split()
        if jobs:
            subprocess.run(["docker", "rm", "-f", *jobs], capture_output=True)
        if instance.metadata_server:
            instance.metadata_server.shutdown()
        if instance.workdir:
            shutil.rmtree(instance.workdir, ignore_errors=True)

    def _preempt(self, instance: FakeInstance) -> None:
        """Spot preemption: ACPI shutdown (SIGTERM to the agent), ~30 s, then the termination action."""
        op = self._new_operation(instance.zone, "compute.instances.preempted", instance.name)
        instance.status = "STOPPING"
        self._stop_container(instance, grace=30)
        with self._lock:
            action = instance.body.get("scheduling", {}).get("instanceTerminationAction", "STOP")
            if action == "DELETE":
                self._remove(instance)
            else:
                instance.status = "TERMINATED"
        self._finish(op)

    def _enforce_timers(self) -> None:
        with self._lock:
            instances = list(self.instances.values())
        for instance in instances:
            if instance.status not in ("RUNNING", "TERMINATED"):
                continue
            age = self.now() - instance.created
            attempt = instance.body.get("labels", {}).get("attempt", "")
            preempt_at = self.faults.preempt_attempts.get(int(attempt) if attempt.isdigit() else -1)
            spot = instance.body.get("scheduling", {}).get("provisioningModel") == "SPOT"
            if preempt_at is not None and spot and age >= preempt_at and instance.status == "RUNNING":
                threading.Thread(target=self._preempt, args=(instance,), daemon=True).start()
                continue
            max_run = instance.body.get("scheduling", {}).get("maxRunDuration", {}).get("seconds")
            if max_run is not None and age >= int(max_run):
                self._terminate_at_max_run(instance)

    def _terminate_at_max_run(self, instance: FakeInstance) -> None:
        action = instance.body.get("scheduling", {}).get("instanceTerminationAction", "STOP")
        with self._lock:
            if action == "DELETE":
                self._new_operation(instance.zone, "delete", instance.name)
                self._remove(instance)
            else:
                self._stop_container(instance, grace=1)
                instance.status = "TERMINATED"

    def _reaper(self) -> None:
        while not self._stop.wait(0.2):
            self._enforce_timers()
