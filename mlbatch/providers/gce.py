"""Compute Engine provider (google-cloud-compute, REST transport).

Every create and delete carries a request_id that stays the same across retries of that
call, so a retry after a lost response never makes a second instance. Operations are
waited on with our own ZoneOperationsClient (ExtendedOperation.result() would poll the
default endpoint), and waits that return early or not DONE are simply repeated.

Errors are told apart by their reason, not their HTTP status: Compute answers a rate limit
with 403 `rateLimitExceeded` (retried, like 429/5xx) and a quota with 403 `quotaExceeded`
(exit 107, not a permission error); `resourceNotReady` (400) is retried; an operation that
ends in UNSUPPORTED_OPERATION sends the run to the next zone. A delete that meets another
delete (the agent's own, or the instance's termination action) ends as "gone".
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from google.api_core import exceptions as gexc
from google.api_core import retry as gretry
from google.cloud import compute_v1

from mlbatch.core.errors import BadInput, CapacityError, MlbatchError, NotFound, PermissionDenied, QuotaError
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
# Operation error codes that mean "this zone cannot run this instance": try the next one.
ZONE_UNSUPPORTED_CODES = ("UNSUPPORTED_OPERATION",)
GONE_CODES = ("RESOURCE_NOT_FOUND",)  # a delete whose instance another delete removed first
# Reasons (errors[].reason or the ErrorInfo reason) of errors worth retrying whatever their status.
RETRY_REASONS = ("rateLimitExceeded", "userRateLimitExceeded", "RATE_LIMIT_EXCEEDED", "resourceNotReady", "backendError")
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
TRANSIENT = (
    gexc.TooManyRequests,
    gexc.InternalServerError,
    gexc.BadGateway,
    gexc.ServiceUnavailable,
    gexc.GatewayTimeout,
    ConnectionError,
)
# zoneOperations.wait holds a call up to about two minutes: the client must wait longer than
# the server, or its own timeout (a raw requests timeout) ends a wait that was going fine.
WAIT_CALL_TIMEOUT = 150.0
# What the run's identity needs on the project to create, watch and delete a run's instance.
RUN_PERMISSIONS = (
    "compute.instances.create",
    "compute.instances.delete",
    "compute.instances.get",
    "compute.instances.getSerialPortOutput",
    "compute.instances.setLabels",
    "compute.instances.setMetadata",
    "compute.instances.setServiceAccount",
    "compute.disks.create",
    "compute.subnetworks.use",
    "compute.zoneOperations.get",
    "compute.zoneOperations.list",
)
RESOURCE_MANAGER = "https://cloudresourcemanager.googleapis.com"
IAM = "https://iam.googleapis.com"
_RUNNING_STATES = {"PROVISIONING", "STAGING", "RUNNING", "STOPPING", "SUSPENDING", "REPAIRING"}


def reasons(exc: gexc.GoogleAPICallError) -> set[str]:
    """Every reason an API error carries: errors[].reason (Compute's own) and the ErrorInfo reason."""
    found = {str(e.get("reason", "")) for e in exc.errors if isinstance(e, dict)}
    if exc.reason:
        found.add(exc.reason)
    return found - {""}


def transient(exc: BaseException) -> bool:
    """429/5xx, connection errors and timeouts, and the 400/403 errors whose reason says "try again"."""
    import requests

    if isinstance(exc, (*TRANSIENT, requests.ConnectionError, requests.Timeout)):
        return True
    return isinstance(exc, gexc.GoogleAPICallError) and bool(reasons(exc) & set(RETRY_REASONS))


def _retry(deadline: float) -> gretry.Retry:
    """Bounded retries with exponential backoff, for transient errors only."""
    return gretry.Retry(predicate=transient, initial=0.2, maximum=5.0, multiplier=2.0, timeout=deadline)


def _translate(exc: gexc.GoogleAPICallError, what: str) -> MlbatchError:
    if isinstance(exc, gexc.Forbidden | gexc.PermissionDenied):
        if reasons(exc) & {*QUOTA_CODES, "quotaExceeded"}:
            return QuotaError(f"{what}: quota exceeded: {exc.message}")
        if transient(exc):  # retries ran out on a rate limit: not a permission problem
            return MlbatchError(f"{what}: still rate-limited after retries: {exc.message}")
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
    serial_poll_max = 10.0

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
        self.subnetworks = compute_v1.SubnetworksClient(**kwargs)
        self._zone_of: dict[str, str] = {}

    # --- the instance body ------------------------------------------------------------------

    def source_image(self, ref: str) -> str:
        return ref if "/" in ref else f"projects/{self.project}/global/images/{ref}"

    def instance_body(self, request: InstanceRequest, zone: str) -> compute_v1.Instance:
        job, spec = request.job, request.spec
        metadata = {
            "mlbatch-run-spec": spec.to_json(),
            "mlbatch-attempt": str(request.attempt),
            # Apart from the spec, so the agent can record its failure even when it cannot read the spec.
            "mlbatch-run-id": spec.run_id,
            "mlbatch-bucket": spec.bucket,
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

    def describe(self, request: InstanceRequest, zone: str) -> dict[str, Any]:
        """The instances.insert body `create` would send, sent nowhere (`run-batch --dry-run`)."""
        return {"zone": zone, "instances_insert": compute_v1.Instance.to_dict(self.instance_body(request, zone))}

    # --- operations ---------------------------------------------------------------------------

    def _wait(self, operation_name: str, zone: str, what: str) -> compute_v1.Operation:
        import requests

        deadline = time.monotonic() + self.operation_timeout
        while True:
            try:
                op = self.operations.wait(
                    project=self.project,
                    zone=zone,
                    operation=operation_name,
                    retry=_retry(self.api_deadline),
                    timeout=WAIT_CALL_TIMEOUT,
                )
            except gexc.GoogleAPICallError as exc:
                raise _translate(exc, what) from exc
            except requests.RequestException as exc:  # retries ran out on timeouts or connection errors
                raise MlbatchError(f"{what}: cannot reach the Compute API: {type(exc).__name__}: {exc}") from exc
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
            if any(c in ZONE_UNSUPPORTED_CODES for c in codes):  # the zone lacks the machine type or GPU
                raise CapacityError(f"{zone}: {message}")
            if all(c in GONE_CODES for c in codes):
                raise NotFound(f"{what}: {message}")
            if any(c in QUOTA_CODES for c in codes):
                raise QuotaError(f"{what}: {message}")
            raise MlbatchError(f"{what}: {message}")
        return op

    def _call(self, what: str, method, **kwargs):
        """One API call with retries on transient errors; every error comes back as an MlbatchError."""
        import requests

        try:
            return method(retry=_retry(self.api_deadline), timeout=60, **kwargs)
        except gexc.GoogleAPICallError as exc:
            raise _translate(exc, what) from exc
        except requests.RequestException as exc:
            raise MlbatchError(f"{what}: cannot reach the Compute API: {type(exc).__name__}: {exc}") from exc

    # --- preflight ----------------------------------------------------------------------------

    def preflight(self) -> None:
        """Before anything is created: may the run's identity create instances and act as the
        runner service account, and can instances without an external IP reach Google APIs
        (Private Google Access on the subnet, or Cloud NAT by configuration)? One message
        names everything missing."""
        missing = self._missing_permissions()
        network_problem = "" if self.settings.cloud_nat else self._network_problem()
        if missing:
            raise PermissionDenied(
                f"cannot run on project {self.project}: the caller lacks {', '.join(missing)} "
                "(grant roles/compute.instanceAdmin.v1 on the project and roles/iam.serviceAccountUser "
                f"on {self.settings.service_account})" + (f"; also: {network_problem}" if network_problem else "")
            )
        if network_problem:
            raise BadInput(f"cannot run on project {self.project}: {network_problem}")

    def _session(self):
        import google.auth
        from google.auth.credentials import AnonymousCredentials
        from google.auth.transport.requests import AuthorizedSession

        if self.settings.compute_endpoint:  # the test profile: every Google API is the fake
            return AuthorizedSession(AnonymousCredentials()), self.settings.compute_endpoint, self.settings.compute_endpoint
        credentials, _ = google.auth.default(scopes=[SCOPE])
        return AuthorizedSession(credentials), RESOURCE_MANAGER, IAM

    def _missing_permissions(self) -> list[str]:
        """testIamPermissions answers with the subset the caller holds (no permission needed to ask)."""
        session, resource_manager, iam = self._session()
        account = self.settings.service_account
        checks = [
            (f"{resource_manager}/v1/projects/{self.project}:testIamPermissions", RUN_PERMISSIONS, ""),
            (
                f"{iam}/v1/projects/{self.project}/serviceAccounts/{account}:testIamPermissions",
                ("iam.serviceAccounts.actAs",),
                f" on {account}",
            ),
        ]
        missing = []
        for url, permissions, where in checks:

            def ask(url=url, permissions=permissions):
                response = session.post(url, json={"permissions": list(permissions)}, timeout=60)
                if response.status_code >= 400:
                    raise gexc.from_http_response(response)
                return set(response.json().get("permissions", []))

            try:
                held = _retry(self.api_deadline)(ask)()
            except gexc.GoogleAPICallError as exc:
                raise _translate(exc, f"checking permissions{where}") from exc
            missing += [f"{p}{where}" for p in permissions if p not in held]
        return missing

    def _network_problem(self) -> str:
        region, name = self.settings.region, self.settings.subnetwork or self.settings.network  # auto-mode: same name
        what = f"reading subnetwork {name} in {region}"
        try:
            subnet = self._call(what, self.subnetworks.get, project=self.project, region=region, subnetwork=name)
        except NotFound:
            return f"subnetwork {name} does not exist in {region} (set mlbatch.profiles.<profile>.subnetwork)"
        if subnet.private_ip_google_access:
            return ""
        return (
            f"subnetwork {name} in {region} has no Private Google Access, and instances have no external IP: "
            f"enable it (gcloud compute networks subnets update {name} --region {region} "
            "--enable-private-ip-google-access), or configure cloud_nat: true if the VPC has Cloud NAT"
        )

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
            get = self.instances.get
            labels = self._call(what, get, project=self.project, zone=zone, instance=request.name).labels
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
        get = self.instances.get
        try:
            instance = self._call(f"reading the state of {name}", get, project=self.project, zone=self._zone(name), instance=name)
        except NotFound:
            return GONE
        return RUNNING if instance.status in _RUNNING_STATES else STOPPED

    def was_preempted(self, name: str) -> bool:
        """Whether Compute preempted this instance: its zone's operations of that one type on that one
        target, filtered by the server (a zone's operation list is long, and paged)."""
        zone = self._zone(name)
        target = f"https://www.googleapis.com/compute/v1/projects/{self.project}/zones/{zone}/instances/{name}"
        request = compute_v1.ListZoneOperationsRequest(
            project=self.project,
            zone=zone,
            filter=f'(operationType = "compute.instances.preempted") (targetLink = "{target}")',
        )
        ops = self._call(f"reading the operations of {name}", self.operations.list, request=request)
        try:
            return any(op.target_link.endswith(f"/instances/{name}") for op in ops)
        except gexc.GoogleAPICallError as exc:  # a later page failed
            raise _translate(exc, f"reading the operations of {name}") from exc

    def console(self, name: str, stop: threading.Event) -> Iterator[str]:
        """Serial port 1, polled with start/next; a jump in `start` means the buffer rolled over."""
        offset, partial, quiet, began = 0, "", 0, time.monotonic()
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
            # Asked less often while the run goes on (+1 s a minute) and while it is quiet (x1.5 a
            # quiet poll; output resets that), never less often than every 10 s.
            quiet = 0 if out.contents else quiet + 1
            if len(partial) > CONSOLE_LINE_LIMIT:  # a line with no end (a \r progress bar): memory stays bounded
                yield partial
                partial = ""
            offset = out.next_
            stop.wait(min(self.serial_poll_max, self.serial_poll * 1.5**quiet + (time.monotonic() - began) / 60))
        if partial:
            yield partial

    def delete(self, name: str) -> None:
        """Delete and wait until it is gone. Another delete may be under way (the agent's own,
        the termination action): the API then answers 400 resourceNotReady (retried until the
        instance is gone: 404) or accepts ours and ends its operation in 404. Both mean gone."""
        zone = self._zone(name)
        what = f"deleting {name}"
        request = compute_v1.DeleteInstanceRequest(project=self.project, zone=zone, instance=name, request_id=str(uuid.uuid4()))
        try:
            op = self._call(what, self.instances.delete, request=request)
            self._wait(op.name, zone, what)
        except NotFound:
            return

    def list_ours(self) -> list[InstanceInfo]:
        out = []
        for zone in self.zones:
            request = compute_v1.ListInstancesRequest(
                project=self.project, zone=zone, filter=f'labels.{MANAGED_LABEL_KEY}="{MANAGED_LABEL_VALUE}"'
            )
            for inst in self._call(f"listing instances in {zone}", self.instances.list, request=request):
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
        oslogin = "TRUE" if self.settings.os_login else "FALSE"  # TRUE: the key is in the caller's OS Login profile
        metadata = {"ssh-keys": f"{ssh_user}:{public_key.strip()}", "block-project-ssh-keys": "true", "enable-oslogin": oslogin}
        body = compute_v1.Instance(
            name=name,
            machine_type=f"zones/{zone}/machineTypes/e2-small",
            labels={
                MANAGED_LABEL_KEY: MANAGED_LABEL_VALUE,
                "role": "image-test",
                "expiry": str(int(time.time()) + max_run_seconds),
            },
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
        op = self._call(what, self.instances.insert, request=request)
        self._wait(op.name, zone, what)
        deadline = time.monotonic() + self.operation_timeout
        while True:  # the insert is DONE once the VM exists; it may still be STAGING
            instance = self._call(what, self.instances.get, project=self.project, zone=zone, instance=name)
            if instance.status == "RUNNING" and instance.network_interfaces[0].network_i_p:
                return instance.network_interfaces[0].network_i_p
            if instance.status not in ("PROVISIONING", "STAGING") or time.monotonic() > deadline:
                raise MlbatchError(f"{what}: the VM is {instance.status}, not RUNNING with an internal IP")
            time.sleep(2)
