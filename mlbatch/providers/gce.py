"""Compute Engine provider (google-cloud-compute, REST transport).

Every create and delete carries a request_id that stays the same across retries of that
call, so a retry after a lost response never makes a second instance. Clients, the error
translation (by reason, not status), retries and the operation waiter are mlbatch.gcp's:
rate limits and `resourceNotReady` are retried, a quota is 107, a missing permission 111
naming it; an operation that ends in UNSUPPORTED_OPERATION or a stockout sends the run to
the next zone. A delete that meets another delete (the agent's own, or the instance's
termination action) ends as "gone".
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import compute_v1

from mlbatch.core.catalog import Job
from mlbatch.core.errors import BadInput, CapacityError, MlbatchError, NotFound, PermissionDenied
from mlbatch.core.gcp_base import SCOPE, retry
from mlbatch.core.names import MANAGED_LABEL_KEY, MANAGED_LABEL_VALUE
from mlbatch.core.settings import Settings
from mlbatch.gcp import errors
from mlbatch.gcp.clients import IAM, RESOURCE_MANAGER, Clients, held_permissions
from mlbatch.gcp.network import vpc
from mlbatch.gcp.operations import Waiter
from mlbatch.providers.base import CONSOLE_LINE_LIMIT, GONE, RUNNING, STOPPED, InstanceInfo, InstanceRequest

GRANT = "grant roles/compute.instanceAdmin.v1 on the project and roles/iam.serviceAccountUser on the runner service account"
# What the run's identity needs on the project to create, watch and delete a run's instance: what
# instances.insert of our body asks (https://cloud.google.com/compute/docs/instances/create-start-instance,
# "Required permissions": the instance, its boot disk from our image, metadata, labels, the service
# account, Shielded VM settings) and what the controller calls afterwards.
RUN_PERMISSIONS = (
    "compute.instances.create",
    "compute.instances.delete",
    "compute.instances.get",
    "compute.instances.getSerialPortOutput",
    "compute.instances.setLabels",
    "compute.instances.setMetadata",
    "compute.instances.setServiceAccount",
    "compute.instances.updateShieldedVmConfig",
    "compute.disks.create",
    "compute.images.useReadOnly",
    "compute.zoneOperations.get",
    "compute.zoneOperations.list",
)
# Asked on the project that owns the network (the Shared VPC host, or the project): joining the
# subnet, and reading it (the preflight itself reads it for Private Google Access).
NETWORK_PERMISSIONS = ("compute.subnetworks.use", "compute.subnetworks.get")
_RUNNING_STATES = {"PROVISIONING", "STAGING", "RUNNING", "STOPPING", "SUSPENDING", "REPAIRING"}


class GceProvider:
    name = "gce"
    creates_at_once = 8
    api_deadline = 120.0  # seconds a call may spend on transient-error retries
    operation_timeout = 600.0
    serial_poll = 1.0
    serial_poll_max = 10.0

    def __init__(self, settings: Settings):
        self.settings = settings
        self.project = settings.project
        self.zones = settings.zones
        self.vpc = vpc(settings)
        self.clients = Clients(settings)  # no credentials on the gcp profile: 111 here, before anything
        self.instances = self.clients.compute("InstancesClient")
        self.operations = self.clients.compute("ZoneOperationsClient")
        self.subnetworks = self.clients.compute("SubnetworksClient")
        self.accelerator_types = self.clients.compute("AcceleratorTypesClient")
        self.waiter = Waiter(self.clients, self.project)
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
            # A standard VM live-migrates through host maintenance and its run goes on; Spot and GPU
            # VMs cannot migrate (the API refuses MIGRATE for them), so a maintenance event ends them.
            on_host_maintenance="TERMINATE" if request.spot or job.gpu_count else "MIGRATE",
            max_run_duration=compute_v1.Duration(seconds=request.max_run_seconds),
            instance_termination_action="DELETE",  # the VM deletes itself even if the controller is gone
            provisioning_model="SPOT" if request.spot else "STANDARD",
        )
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
            network_interfaces=[self._network_interface()],  # no access config: no external IP
            service_accounts=[compute_v1.ServiceAccount(email=self.settings.service_account, scopes=[SCOPE])],
            shielded_instance_config=compute_v1.ShieldedInstanceConfig(
                # The GPU image's driver is Debian's, built by DKMS on the image and signed by no key the
                # firmware trusts: with Secure Boot the kernel would refuse it and the job find no GPU.
                # Secure Boot stays on for every other VM; vTPM and integrity monitoring for all.
                enable_secure_boot=not job.gpu_count,
                enable_vtpm=True,
                enable_integrity_monitoring=True,
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

    def _network_interface(self) -> compute_v1.NetworkInterface:
        """The run's network and subnetwork, in the project that owns them (Shared VPC: the host)."""
        interface = compute_v1.NetworkInterface(network=self.vpc.network)
        if self.vpc.subnetwork:
            interface.subnetwork = self.vpc.subnetwork
        return interface

    # --- operations ---------------------------------------------------------------------------

    def _call(self, what: str, method, **kwargs):
        """One API call with retries on transient errors; every error comes back as an MlbatchError."""
        return errors.call(what, method, grant=GRANT, deadline=self.api_deadline, **kwargs)

    # --- preflight ----------------------------------------------------------------------------

    def preflight(self, permissions: tuple[str, ...] = RUN_PERMISSIONS, role: str = "roles/compute.instanceAdmin.v1") -> None:
        """Before anything is created: may the run's identity create instances (or what
        `permissions` names, with the `role` that holds them: a sweep's Batch job), join the
        subnet (on the project that owns it: a Shared VPC host) and act as the runner service
        account, and can instances without an external IP reach Google APIs (Private Google
        Access on the subnet, or Cloud NAT by configuration)? One message names everything missing."""
        missing = self._missing_permissions(permissions)
        unreadable = any(m.startswith("compute.subnetworks.get") for m in missing)  # said in the message already
        network_problem = "" if self.settings.cloud_nat or unreadable else self._network_problem()
        if missing:
            raise PermissionDenied(
                f"cannot run on project {self.project}: the caller lacks {', '.join(missing)} "
                f"(grant {role} on the project, roles/compute.networkUser on the project "
                f"that owns the subnet, and roles/iam.serviceAccountUser on {self.settings.service_account})"
                + (f"; also: {network_problem}" if network_problem else "")
            )
        if network_problem:
            raise BadInput(f"cannot run on project {self.project}: {network_problem}")

    def check_job(self, job: Job, allow_cpu: bool = False) -> None:
        """A GPU job: its accelerator type must exist in a configured zone (acceleratorTypes.get in
        each); the run then tries only the zones that offer it. --allow-cpu is for the local profile:
        a VM whose GPUs do not work must not bill them while the job runs on its CPU."""
        if allow_cpu:
            raise BadInput("--allow-cpu applies to the local profile: on Compute Engine a GPU job gets its GPUs or fails (104)")
        if not job.gpu_count:
            return
        offered = []
        for zone in self.zones:
            what = f"looking up accelerator type {job.gpu_type} in {zone}"
            try:
                self._call(what, self.accelerator_types.get, project=self.project, zone=zone, accelerator_type=job.gpu_type)
            except NotFound:
                continue
            offered.append(zone)
        if not offered:
            raise BadInput(
                f"job {job.name} asks for {job.gpu_type} and none of the configured zones ({', '.join(self.zones)}) "
                f"offers it: expected zones of {self.settings.region} that do "
                f"(gcloud compute accelerator-types list --filter=name={job.gpu_type}), or another region"
            )
        self.zones = tuple(offered)

    def _missing_permissions(self, permissions: tuple[str, ...]) -> list[str]:
        """testIamPermissions answers with the subset the caller holds (no permission needed to ask)."""
        # The test profile serves both testIamPermissions from the fake Compute API.
        session, resource_manager = self.clients.session(self.settings.compute_endpoint, RESOURCE_MANAGER)
        _, iam = self.clients.session(self.settings.compute_endpoint, IAM)
        account, host = self.settings.service_account, self.vpc.project
        checks = [
            (f"{resource_manager}/v1/projects/{self.project}:testIamPermissions", permissions, ""),
            (f"{resource_manager}/v1/projects/{host}:testIamPermissions", NETWORK_PERMISSIONS, f" on project {host}"),
            (
                f"{iam}/v1/projects/{self.project}/serviceAccounts/{account}:testIamPermissions",
                ("iam.serviceAccounts.actAs",),
                f" on {account}",
            ),
        ]
        if host == self.project:  # no Shared VPC: one question to the project
            checks[:2] = [(checks[0][0], permissions + NETWORK_PERMISSIONS, "")]
        missing = []
        for url, asked, where in checks:
            with errors.translated(f"checking permissions{where}", GRANT):
                held = held_permissions(session, url, asked, self.api_deadline)
            missing += [f"{p}{where}" for p in asked if p not in held]
        return missing

    def _network_problem(self) -> str:
        region, name, host = self.vpc.region, self.vpc.subnet_to_check, self.vpc.project
        where = f"subnetwork {name} in {region}" + (f" of project {host}" if host != self.project else "")
        try:
            subnet = self._call(f"reading {where}", self.subnetworks.get, project=host, region=region, subnetwork=name)
        except NotFound:
            return f"{where} does not exist (set mlbatch.profiles.<profile>.subnetwork, and network_project for a Shared VPC)"
        if subnet.private_ip_google_access:
            return ""
        return (
            f"{where} has no Private Google Access, and instances have no external IP: "
            f"enable it (gcloud compute networks subnets update {name} --project {host} --region {region} "
            "--enable-private-ip-google-access), or configure cloud_nat: true if the VPC has Cloud NAT"
        )

    # --- the provider line ----------------------------------------------------------------------

    def create(self, request: InstanceRequest, zone: str) -> None:
        what = f"creating {request.name} in {zone}"
        insert = compute_v1.InsertInstanceRequest(
            project=self.project, zone=zone, instance_resource=self.instance_body(request, zone), request_id=str(uuid.uuid4())
        )
        self._zone_of[request.name] = zone
        with errors.translated(what, GRANT):
            try:
                op = self.instances.insert_unary(request=insert, retry=retry(self.api_deadline), timeout=60)
            except gexc.Conflict:
                # A retried insert whose first response was lost, on a server that did not
                # deduplicate by request_id: ours if it carries our run id and attempt.
                get = self.instances.get
                labels = self._call(what, get, project=self.project, zone=zone, instance=request.name).labels
                if labels.get("run-id") == request.labels["run-id"] and labels.get("attempt") == request.labels["attempt"]:
                    return
                raise
        try:
            self.waiter.wait(op, what, bound=self.operation_timeout, where=zone)
        except CapacityError:
            self._zone_of.pop(request.name, None)
            raise

    def adopt(self, name: str, zone: str) -> None:
        self._zone_of[name] = zone

    def _zone(self, name: str) -> str:
        """The zone this process created or was told (adopt) the instance is in; only an
        instance nobody recorded falls back to the first zone."""
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
        return bool(self._operations_of(name, self._zone(name), '(operationType = "compute.instances.preempted")'))

    def _operations_of(self, name: str, zone: str, terms: str) -> list[Any]:
        """The zone's operations on this one instance that match `terms` too (a Compute list filter)."""
        target = f"https://www.googleapis.com/compute/v1/projects/{self.project}/zones/{zone}/instances/{name}"
        request = compute_v1.ListZoneOperationsRequest(
            project=self.project, zone=zone, filter=f'{terms} (targetLink = "{target}")'
        )
        what = f"reading the operations of {name}"
        ops = self._call(what, self.operations.list, request=request)
        with errors.translated(what, GRANT):  # a later page may fail too
            return [op for op in ops if op.target_link.endswith(f"/instances/{name}")]

    def console(self, name: str, stop: threading.Event) -> Iterator[str]:
        """Serial port 1, polled with start/next; a jump in `start` means the buffer rolled over."""
        offset, partial, quiet, began = 0, "", 0, time.monotonic()
        while not stop.is_set():
            request = compute_v1.GetSerialPortOutputInstanceRequest(
                project=self.project, zone=self._zone(name), instance=name, port=1, start=offset
            )
            try:
                out = self._call(
                    f"reading the console of {name}", self.instances.get_serial_port_output, request=request, timeout=30
                )
            except NotFound:
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

    def ends(self, run_id: str, stop: threading.Event) -> Iterator[str]:
        """Compute Engine has no call that blocks until an instance ends (`zoneOperations.wait` waits on
        a known operation; an agent's own delete is not one): the controller's polls find every end."""
        yield from ()

    def delete(self, name: str) -> None:
        """Delete and wait until it is gone. Another delete may be under way (the agent's own,
        the termination action): the API then answers 400 resourceNotReady (retried until the
        instance is gone: 404) or accepts ours and ends its operation in 404. Both mean gone.
        The agent deletes its VM once its records are written, so when the controller comes to
        delete, that delete is usually under way: it is waited on (zoneOperations.wait answers as
        it ends) rather than found over by retried deletes, whose backoff (up to 5 s apart) came
        after the instance was gone."""
        zone = self._zone(name)
        what = f"deleting {name}"
        under_way = self._delete_under_way(name, zone)
        if under_way is not None:
            with contextlib.suppress(MlbatchError):  # it failed, or was not a delete after all: ours below says
                self.waiter.wait(under_way, what, bound=self.operation_timeout, where=zone)
        request = compute_v1.DeleteInstanceRequest(project=self.project, zone=zone, instance=name, request_id=str(uuid.uuid4()))
        try:
            op = self._call(what, self.instances.delete_unary, request=request)
            self.waiter.wait(op, what, bound=self.operation_timeout, where=zone)
        except NotFound:
            return

    def _delete_under_way(self, name: str, zone: str) -> Any:
        """The delete operation of this instance that is not DONE yet, or None."""
        try:
            ops = self._operations_of(name, zone, '(operationType = "delete") (status != "DONE")')
        except MlbatchError:  # only a shortcut: our own delete works without it
            return None
        return ops[0] if ops else None

    def list_ours(self) -> list[InstanceInfo]:
        out = []
        for zone in self.settings.zones:  # every configured zone, whatever a GPU job narrowed self.zones to
            request = compute_v1.ListInstancesRequest(
                project=self.project, zone=zone, filter=f'labels.{MANAGED_LABEL_KEY}="{MANAGED_LABEL_VALUE}"'
            )
            what = f"listing instances in {zone}"
            pages = self._call(what, self.instances.list, request=request)
            with errors.translated(what, GRANT):  # a later page may fail too
                for inst in pages:
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
            network_interfaces=[self._network_interface()],
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
        op = self._call(what, self.instances.insert_unary, request=request)
        self.waiter.wait(op, what, bound=self.operation_timeout, where=zone)
        deadline = time.monotonic() + self.operation_timeout
        while True:  # the insert is DONE once the VM exists; it may still be STAGING
            instance = self._call(what, self.instances.get, project=self.project, zone=zone, instance=name)
            if instance.status == "RUNNING" and instance.network_interfaces[0].network_i_p:
                return instance.network_interfaces[0].network_i_p
            if instance.status not in ("PROVISIONING", "STAGING") or time.monotonic() > deadline:
                raise MlbatchError(f"{what}: the VM is {instance.status}, not RUNNING with an internal IP")
            time.sleep(2)
