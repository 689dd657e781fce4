"""Cloud Batch (google-cloud-batch, REST transport): one Batch job per sweep.

The job boots the release's baked image (the same agent, the same agent<->job contract):
one task per params set, one task a VM, the run's spec in the runnable's environment and
each task's params and argv in its task environment; Batch sets BATCH_TASK_INDEX and
BATCH_TASK_RETRY_ATTEMPT. Spot tasks are retried only when preempted; the job's own exit
codes and every other failure fail the task at once (its one lifecycle policy, below).
Batch deletes its VMs when tasks end, and each task has a max run duration, so nothing
outlives the sweep. The job's VMs run as the runner service account, which needs
roles/batch.agentReporter: Batch's agent on each VM reports the tasks' states with it.

Like the gce provider: a request_id per create and delete, and mlbatch.gcp's clients, bounded
retries of transient errors and error translation (reserved exit codes). Imported lazily
(gcp and test profiles).
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import batch_v1

from mlbatch.core import image_paths
from mlbatch.core.catalog import Job
from mlbatch.core.errors import ExitCode, NotFound
from mlbatch.core.gcp_base import SCOPE, retry
from mlbatch.core.names import MANAGED_LABEL_KEY, MANAGED_LABEL_VALUE, is_managed
from mlbatch.core.runs import RunSpec
from mlbatch.core.settings import Settings
from mlbatch.gcp import errors
from mlbatch.gcp.clients import Clients
from mlbatch.gcp.network import vpc

PREEMPTED_EXIT_CODE = 50001  # what Batch reports for a task whose Spot VM was preempted
# The task's one lifecycle policy (TaskSpec.lifecyclePolicies: "Currently we only support one
# lifecycle policy", batch.v1 discovery document): RETRY_TASK "will retry failed tasks if we
# notice any exit code match and fail tasks if no match is found" (LifecyclePolicy.action). A
# preemption ends a task either with Batch's own code or, when the agent records it within the
# shutdown window and exits first, with ours (mlbatch/agent/task.py): both are retried, up to
# maxRetryCount; the job's own codes, our other reserved codes and Batch's other codes fail it.
RETRIED_EXIT_CODES = [PREEMPTED_EXIT_CODE, int(ExitCode.PREEMPTED)]
# What Batch's own exit codes of a task mean (https://cloud.google.com/batch/docs/troubleshooting#reserved-exit-codes),
# said with a task that failed before its agent recorded it.
BATCH_EXIT_CODES = {
    PREEMPTED_EXIT_CODE: "Batch: the task's Spot VM was preempted",
    50002: "Batch: the task's VM stopped reporting (it was lost or deleted, or the runner service account "
    "lacks roles/batch.agentReporter, which Batch's agent on the VM reports with)",
    50005: "Batch: the task outlived its max run duration",
}
AGENT = image_paths.AGENT  # where the agent role installs it in the image
QUOTA_CODES = tuple(sorted(errors.QUOTA_REASONS))  # in a status event: Batch waits for quota that may never come
GRANT = "grant the caller roles/batch.jobsEditor on the project and roles/iam.serviceAccountUser on the runner service account"
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


@dataclasses.dataclass(frozen=True)
class TaskView:
    index: int
    state: str  # PENDING ASSIGNED RUNNING SUCCEEDED FAILED UNEXECUTED
    exit_code: int | None  # of its last execution, when it has run
    message: str  # the last status event


@dataclasses.dataclass(frozen=True)
class JobView:
    name: str
    state: str  # QUEUED SCHEDULED RUNNING SUCCEEDED FAILED DELETION_IN_PROGRESS ...
    counts: dict[str, int]  # task state -> number of tasks
    events: tuple[str, ...]  # status event descriptions, oldest first
    labels: dict[str, str]


def job_id(run_id: str) -> str:
    return f"mlb-{run_id}"  # a Batch job id: [a-z]([a-z0-9-]{0,61}[a-z0-9])?, like instance names


def image_path(ref: str) -> str:
    """Batch takes projects/P/global/images/NAME; the manifest pins the image by self link."""
    return "projects/" + ref.split("/projects/", 1)[1] if "/projects/" in ref else ref


class BatchJobs:
    name = "Cloud Batch"
    api_deadline = 120.0  # seconds a call may spend on transient-error retries

    def __init__(self, settings: Settings):
        self.settings = settings
        self.client = Clients(settings).batch()  # no credentials on the gcp profile: 111 here, before anything
        self.parent = f"projects/{settings.project}/locations/{settings.region}"

    def _name(self, job: str) -> str:
        return f"{self.parent}/jobs/{job}"

    def _call(self, what: str, method, **kwargs):
        """One API call with retries on transient errors; every error comes back as an MlbatchError."""
        return errors.call(what, method, grant=GRANT, deadline=self.api_deadline, **kwargs)

    # --- the job ------------------------------------------------------------------------

    def job_body(
        self,
        spec: RunSpec,
        job: Job,
        tasks: list[dict[str, Any]],
        parallelism: int,
        labels: dict[str, str],
        max_run_seconds: int,
    ) -> batch_v1.Job:
        s = self.settings
        runnable = batch_v1.Runnable(
            # A fixed script: the data travels in the environment, never in a shell string.
            script=batch_v1.Runnable.Script(text=f"exec {AGENT}"),
            environment=batch_v1.Environment(variables={"MLBATCH_RUN_SPEC": spec.to_json()}),
        )
        task_spec = batch_v1.TaskSpec(
            runnables=[runnable],
            max_retry_count=job.max_preemption_retries,
            max_run_duration=f"{max_run_seconds}s",
            lifecycle_policies=[
                batch_v1.LifecyclePolicy(
                    action=batch_v1.LifecyclePolicy.Action.RETRY_TASK,
                    action_condition=batch_v1.LifecyclePolicy.ActionCondition(exit_codes=RETRIED_EXIT_CODES),
                )
            ],
        )
        environments = [
            batch_v1.Environment(variables={"MLBATCH_TASK": json.dumps({"params": p, "argv": job.argv(p)})}) for p in tasks
        ]
        model = batch_v1.AllocationPolicy.ProvisioningModel
        policy = batch_v1.AllocationPolicy.InstancePolicy(
            machine_type=job.machine_type,
            provisioning_model=model.SPOT if job.spot else model.STANDARD,
            boot_disk=batch_v1.AllocationPolicy.Disk(image=image_path(spec.vm_image), size_gb=50, type_="pd-balanced"),
        )
        if job.gpu_count:
            policy.accelerators = [batch_v1.AllocationPolicy.Accelerator(type_=job.gpu_type, count=job.gpu_count)]
        # installGpuDrivers stays false: the boot image of a GPU job is the release's GPU image, whose
        # driver was baked once and checked by the image tests, rather than a driver Batch downloads
        # from NVIDIA on every VM at boot (minutes each, egress to the internet, and a driver the
        # image tests never saw); the agent checks it on the VM before the job runs (agent/gpu.py).
        network = batch_v1.AllocationPolicy.NetworkInterface(
            network=vpc(s).network, subnetwork=vpc(s).subnetwork, no_external_ip_address=True
        )
        allocation = batch_v1.AllocationPolicy(
            location=batch_v1.AllocationPolicy.LocationPolicy(allowed_locations=[f"zones/{z}" for z in s.zones]),
            instances=[
                batch_v1.AllocationPolicy.InstancePolicyOrTemplate(
                    policy=policy, install_gpu_drivers=False, block_project_ssh_keys=True
                )
            ],
            service_account=batch_v1.ServiceAccount(email=s.service_account, scopes=[SCOPE]),
            network=batch_v1.AllocationPolicy.NetworkPolicy(network_interfaces=[network]),
            labels=labels,
        )
        return batch_v1.Job(
            task_groups=[
                batch_v1.TaskGroup(
                    task_spec=task_spec,
                    task_count=len(tasks),
                    parallelism=parallelism,
                    task_count_per_node=1,  # one task a VM: the VM's name is the task's instance
                    task_environments=environments,
                )
            ],
            allocation_policy=allocation,
            labels=labels,
            logs_policy=batch_v1.LogsPolicy(destination=batch_v1.LogsPolicy.Destination.CLOUD_LOGGING),
        )

    # --- calls ------------------------------------------------------------------------------

    def create(self, job: str, body: batch_v1.Job) -> None:
        request = batch_v1.CreateJobRequest(parent=self.parent, job_id=job, job=body, request_id=str(uuid.uuid4()))
        with errors.translated(f"creating Batch job {job}", GRANT):
            try:
                self.client.create_job(request=request, retry=retry(self.api_deadline), timeout=60)
            except gexc.Conflict:
                # A retried create whose first response was lost: ours if it carries our run id.
                existing = self.get(job)
                if existing is None or existing.labels.get("run-id") != body.labels.get("run-id"):
                    raise

    def get(self, job: str) -> JobView | None:
        """The job, or None once it is gone (deleted)."""
        try:
            found = self._call(f"reading Batch job {job}", self.client.get_job, timeout=30, name=self._name(job))
        except NotFound:
            return None
        counts: dict[str, int] = {}
        for group in found.status.task_groups.values():
            for state, n in group.counts.items():
                counts[state] = counts.get(state, 0) + int(n)
        return JobView(
            name=job,
            state=found.status.state.name,
            counts=counts,
            events=tuple(e.description for e in found.status.status_events),
            labels=dict(found.labels),
        )

    def tasks(self, job: str) -> list[TaskView]:
        parent = f"{self._name(job)}/taskGroups/group0"
        what = f"listing tasks of Batch job {job}"
        out = []
        try:
            pages = self._call(what, self.client.list_tasks, timeout=30, parent=parent)
            with errors.translated(what, GRANT):  # the pages after the first too
                for task in pages:
                    events = list(task.status.status_events)
                    executed = [e for e in events if "task_execution" in e]
                    exit_code = executed[-1].task_execution.exit_code if executed else None
                    out.append(
                        TaskView(
                            index=int(task.name.rsplit("/", 1)[1]),
                            state=task.status.state.name,
                            exit_code=exit_code,
                            message=events[-1].description if events else "",
                        )
                    )
        except NotFound:  # the job is gone
            return []
        return sorted(out, key=lambda t: t.index)

    def delete(self, job: str, reason: str) -> None:
        """Ask Batch to delete the job: its VMs go, its tasks stop. Idempotent."""
        request = batch_v1.DeleteJobRequest(name=self._name(job), reason=reason, request_id=str(uuid.uuid4()))
        try:
            self._call(f"deleting Batch job {job}", self.client.delete_job, request=request)
        except NotFound:
            return

    def list_ours(self) -> list[JobView]:
        request = batch_v1.ListJobsRequest(parent=self.parent, filter=f'labels.{MANAGED_LABEL_KEY}="{MANAGED_LABEL_VALUE}"')
        what = f"listing Batch jobs of {self.parent}"
        with errors.translated(what, GRANT):  # the pages after the first too
            found = list(self._call(what, self.client.list_jobs, request=request))
        return [
            JobView(j.name.rsplit("/", 1)[1], j.status.state.name, {}, (), dict(j.labels))
            for j in found
            if is_managed(dict(j.labels))  # the filter already says so; never touch what is not ours
        ]
