"""Compute Engine provider (google-cloud-compute, REST transport).

Every create and delete carries a request_id that stays the same across retries of that
call, so a retry after a lost response never makes a second instance. Operations are
waited on with our own ZoneOperationsClient (ExtendedOperation.result() would poll the
default endpoint), and waits that return early or not DONE are simply repeated.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

from google.api_core import exceptions as gexc
from google.api_core import retry as gretry
from google.cloud import compute_v1

from mlbatch.core.errors import CapacityError, MlbatchError, NotFound, PermissionDenied, QuotaError
from mlbatch.core.names import MANAGED_LABEL_KEY, MANAGED_LABEL_VALUE
from mlbatch.core.settings import Settings
from mlbatch.providers.base import CONSOLE_LINE_LIMIT, GONE, RUNNING, STOPPED, InstanceInfo, InstanceRequest

CAPACITY_CODES = (
    "ZONE_RESOURCE_POOL_EXHAUSTED",
    "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
    "insufficientCapacity",
    "UNSUPPORTED_OPERATION_ZONE_RESOURCE_POOL_EXHAUSTED",
)
QUOTA_CODES = ("QUOTA_EXCEEDED", "quotaExceeded")
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
TRANSIENT = (
    gexc.TooManyRequests,
    gexc.InternalServerError,
    gexc.BadGateway,
    gexc.ServiceUnavailable,
    gexc.GatewayTimeout,
    ConnectionError,
)
_RUNNING_STATES = {"PROVISIONING", "STAGING", "RUNNING", "STOPPING", "SUSPENDING", "REPAIRING"}


def _retry(deadline: float) -> gretry.Retry:
    """Bounded retries with exponential backoff, for transient 429/5xx only."""
    import requests

    return gretry.Retry(
        predicate=gretry.if_exception_type(*TRANSIENT, requests.ConnectionError),
        initial=0.2,
        maximum=5.0,
        multiplier=2.0,
        timeout=deadline,
    )


def _translate(exc: gexc.GoogleAPICallError, what: str) -> MlbatchError:
    if isinstance(exc, gexc.Forbidden | gexc.PermissionDenied):
        if any(code in str(exc) for code in QUOTA_CODES):
            return QuotaError(f"{what}: quota exceeded: {exc.message}")
        return PermissionDenied(
            f"{what}: permission denied: {exc.message} "
            "(grant the caller compute.instanceAdmin.v1 and iam.serviceAccountUser on the runner SA)"
        )
    if isinstance(exc, gexc.NotFound):
        return NotFound(f"{what}: not found: {exc.message}")
    return MlbatchError(f"{what}: {type(exc).__name__}: {exc.message}")


class GceProvider:
    name = "gce"
    api_deadline = 120.0  # seconds a call may spend on transient-error retries
    operation_timeout = 600.0
    serial_poll = 1.0

    def __init__(self, settings: Settings):
        from google.auth.credentials import AnonymousCredentials

        self.settings = settings
        self.project = settings.project
        self.zones = settings.zones
        kwargs: dict = {"transport": "rest"}
        if settings.compute_endpoint:  # the fake Compute API in tests (settings refuse it in production)
            kwargs.update(client_options={"api_endpoint": settings.compute_endpoint}, credentials=AnonymousCredentials())
        self.instances = compute_v1.InstancesClient(**kwargs)
        self.operations = compute_v1.ZoneOperationsClient(**kwargs)
        self._zone_of: dict[str, str] = {}

    # --- the instance body ------------------------------------------------------------------

    def source_image(self, ref: str) -> str:
        return ref if "/" in ref else f"projects/{self.project}/global/images/{ref}"

    def instance_body(self, request: InstanceRequest, zone: str) -> compute_v1.Instance:
        job, spec = request.job, request.spec
        metadata = {
            "mlbatch-run-spec": spec.to_json(),
            "mlbatch-attempt": str(request.attempt),
            "block-project-ssh-keys": "true",
            "enable-oslogin": "TRUE",
        }
        if self.settings.compute_endpoint:
            metadata["mlbatch-compute-endpoint"] = self.settings.compute_endpoint
        scheduling = compute_v1.Scheduling(
            automatic_restart=False,
            on_host_maintenance="TERMINATE",  # Spot and GPU VMs cannot live-migrate
            max_run_duration=compute_v1.Duration(seconds=request.max_run_seconds),
            instance_termination_action="DELETE",  # the VM deletes itself even if the controller is gone
            provisioning_model="SPOT" if request.spot else "STANDARD",
        )
        network = compute_v1.NetworkInterface(network=f"projects/{self.project}/global/networks/{self.settings.network}")
        if self.settings.subnetwork:
            network.subnetwork = f"projects/{self.project}/regions/{self.settings.region}/subnetworks/{self.settings.subnetwork}"
        body = compute_v1.Instance(
            name=request.name,
            machine_type=f"zones/{zone}/machineTypes/{job.machine_type}",
            labels=request.labels,
            disks=[
                compute_v1.AttachedDisk(
                    boot=True,
                    auto_delete=True,
                    type_="PERSISTENT",
                    initialize_params=compute_v1.AttachedDiskInitializeParams(
                        source_image=self.source_image(spec.vm_image),
                        disk_size_gb=50,
                        disk_type=f"zones/{zone}/diskTypes/pd-balanced",
                    ),
                )
            ],
            network_interfaces=[network],  # no access config: no external IP
            service_accounts=[compute_v1.ServiceAccount(email=self.settings.service_account, scopes=[SCOPE])],
            shielded_instance_config=compute_v1.ShieldedInstanceConfig(
                enable_secure_boot=True, enable_vtpm=True, enable_integrity_monitoring=True
            ),
            metadata=compute_v1.Metadata(items=[compute_v1.Items(key=k, value=v) for k, v in metadata.items()]),
            scheduling=scheduling,
        )
        if job.gpu_count:
            body.guest_accelerators = [
                compute_v1.AcceleratorConfig(
                    accelerator_type=f"zones/{zone}/acceleratorTypes/{job.gpu_type}", accelerator_count=job.gpu_count
                )
            ]
        return body

    # --- operations ---------------------------------------------------------------------------

    def _wait(self, operation_name: str, zone: str, what: str) -> None:
        deadline = time.monotonic() + self.operation_timeout
        while True:
            try:
                op = self.operations.wait(
                    project=self.project, zone=zone, operation=operation_name, retry=_retry(self.api_deadline), timeout=60
                )
            except gexc.GoogleAPICallError as exc:
                raise _translate(exc, what) from exc
            if op.status == compute_v1.Operation.Status.DONE:
                break
            if time.monotonic() > deadline:
                raise MlbatchError(f"{what}: operation {operation_name} not done after {self.operation_timeout:.0f}s")
            time.sleep(0.2)  # the wait returned early: ask again
        if op.error and op.error.errors:
            codes = [e.code for e in op.error.errors]
            message = "; ".join(f"{e.code}: {e.message}" for e in op.error.errors)
            if any(c in CAPACITY_CODES for c in codes):
                raise CapacityError(f"{zone}: {message}")
            if any(c in QUOTA_CODES for c in codes):
                raise QuotaError(f"{what}: {message}")
            raise MlbatchError(f"{what}: {message}")

    # --- the provider line ----------------------------------------------------------------------

    def create(self, request: InstanceRequest, zone: str) -> None:
        what = f"creating {request.name} in {zone}"
        insert = compute_v1.InsertInstanceRequest(
            project=self.project, zone=zone, instance_resource=self.instance_body(request, zone), request_id=str(uuid.uuid4())
        )
        self._zone_of[request.name] = zone
        try:
            op = self.instances.insert(request=insert, retry=_retry(self.api_deadline), timeout=60)
        except gexc.Conflict:
            # A retried insert whose first response was lost, on a server that did not
            # deduplicate by request_id: ours if it carries our run id and attempt.
            labels = self.instances.get(project=self.project, zone=zone, instance=request.name).labels
            if labels.get("run-id") == request.labels["run-id"] and labels.get("attempt") == request.labels["attempt"]:
                return
            raise
        except gexc.GoogleAPICallError as exc:
            raise _translate(exc, what) from exc
        try:
            self._wait(op.name, zone, what)
        except CapacityError:
            self._zone_of.pop(request.name, None)
            raise

    def _zone(self, name: str) -> str:
        return self._zone_of.get(name, self.zones[0])

    def state(self, name: str) -> str:
        try:
            instance = self.instances.get(
                project=self.project, zone=self._zone(name), instance=name, retry=_retry(self.api_deadline), timeout=30
            )
        except gexc.NotFound:
            return GONE
        return RUNNING if instance.status in _RUNNING_STATES else STOPPED

    def was_preempted(self, name: str) -> bool:
        zone = self._zone(name)
        ops = self.operations.list(project=self.project, zone=zone, retry=_retry(self.api_deadline), timeout=30)
        return any(
            op.operation_type == "compute.instances.preempted" and op.target_link.endswith(f"/instances/{name}") for op in ops
        )

    def console(self, name: str, stop: threading.Event) -> Iterator[str]:
        """Serial port 1, polled with start/next; a jump in `start` means the buffer rolled over."""
        offset, partial = 0, ""
        while not stop.is_set():
            try:
                out = self.instances.get_serial_port_output(
                    request=compute_v1.GetSerialPortOutputInstanceRequest(
                        project=self.project, zone=self._zone(name), instance=name, port=1, start=offset
                    ),
                    retry=_retry(self.api_deadline),
                    timeout=30,
                )
            except gexc.NotFound:
                break
            if out.start > offset:
                yield (
                    f"[mlbatch] serial console skipped {out.start - offset} bytes (its buffer rolled over); "
                    "`invoke logs` has the full log"
                )
            text = partial + out.contents
            *lines, partial = text.split("\n")
            yield from lines
            if len(partial) > CONSOLE_LINE_LIMIT:  # a line with no end (a \r progress bar): memory stays bounded
                yield partial
                partial = ""
            offset = out.next_
            stop.wait(self.serial_poll)
        if partial:
            yield partial

    def delete(self, name: str) -> None:
        zone = self._zone(name)
        request = compute_v1.DeleteInstanceRequest(project=self.project, zone=zone, instance=name, request_id=str(uuid.uuid4()))
        try:
            op = self.instances.delete(request=request, retry=_retry(self.api_deadline), timeout=60)
        except gexc.NotFound:
            return
        except gexc.GoogleAPICallError as exc:
            raise _translate(exc, f"deleting {name}") from exc
        self._wait(op.name, zone, f"deleting {name}")

    def list_ours(self) -> list[InstanceInfo]:
        out = []
        for zone in self.zones:
            request = compute_v1.ListInstancesRequest(
                project=self.project, zone=zone, filter=f'labels.{MANAGED_LABEL_KEY}="{MANAGED_LABEL_VALUE}"'
            )
            for inst in self.instances.list(request=request, retry=_retry(self.api_deadline), timeout=60):
                self._zone_of[inst.name] = zone
                state = RUNNING if inst.status in _RUNNING_STATES else STOPPED
                out.append(InstanceInfo(name=inst.name, zone=zone, state=state, labels=dict(inst.labels)))
        return out

    # --- a plain VM to test a baked image on (the release's image tests) -------------------------

    def create_test_vm(self, name: str, image: str, ssh_user: str, public_key: str, max_run_seconds: int = 3600) -> str:
        """Boot `image` with `public_key` for `ssh_user` in its ssh-keys metadata; return its internal IP.

        The VM has no external IP and no service account (the checks need neither), deletes
        itself after max_run_seconds even if the release dies, and carries the labels `invoke gc`
        removes expired instances by. The caller deletes it with delete(name).
        """
        zone = self.zones[0]
        network = compute_v1.NetworkInterface(network=f"projects/{self.project}/global/networks/{self.settings.network}")
        if self.settings.subnetwork:
            network.subnetwork = f"projects/{self.project}/regions/{self.settings.region}/subnetworks/{self.settings.subnetwork}"
        metadata = {"ssh-keys": f"{ssh_user}:{public_key.strip()}", "block-project-ssh-keys": "true", "enable-oslogin": "FALSE"}
        body = compute_v1.Instance(
            name=name,
            machine_type=f"zones/{zone}/machineTypes/e2-small",
            labels={"managed-by": "mlbatch", "role": "image-test", "expiry": str(int(time.time()) + max_run_seconds)},
            disks=[
                compute_v1.AttachedDisk(
                    boot=True,
                    auto_delete=True,
                    initialize_params=compute_v1.AttachedDiskInitializeParams(source_image=self.source_image(image)),
                )
            ],
            network_interfaces=[network],
            shielded_instance_config=compute_v1.ShieldedInstanceConfig(enable_secure_boot=True, enable_vtpm=True),
            metadata=compute_v1.Metadata(items=[compute_v1.Items(key=k, value=v) for k, v in metadata.items()]),
            scheduling=compute_v1.Scheduling(
                max_run_duration=compute_v1.Duration(seconds=max_run_seconds), instance_termination_action="DELETE"
            ),
        )
        what = f"creating the image-test VM {name} in {zone}"
        self._zone_of[name] = zone
        request = compute_v1.InsertInstanceRequest(
            project=self.project, zone=zone, instance_resource=body, request_id=str(uuid.uuid4())
        )
        try:
            op = self.instances.insert(request=request, retry=_retry(self.api_deadline), timeout=60)
        except gexc.GoogleAPICallError as exc:
            raise _translate(exc, what) from exc
        self._wait(op.name, zone, what)
        deadline = time.monotonic() + self.operation_timeout
        while True:  # the insert is DONE once the VM exists; it may still be STAGING
            instance = self.instances.get(
                project=self.project, zone=zone, instance=name, retry=_retry(self.api_deadline), timeout=30
            )
            if instance.status == "RUNNING" and instance.network_interfaces[0].network_i_p:
                return instance.network_interfaces[0].network_i_p
            if instance.status not in ("PROVISIONING", "STAGING") or time.monotonic() > deadline:
                raise MlbatchError(f"{what}: the VM is {instance.status}, not RUNNING with an internal IP")
            time.sleep(2)
