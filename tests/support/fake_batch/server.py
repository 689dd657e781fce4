"""A fake Cloud Batch API for tests: strict about what it accepts (every request checked
against the official batch.v1 discovery document, plus what the service refuses beyond
types), job and task states as the real service reports them, and each task attempt run on
a VM booted from the job's image (a guest with systemd and the image's units, or the agent's
container image), where Batch's agent runs the runnable: the real agent.

One module for the REST methods (jobs.py), one for what runs the tasks (backing.py), one for
a task's VM (vms.py), one for the state (state.py); this one holds the HTTP plumbing and the
test controls. The project's IAM policy (tests/support/fake_project_iam.py) says whether a
job's VMs may report: grant their service account roles/batch.agentReporter.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

from tests.support import discovery
from tests.support.fake_batch.backing import BackingMixin
from tests.support.fake_batch.jobs import JobsMixin
from tests.support.fake_batch.state import OWNER_LABEL, FakeJob, Faults, TaskVm
from tests.support.fake_batch.vms import VmsMixin
from tests.support.fake_http import ApiError, RoutedApi, error_body, json_server, not_found
from tests.support.fake_project_iam import ProjectIam
from tests.support.fake_vm.metadata import VmTokens


class FakeBatch(JobsMixin, BackingMixin, VmsMixin, RoutedApi):
    API, NAME = discovery.BATCH, "batch"
    _ROUTES = JobsMixin.ROUTES

    def __init__(
        self,
        project: str,
        storage_emulator: str = "",
        docker_socket: str = "/var/run/docker.sock",
        iam: ProjectIam | None = None,
    ):
        self.project = project
        self.iam = iam or ProjectIam()  # the project's IAM policy: nothing granted unless a test grants it
        self.owner = uuid.uuid4().hex[:12]  # labels this fake's VM containers
        self.storage_emulator = storage_emulator
        self.docker_socket = docker_socket
        self.faults = Faults()
        self.vm_tokens = VmTokens()  # the access tokens its VMs' metadata servers gave out
        self.images: dict[str, str] = {}  # image name -> local Docker image standing for it
        self.jobs: dict[str, FakeJob] = {}
        self.vms: dict[str, TaskVm] = {}  # VM name -> the task VM up now
        self.by_request_id: dict[str, str] = {}
        self.requests: list[tuple[str, str, dict[str, Any] | None]] = []  # (method, path, body) as received
        self.creates_performed = 0
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        self._workroot = Path(tempfile.mkdtemp(prefix="fake-batch-"))
        self._server = json_server(self._dispatch, error_body(400, "Invalid JSON payload received."))
        self.endpoint = self._server.url

    def start(self) -> FakeBatch:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()
        with self._lock:
            for job in self.jobs.values():
                job.deleting = True
        for vm in list(self.vms.values()):
            self._destroy_vm(None, vm)
        shutil.rmtree(self._workroot, ignore_errors=True)

    def add_image(self, name: str, docker_ref: str) -> str:
        """An image of the project, backed by a local Docker image (a guest image boots as a VM with
        systemd, any other runs the runnable as its container's command); its self link."""
        self.images[name] = docker_ref
        return f"https://www.googleapis.com/compute/v1/projects/{self.project}/global/images/{name}"

    def grant_runner(self, service_account: str) -> None:
        """What the README asks of a project for sweeps: the job VMs' account may report to Batch."""
        self.iam.grant(f"serviceAccount:{service_account}", "roles/batch.agentReporter")

    def running_containers(self) -> list[str]:
        """The containers of this fake's VMs that are still there (not another fake's, nor another session's)."""
        return subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label={OWNER_LABEL}={self.owner}"], capture_output=True, text=True
        ).stdout.split()

    # --- what the service refuses, what the tests break -------------------------------

    def _admit(self, resource: str, name: str, args: dict[str, str]) -> None:
        project = (args.get("parent") or args.get("name", "")).split("/")[1]
        if project != self.project:
            raise not_found(f"projects/{project}")
        if self.faults.forbidden:
            verb = {"create": "create", "delete": "delete", "list": "list"}.get(name, "get")
            raise ApiError(403, f"Permission 'batch.jobs.{verb}' denied on 'projects/{self.project}'", "forbidden")

    def _lost_response(self, name: str) -> bool:
        if name == "create" and self.faults.lose_create_responses > 0:
            self.faults.lose_create_responses -= 1
            return True
        return False
