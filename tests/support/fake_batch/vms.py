"""A task's VM, as Batch makes one: a Compute Engine VM booted from the job's boot image, with its
metadata server and the job's service account, on which Batch's own agent runs the runnable.

Two kinds of boot image, as in the fake Compute API:
- a guest image (labelled org.mlbatch.fake-gce-guest: the baked VM image of a gcp release)
  boots as a VM (tests/support/fake_vm/guest.py): systemd is PID 1 and the image's units run
  at boot, the mlbatch agent's among them, as on a real Batch VM. Once the boot is over, Batch's
  agent runs the script runnable as root on the VM (`docker exec` into a systemd scope ordered
  after docker.service, as Batch's agent service is: the VM's shutdown sends the runnable
  SIGTERM before it stops the engine). The VM's console is kept when it goes.
- any other image (the local bake: the agent's container image, no systemd) stands for a VM
  of an image without units: the runnable is the container's command, /bin/sh -c SCRIPT,
  with the host's engine socket and a work dir at the same path, as the fake Compute API runs it.

Either way the runnable's process ends with the VM: a preemption or a delete sends SIGTERM and
gives 30 s; what the runnable exits with in that window is its exit code (the harsher of the
two readings of what Batch then reports: a code of the agent's own must be one the job's
lifecycle policy retries), and a runnable killed with its VM (137) gets Batch's own code.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
from pathlib import Path

from mlbatch.core import labels as mlbatch_labels  # the agent's: a job container names its instance
from tests.support.fake_batch.state import OWNER_LABEL, FakeJob, FakeTask, TaskVm
from tests.support.fake_vm import guest
from tests.support.fake_vm.metadata import metadata_server

_vm_ids = itertools.count(1)
SHUTDOWN_GRACE = 30  # seconds between the shutdown signal and the VM's end (preemption, delete)
KILLED = 137  # what `docker start -a` / `docker exec` exit with when the VM's end kills the runnable


def _docker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True)


class VmsMixin:
    project_number = "123456789012"

    def _service_account(self, job: FakeJob) -> str:
        email = job.body.get("allocationPolicy", {}).get("serviceAccount", {}).get("email", "")
        return email or f"{self.project_number}-compute@developer.gserviceaccount.com"  # Batch's default

    def _new_vm(self, job: FakeJob, task: FakeTask) -> TaskVm:
        zones = job.body.get("allocationPolicy", {}).get("location", {}).get("allowedLocations") or ["zones/europe-west4-a"]
        number = next(_vm_ids)
        image = self.images[self._boot_image(job.body)]
        vm = TaskVm(
            # Named after the job's uid, as Batch names its VMs: unique on an engine other test
            # sessions share (the VM's name labels the job containers its agent starts).
            name=f"{job.uid}-group0-{task.index}-{number}",
            zone=zones[0].rsplit("/", 1)[-1],
            instance_id=str(7000 + number),
            service_account=self._service_account(job),
            guest=guest.is_guest_image(image),
            scopes=tuple(job.body.get("allocationPolicy", {}).get("serviceAccount", {}).get("scopes") or ()),
        )
        vm.metadata_server = metadata_server(self, vm)
        with self._lock:
            self.vms[vm.name] = vm
        return vm

    def _boot_vm(self, job: FakeJob, vm: TaskVm, env: dict[str, str]) -> bool:
        """Boot the VM (a guest: until systemd finished its boot). False when it cannot boot."""
        assert job.workdir is not None and vm.metadata_server is not None
        image = self.images[self._boot_image(job.body)]
        md_host = f"127.0.0.1:{vm.metadata_server.server_port}"
        labels = {OWNER_LABEL: self.owner, mlbatch_labels.INSTANCE: vm.name}
        if vm.guest:
            try:
                vm.container = guest.start_guest(
                    vm.name,
                    22,
                    "",
                    image=image,
                    labels=labels,
                    metadata_host=md_host,
                    ssh_address=guest.loopback_address(),
                    storage_emulator=self.storage_emulator,
                    hostname=vm.name,
                )
            except (RuntimeError, TimeoutError):
                return False
            guest.wait_until_booted(vm.container)
            return True
        vm.workdir = job.workdir / vm.name
        vm.workdir.mkdir(parents=True)
        env["MLBATCH_WORKDIR"] = str(vm.workdir)  # the VM's disk: a host path at the same path (the engine is the host's)
        argv = ["create", "--network", "host", "--name", vm.name, "--hostname", vm.name]
        for key, value in labels.items():
            argv += ["--label", f"{key}={value}"]
        argv += ["-v", f"{self.docker_socket}:/var/run/docker.sock", "-v", f"{vm.workdir}:{vm.workdir}"]
        argv += ["-e", f"GCE_METADATA_HOST={md_host}", "--entrypoint", "/bin/sh"]
        for key, value in env.items():
            argv += ["-e", f"{key}={value}"]
        script = job.group["taskSpec"]["runnables"][0]["script"]["text"]
        result = _docker(*argv, image, "-c", script)
        vm.container = result.stdout.strip()
        return result.returncode == 0

    def _start_runnable(self, job: FakeJob, vm: TaskVm, env: dict[str, str], log: Path) -> subprocess.Popen:
        """Batch's agent runs the script runnable (the first: the fake refuses others); its exit code is the process's."""
        assert vm.metadata_server is not None
        with log.open("wb") as out:
            if not vm.guest:
                return subprocess.Popen(["docker", "start", "-a", vm.container], stdout=out, stderr=subprocess.STDOUT)
            argv = ["docker", "exec", "-e", f"GCE_METADATA_HOST=127.0.0.1:{vm.metadata_server.server_port}"]
            for key, value in env.items():
                argv += ["-e", f"{key}={value}"]
            script = job.group["taskSpec"]["runnables"][0]["script"]["text"]
            # Batch's agent is a service ordered after the engine (it runs container runnables with
            # it): at shutdown the runnable is signalled while the engine still runs. A scope with
            # the same ordering puts the runnable there (the scope execs it: its exit code is ours).
            scope = ["systemd-run", "--scope", "--quiet", "-p", "After=docker.service"]
            return subprocess.Popen([*argv, vm.container, *scope, "/bin/sh", "-c", script], stdout=out, stderr=subprocess.STDOUT)

    def _vm_running(self, vm: TaskVm) -> bool:
        return _docker("inspect", "-f", "{{.State.Running}}", vm.container).stdout.strip() == "true"

    def _shut_down_vm(self, vm: TaskVm) -> None:
        """ACPI shutdown: SIGTERM to the VM's processes (a guest's systemd stops its units and signals the rest)."""
        _docker("stop", "-t", str(SHUTDOWN_GRACE), vm.container)

    def _destroy_vm(self, job: FakeJob | None, vm: TaskVm) -> None:
        """The VM goes: its console is kept, then its container, then the job containers its agent
        started on the host's engine (in that order: an agent still running could otherwise create
        a job container after the listing), its metadata server and work dir. Once: the job's
        deletion and the task's own end may both get here."""
        with self._lock:
            if self.vms.pop(vm.name, None) is None:
                return
        if vm.container:
            if job is not None and vm.guest:
                job.consoles[vm.name] = _docker("logs", vm.container).stdout
            _docker("rm", "-f", "-v", vm.container)
        jobs = _docker("ps", "-aq", "--filter", f"label={mlbatch_labels.INSTANCE}={vm.name}").stdout.split()
        if jobs:
            _docker("rm", "-f", *jobs)
        if vm.metadata_server is not None:
            vm.metadata_server.shutdown()
            vm.metadata_server.server_close()
        if vm.workdir is not None:
            shutil.rmtree(vm.workdir, ignore_errors=True)
