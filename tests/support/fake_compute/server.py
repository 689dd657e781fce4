"""A fake Compute Engine API for tests: strict about what it accepts, able to inject the
faults production brings, and backing each instance with a real container of the baked
image running the real agent (with a per-instance metadata server).

One module per resource (instances.py, operations.py, images.py), one for what backs an
instance (backing.py) and one for its metadata server (metadata.py); this one holds the
HTTP plumbing and the route table the resource modules contribute to. Every request's
parameters and body are checked against the official discovery document.
"""

from __future__ import annotations

import collections
import itertools
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support import discovery
from tests.support.fake_compute.accelerators import AcceleratorsMixin
from tests.support.fake_compute.backing import BackingMixin
from tests.support.fake_compute.disks import DisksMixin
from tests.support.fake_compute.errors import by_reason, error_body, not_found
from tests.support.fake_compute.global_operations import GlobalOperationsMixin
from tests.support.fake_compute.image_admin import ImageAdminMixin
from tests.support.fake_compute.images import ImagesMixin
from tests.support.fake_compute.instances import InstancesMixin
from tests.support.fake_compute.operations import OperationsMixin
from tests.support.fake_compute.state import FakeInstance, Faults, Latencies
from tests.support.fake_compute.subnetworks import SubnetworksMixin
from tests.support.fake_compute.zones import ZonesMixin
from tests.support.fake_http import RoutedApi, json_server
from tests.support.fake_vm.metadata import VmTokens


class FakeCompute(
    InstancesMixin,
    OperationsMixin,
    ImageAdminMixin,
    ImagesMixin,
    SubnetworksMixin,
    BackingMixin,
    GlobalOperationsMixin,
    DisksMixin,
    ZonesMixin,
    AcceleratorsMixin,
    RoutedApi,
):
    API, NAME = discovery.COMPUTE, "compute"
    _ROUTES = (
        InstancesMixin.ROUTES + OperationsMixin.ROUTES + ImagesMixin.ROUTES + GlobalOperationsMixin.ROUTES + DisksMixin.ROUTES
    ) + (ZonesMixin.ROUTES + ImageAdminMixin.ROUTES + SubnetworksMixin.ROUTES + AcceleratorsMixin.ROUTES)

    def __init__(
        self,
        project: str,
        storage_emulator: str = "",
        docker_socket: str = "/var/run/docker.sock",
        boot_containers: bool = True,
        latencies: Latencies | None = None,
    ):
        self.project = project
        self.boot_containers = boot_containers  # False: API-only tests, instances run nothing (no Docker)
        self.on_running: Callable[[FakeInstance], None] | None = None  # without containers: called when RUNNING
        self.storage_emulator = storage_emulator
        self.docker_socket = docker_socket
        self.faults = Faults()
        self.vm_tokens = VmTokens()  # the access tokens its VMs' metadata servers gave out
        self.latencies = latencies or Latencies()  # how long image operations take (realistic by default)
        self._due: list = []  # (fake time, operation, effect): operations that finish later (global_operations.py)
        self.clock_offset = 0.0
        self.images: dict[str, dict[str, Any]] = {}
        self.public_images: dict[str, dict[str, dict[str, Any]]] = {}  # project -> name -> image (debian-cloud...)
        self.disks: dict[tuple[str, str], dict[str, Any]] = {}
        self._owned_refs: set[str] = set()  # Docker images this fake made (captured disks)
        self.instances: dict[tuple[str, str], FakeInstance] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.by_request_id: dict[str, str] = {}
        self.subnetworks: dict[tuple[str, str, str], dict[str, Any]] = {}  # (project, region, name)
        self.service_accounts: set[str] = set()  # emails the IAM testIamPermissions route knows
        # The org policy compute.requireOsLogin: a tests.support.fake_oslogin.FakeOsLogin whose
        # profiles' keys are the only ones guests accept (ssh-keys metadata ignored); None: not enforced.
        self.os_login: Any = None
        self.gpu_quota: dict[str, float] = {}  # quota metric (NVIDIA_L4_GPUS, GPUS_ALL_REGIONS...) -> limit; absent: no limit
        self.denied_permissions: set[str] = set()  # what the caller lacks (project and service accounts alike)
        self.denied_on: dict[str, set[str]] = {}  # what the caller lacks on one project only (a Shared VPC host)
        self.requests: list[tuple[str, str, dict[str, Any] | None]] = []  # (method, path, body) as received
        self.inserts_performed = 0
        self.calls: collections.Counter[str] = collections.Counter()  # API calls by method id, e.g. "instances.get"
        self.queries: list[tuple[str, dict[str, str]]] = []  # (method id, query parameters) as received
        self._ids = itertools.count(1000)
        self._lock = threading.RLock()
        self._workroot = Path(tempfile.mkdtemp(prefix="fake-compute-"))
        self._stop = threading.Event()
        self._server = json_server(self._dispatch, error_body(400, "Invalid JSON payload received."))
        self.endpoint = self._server.url
        self._reaper_thread = threading.Thread(target=self._reaper, daemon=True)

    # --- lifecycle and test controls -------------------------------------------------

    def start(self) -> FakeCompute:
        self._server.start()
        self._reaper_thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.stop()
        with self._lock:
            for instance in list(self.instances.values()):
                self._destroy(instance)
            self.instances.clear()
            self._release_docker_refs(everything=True)
        shutil.rmtree(self._workroot, ignore_errors=True)

    def now(self) -> float:
        return time.time() + self.clock_offset

    def advance(self, seconds: float) -> None:
        """Move the fake's clock: max_run_duration, preemption timers and image operations see it."""
        self.clock_offset += seconds
        self._enforce_timers()
        self._finish_due()

    # --- HTTP plumbing ------------------------------------------------------------------

    def _received(self, method_id: str, path: str, params: dict[str, str]) -> None:
        self.calls[method_id] += 1
        self.queries.append((method_id, params))
        injected = self.faults.reply_errors.get(method_id)
        if injected:
            raise by_reason(injected.pop(0), method=method_id, target=path.split("/compute/v1/", 1)[-1])

    def _validate(self, resource: str, name: str, params: dict[str, str], args: dict[str, str], body: Any) -> list[str]:
        if resource.startswith("iam:"):  # IAM and Resource Manager methods check their own bodies
            return []
        return super()._validate(resource, name, params, args, body)

    def _admit(self, resource: str, name: str, args: dict[str, str]) -> None:
        public_read = resource == "images" and name in ("get", "getFromFamily", "list") and args["project"] in self.public_images
        host_read = resource in ("subnetworks", "iam:projects") and args["project"] in self.host_projects()
        if args["project"] != self.project and not (public_read or host_read):
            raise not_found(f"projects/{args['project']}")
        if self.faults.forbidden and resource == "instances":
            raise by_reason("forbidden", method=f"instances.{name}", target=f"projects/{self.project}")

    def _lost_response(self, name: str) -> bool:
        if name == "insert" and self.faults.lose_insert_responses > 0:
            self.faults.lose_insert_responses -= 1
            return True
        return False
