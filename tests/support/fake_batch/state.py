"""The fake's state: what to break (Faults), what a job, a task and a task's VM are."""

from __future__ import annotations

import dataclasses
import http.server
import time
from pathlib import Path
from typing import Any

from tests.support.fake_vm.metadata import MetadataFaults

# Which FakeBatch made a VM's container: its own id, so that a fake (or a test session sharing
# the engine) never lists nor removes another's VMs.
OWNER_LABEL = "org.mlbatch.fake-batch"
# Batch's reserved exit codes (https://cloud.google.com/batch/docs/troubleshooting#reserved-exit-codes,
# named by TaskExecution.exitCode in the batch.v1 discovery document).
PREEMPTED_EXIT_CODE = 50001  # the task's Spot VM was preempted
REPORTING_TIMEOUT_EXIT_CODE = 50002  # the VM's Batch agent stopped reporting (the VM went, or cannot report)
MAX_RUN_DURATION_EXIT_CODE = 50005  # the task outlived its max run duration
TERMINAL_TASK = ("SUCCEEDED", "FAILED")


@dataclasses.dataclass
class Faults(MetadataFaults):
    """What to break, set per test (the task VMs' metadata servers: MetadataFaults)."""

    preempt_tasks: dict[int, float] = dataclasses.field(default_factory=dict)  # task index -> seconds into its 1st attempt
    quota_exceeded: bool = False  # VMs of new jobs cannot be created: the job stays SCHEDULED with a quota event
    http_burst: list[int] = dataclasses.field(default_factory=list)  # statuses for the next requests
    lose_create_responses: int = 0  # creates performed whose response is then lost (503)
    forbidden: bool = False  # the caller lacks the Batch permissions (403)


def rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())


@dataclasses.dataclass
class FakeTask:
    index: int
    state: str = "PENDING"
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    container: str = ""
    vm: str = ""  # the hostname of the "VM" running its current attempt
    outputs: list[str] = dataclasses.field(default_factory=list)  # each attempt's runnable output (Cloud Logging's)

    def event(self, description: str, state: str, exit_code: int | None = None) -> None:
        self.state = state
        event: dict[str, Any] = {
            "type": "STATUS_CHANGED",
            "description": description,
            "eventTime": rfc3339(),
            "taskState": state,
        }
        if exit_code is not None:
            event["taskExecution"] = {"exitCode": exit_code}
        self.events.append(event)


@dataclasses.dataclass
class FakeJob:
    name: str  # projects/P/locations/L/jobs/ID
    body: dict[str, Any]
    uid: str
    state: str = "QUEUED"
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    tasks: list[FakeTask] = dataclasses.field(default_factory=list)
    workdir: Path | None = None
    deleting: bool = False
    created: str = dataclasses.field(default_factory=rfc3339)
    consoles: dict[str, str] = dataclasses.field(default_factory=dict)  # VM name -> its serial console, once it is gone

    @property
    def group(self) -> dict[str, Any]:
        return self.body["taskGroups"][0]

    def set_state(self, state: str, description: str = "") -> None:
        if state != self.state:
            text = description or f"Job state is set from {self.state} to {state} for job {self.name}."
            self.events.append({"type": "STATUS_CHANGED", "description": text, "eventTime": rfc3339()})
            self.state = state

    def resource(self) -> dict[str, Any]:
        counts: dict[str, str] = {}
        for task in self.tasks:
            counts[task.state] = str(int(counts.get(task.state, "0")) + 1)
        group = dict(self.group, name=f"{self.name}/taskGroups/group0")
        return {
            **self.body,
            "name": self.name,
            "uid": self.uid,
            "taskGroups": [group],
            "createTime": self.created,
            "updateTime": rfc3339(),
            "status": {"state": self.state, "statusEvents": self.events, "taskGroups": {"group0": {"counts": counts}}},
        }


@dataclasses.dataclass
class TaskVm:
    """One Compute Engine VM of a job, running one task attempt (taskCountPerNode 1). Batch puts
    none of mlbatch's metadata on it: its attributes are empty here."""

    name: str
    zone: str
    instance_id: str
    service_account: str  # the job's allocationPolicy.serviceAccount, else the project's default compute account
    guest: bool  # booted from a guest image (systemd, the image's units) rather than run as a container
    scopes: tuple[str, ...] = ()  # the access scopes the job's allocationPolicy.serviceAccount lists
    preempted: bool = False  # instance/preempted on its metadata server
    container: str = ""
    workdir: Path | None = None
    metadata_server: http.server.ThreadingHTTPServer | None = None

    def metadata(self) -> dict[str, str]:
        return {}
