"""jobs and their tasks: the REST methods (create, get, list, delete; taskGroups.tasks list/get)."""

from __future__ import annotations

import re
import threading
import uuid
from typing import Any

from mlbatch.core.names import LABEL_KEY, LABEL_VALUE
from tests.support.fake_batch.state import FakeJob, FakeTask
from tests.support.fake_compute.accelerators import ZONE_ACCELERATORS, shape_takes
from tests.support.fake_http import ApiError, not_found

_LOC = r"/v1/(?P<parent>projects/[^/]+/locations/[^/]+)"
_JOB = r"/v1/(?P<name>projects/[^/]+/locations/[^/]+/jobs/[^/]+)"
_GROUP = r"projects/[^/]+/locations/[^/]+/jobs/[^/]+/taskGroups/[^/]+"
_TASKS = "projects.locations.jobs.taskGroups.tasks"
JOB_ID = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
_FILTER = re.compile(r'^labels\.(?P<key>[a-z][a-z0-9_-]*)\s*=\s*"(?P<value>[^"]*)"$')


def enum(value: Any, names: tuple[str, ...]) -> str:
    """An enum as a name, whether the client sent the name or (enum-encoding=int) its number."""
    return names[value] if isinstance(value, int) and 0 <= value < len(names) else str(value)


