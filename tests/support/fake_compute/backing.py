"""What stands behind an instance: a container of its image running the real agent, its serial
port, and the timers (preemption, max run duration) the real service enforces."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from typing import Any

from mlbatch.core import labels
from tests.support.fake_compute.accelerators import nvidia_smi_stand_in
from tests.support.fake_compute.state import CONTAINER_LABEL, FakeInstance
from tests.support.fake_vm import guest
from tests.support.fake_vm.metadata import metadata_server

# What a guest gets between the shutdown signal (ACPI, SIGTERM to the agent) and the stop, on
# preemption and at the end of a max run duration. GCE gives 30 s; a delete gives up to ~90 s.
PREEMPTION_GRACE = 30
DELETE_GRACE = 30


class BackingMixin:
    def _boot(self, instance: FakeInstance, docker_ref: str, op: dict[str, Any]) -> None:
        """PROVISIONING (resources allocated) -> STAGING (booting) -> RUNNING, as the real API reports it."""
        time.sleep(self.faults.operation_seconds + self.latencies.instance_insert)
        with self._lock:
            instance.status = "STAGING"
        if not self.boot_containers:  # API-only tests: nothing runs on the instance
            time.sleep(self.faults.operation_seconds)
            with self._lock:
                instance.status = "RUNNING"
            self._finish(op)
            if self.on_running is not None:  # a stand-in guest (the control-plane benchmark)
                threading.Thread(target=self.on_running, args=(instance,), daemon=True).start()
            return
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
        if smi := nvidia_smi_stand_in(instance):  # a GPU VM's driver (accelerators.py)
            argv += ["-v", f"{smi}:/usr/local/bin/nvidia-smi:ro"]
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
        """Boot from a guest image: an address of its own as networkIP, sshd on its port 22, the
        users of its `ssh-keys` metadata."""
        address = guest.loopback_address()
        instance.body.setdefault("networkInterfaces", [{}])[0]["networkIP"] = address
        try:
            # Org policy compute.requireOsLogin (self.os_login set): ssh-keys metadata is ignored, OS Login's keys count.
            keys = self.os_login.authorized_keys() if self.os_login is not None else instance.metadata().get("ssh-keys", "")
            container = guest.start_guest(
                instance.name,
                22,
                keys,
                image=docker_ref,
                labels={"managed-by": CONTAINER_LABEL, "org.mlbatch.fake-zone": instance.zone},
                metadata_host=md_host,
                ssh_address=address,
                storage_emulator=self.storage_emulator,
                mounts=[f"{smi}:/usr/local/bin/nvidia-smi:ro"] if (smi := nvidia_smi_stand_in(instance)) else [],
            )
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
        # The agent's process ended. A real VM keeps RUNNING when a process exits (the agent must
        # delete or power off its VM itself), so the fake does not stop the instance here.

    def _delete_later(self, instance: FakeInstance, op: dict[str, Any]) -> None:
        # Like GCE: the guest gets a shutdown signal and up to ~90 s; the agent needs much less.
        time.sleep(self.faults.operation_seconds)
        self._stop_container(instance, grace=DELETE_GRACE)
        time.sleep(self.latencies.instance_delete)
        self._save_disks(instance)  # a disk without autoDelete keeps what the instance wrote
        with self._lock:
            self._remove(instance)
        self._finish(op)

    def _lose_race(self, instance: FakeInstance, op: dict[str, Any]) -> None:
        """A second delete accepted while the first runs: it ends in 404 once the instance is gone."""
        while not self._stop.is_set():
            with self._lock:
                if self.instances.get((instance.zone, instance.name)) is not instance:
                    break
            time.sleep(0.1)
        path = f"projects/{self.project}/zones/{instance.zone}/instances/{instance.name}"
        self._finish(op, ("RESOURCE_NOT_FOUND", f"The resource '{path}' was not found"))

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
            ["docker", "ps", "-aq", "--filter", f"label={labels.INSTANCE}={instance.name}"], capture_output=True, text=True
        ).stdout.split()
        if jobs:
            subprocess.run(["docker", "rm", "-f", *jobs], capture_output=True)
        if instance.metadata_server:
            instance.metadata_server.shutdown()
        if instance.workdir:
            shutil.rmtree(instance.workdir, ignore_errors=True)

    def _preempt(self, instance: FakeInstance) -> None:
        """Spot preemption: instance/preempted turns TRUE, the operation is recorded, ACPI shutdown
        (SIGTERM to the agent) gives the guest its window, then the termination action."""
        with self._lock:
            instance.preempted = True
            op = self._new_operation(instance.zone, "compute.instances.preempted", instance.name)
        self._shut_down(instance, PREEMPTION_GRACE)
        self._finish(op)

    def host_maintenance(self, name: str) -> str:
        """A maintenance event on the instance's host, as Compute handles it by the instance's
        `scheduling.onHostMaintenance` (https://cloud.google.com/compute/docs/instances/host-maintenance-overview,
        and the Scheduling reference: "For standard instances, the default behavior is MIGRATE"):
        MIGRATE live-migrates it, so it stays RUNNING and its guest goes on (a
        `compute.instances.migrateOnHostMaintenance` operation is recorded); TERMINATE stops it, the
        guest getting the shutdown signal first, and with automaticRestart false it stays
        TERMINATED (`compute.instances.terminateOnHostMaintenance`). Returns the policy applied."""
        instance = self.find(name)
        if instance is None:
            raise KeyError(name)
        policy = instance.body.get("scheduling", {}).get("onHostMaintenance", "MIGRATE")
        kind = "migrateOnHostMaintenance" if policy == "MIGRATE" else "terminateOnHostMaintenance"
        with self._lock:
            op = self._new_operation(instance.zone, f"compute.instances.{kind}", instance.name)
            if policy != "MIGRATE":
                instance.status = "STOPPING"
        if policy == "MIGRATE":
            self._finish(op)
            return policy
        self._stop_container(instance, grace=DELETE_GRACE)
        self._save_disks(instance)
        with self._lock:
            instance.status = "TERMINATED"
        self._finish(op)
        return policy

    def _end_run_duration(self, instance: FakeInstance, op: dict[str, Any]) -> None:
        self._shut_down(instance, PREEMPTION_GRACE)
        self._finish(op)

    def _shut_down(self, instance: FakeInstance, grace: int) -> None:
        """The guest's graceful shutdown window, then the instance's termination action."""
        self._stop_container(instance, grace=grace)
        self._save_disks(instance)  # a disk without autoDelete outlives the instance
        with self._lock:
            action = instance.body.get("scheduling", {}).get("instanceTerminationAction", "STOP")
            if action == "DELETE":
                self._remove(instance)
            else:
                instance.status = "TERMINATED"

    def _enforce_timers(self) -> None:
        with self._lock:
            instances = list(self.instances.values())
        for instance in instances:
            age = self.now() - instance.created
            attempt = instance.body.get("labels", {}).get("attempt", "")
            preempt_at = self.faults.preempt_attempts.get(int(attempt) if attempt.isdigit() else -1)
            spot = instance.body.get("scheduling", {}).get("provisioningModel") == "SPOT"
            with self._lock:
                if instance.status != "RUNNING" or instance.deleting:
                    continue
                deletes = instance.body.get("scheduling", {}).get("instanceTerminationAction") == "DELETE"
                if preempt_at is not None and spot and age >= preempt_at:
                    instance.status, instance.deleting = "STOPPING", deletes
                    threading.Thread(target=self._preempt, args=(instance,), daemon=True).start()
                    continue
                max_run = instance.body.get("scheduling", {}).get("maxRunDuration", {}).get("seconds")
                if max_run is not None and age >= int(max_run):
                    # The termination action at the end of the run duration: the same shutdown
                    # window as a preemption, but instance/preempted stays FALSE.
                    instance.status, instance.deleting = "STOPPING", deletes
                    # The platform's own delete shows as a delete operation (no preemption one).
                    op = self._new_operation(instance.zone, "delete" if deletes else "stop", instance.name)
                    threading.Thread(target=self._end_run_duration, args=(instance, op), daemon=True).start()

    def _reaper(self) -> None:
        while not self._stop.wait(0.2):
            self._enforce_timers()
            self._finish_due()