class JobsMixin:
    ROUTES = [
        ("POST", _LOC + r"/jobs", "projects.locations.jobs", "create"),
        ("GET", _LOC + r"/jobs", "projects.locations.jobs", "list"),
        ("GET", _JOB, "projects.locations.jobs", "get"),
        ("DELETE", _JOB, "projects.locations.jobs", "delete"),
        ("GET", rf"/v1/(?P<parent>{_GROUP})/tasks", _TASKS, "list"),
        ("GET", rf"/v1/(?P<name>{_GROUP}/tasks/[^/]+)", _TASKS, "get"),
    ]

    def find(self, job_id: str) -> FakeJob | None:
        with self._lock:
            return next((j for j in self.jobs.values() if j.name.endswith(f"/jobs/{job_id}")), None)

    def _job(self, name: str) -> FakeJob:
        if name not in self.jobs:
            raise not_found(name)
        return self.jobs[name]

    def _check_job(self, body: dict[str, Any]) -> None:
        """What the real service refuses beyond the discovery document's types."""
        groups = body.get("taskGroups") or []
        if len(groups) != 1:
            raise ApiError(400, "a job must have exactly one task group")
        group = groups[0]
        count = int(group.get("taskCount", 1))
        if not 1 <= count <= 100000:
            raise ApiError(400, f"taskCount {count} must be from 1 to 100000")
        if "taskEnvironments" in group and len(group["taskEnvironments"]) != count:
            raise ApiError(400, f"taskEnvironments has {len(group['taskEnvironments'])} entries, but taskCount is {count}")
        if int(group.get("parallelism", 1)) < 1:
            raise ApiError(400, "parallelism must be at least 1")
        spec = group.get("taskSpec", {})
        if len(spec.get("lifecyclePolicies") or []) > 1:
            # TaskSpec.lifecyclePolicies (batch.v1): "Currently we only support one lifecycle policy."
            # The fake refuses more, as the harsher reading (the message is the fake's own words).
            raise ApiError(
                400,
                "Invalid value at 'job.task_groups[0].task_spec.lifecycle_policies': "
                f"{len(spec['lifecyclePolicies'])} lifecycle policies given, only one is supported",
            )
        retries = int(spec.get("maxRetryCount", 0))
        if not 0 <= retries <= 10:  # TaskSpec.maxRetryCount: "The valid value range is [0, 10]."
            raise ApiError(400, f"Invalid value at 'job.task_groups[0].task_spec.max_retry_count' ({retries}): [0, 10]")
        runnables = spec.get("runnables") or []
        if not runnables or any("script" not in r or not r["script"].get("text") for r in runnables):
            raise ApiError(400, "the fake runs script runnables (script.text); at least one is required")
        duration = spec.get("maxRunDuration", "")
        if duration and not re.fullmatch(r"\d+(\.\d+)?s", duration):
            raise ApiError(
                400,
                f"Invalid value at 'job.task_groups[0].task_spec.max_run_duration' ({duration!r}): expected e.g. 3600s",
            )
        for where in (body.get("labels", {}), body.get("allocationPolicy", {}).get("labels", {})):
            for key, value in where.items():
                if not LABEL_KEY.fullmatch(key) or not LABEL_VALUE.fullmatch(value):
                    raise ApiError(400, f"Invalid label {key}={value!r}")
        image = self._boot_image(body)
        if image not in self.images:
            raise ApiError(400, f"boot disk image {image!r} not found in project {self.project}")
        self._check_accelerators(body.get("allocationPolicy", {}))

    def _check_accelerators(self, allocation: dict[str, Any]) -> None:
        """A job's GPUs (AllocationPolicy.InstancePolicy.accelerators, batch.v1): as Compute takes
        them on its VMs (tests/support/fake_compute/accelerators.py, from Google's GPU pages): a
        type offered in one of the allowed zones, on a machine type that takes it in that count."""
        policy = (allocation.get("instances") or [{}])[0].get("policy", {})
        machine = policy.get("machineType", "")
        zones = [z.removeprefix("zones/") for z in allocation.get("location", {}).get("allowedLocations", [])]
        for accelerator in policy.get("accelerators") or []:
            kind, count = accelerator.get("type", ""), int(accelerator.get("count", 0))
            if not any(kind in ZONE_ACCELERATORS.get(zone, set()) for zone in zones):
                raise ApiError(400, f"accelerator type {kind!r} is not offered in any of the allowed locations {zones}")
            if not shape_takes(machine, kind, count):
                raise ApiError(400, f"machine type {machine!r} cannot have {count} {kind} attached")

    def _boot_image(self, body: dict[str, Any]) -> str:
        policy = (body.get("allocationPolicy", {}).get("instances") or [{}])[0].get("policy", {})
        return policy.get("bootDisk", {}).get("image", "").rsplit("/", 1)[-1]

    def _jobs_create(self, parent, params, body):
        job_id = params.get("jobId", "")
        if not JOB_ID.fullmatch(job_id):
            raise ApiError(400, f"Invalid value for job_id {job_id!r}: expected [a-z]([a-z0-9-]{{0,61}}[a-z0-9])?")
        request_id = params.get("requestId", "")
        if request_id and request_id in self.by_request_id:
            return self.jobs[self.by_request_id[request_id]].resource()
        name = f"{parent}/jobs/{job_id}"
        if name in self.jobs:
            raise ApiError(409, f"Job {name} already exists", "alreadyExists")
        self._check_job(body)
        job = FakeJob(name=name, body=body, uid=f"{job_id[:20]}-{uuid.uuid4().hex[:8]}")
        job.tasks = [FakeTask(i) for i in range(int(job.group.get("taskCount", 1)))]
        job.events.append({"type": "STATUS_CHANGED", "description": f"Job state is set to QUEUED for job {name}."})
        self.jobs[name] = job
        if request_id:
            self.by_request_id[request_id] = name
        self.creates_performed += 1
        threading.Thread(target=self._schedule, args=(job,), daemon=True).start()
        return job.resource()

    def _jobs_get(self, name, params, body):
        return self._job(name).resource()

    def _jobs_list(self, parent, params, body):
        wanted: dict[str, str] = {}
        for clause in filter(None, (c.strip() for c in params.get("filter", "").split(" AND "))):
            match = _FILTER.fullmatch(clause)
            if not match:
                raise ApiError(400, f'fake batch: unsupported filter {clause!r}: expected labels.KEY="VALUE" [AND ...]')
            wanted[match["key"]] = match["value"]
        jobs = [
            j.resource()
            for j in self.jobs.values()
            if j.name.startswith(parent + "/") and all(j.body.get("labels", {}).get(k) == v for k, v in wanted.items())
        ]
        return {"jobs": jobs}

    def _jobs_delete(self, name, params, body):
        job = self._job(name)
        self.delete_job(job)
        return {
            "name": f"{name.split('/jobs/')[0]}/operations/operation-{uuid.uuid4().hex[:12]}",
            "metadata": {
                "@type": "type.googleapis.com/google.cloud.batch.v1.OperationMetadata",
                "target": name,
                "verb": "delete",
            },
            "done": False,
        }

    def _task(self, job: FakeJob, task: FakeTask) -> dict[str, Any]:
        return {
            "name": f"{job.name}/taskGroups/group0/tasks/{task.index}",
            "status": {"state": task.state, "statusEvents": task.events},
        }

    def _tasks_list(self, parent, params, body):
        job = self._job(parent.split("/taskGroups/")[0])
        if not parent.endswith("/taskGroups/group0"):
            raise not_found(parent)
        return {"tasks": [self._task(job, t) for t in job.tasks]}

    def _tasks_get(self, name, params, body):
        job = self._job(name.split("/taskGroups/")[0])
        index = name.rsplit("/", 1)[1]
        if not index.isdigit() or int(index) >= len(job.tasks):
            raise not_found(name)
        return self._task(job, job.tasks[int(index)])
