"""The provider line: what the controller asks of any place that runs instances."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, Protocol

from mlbatch.core.catalog import Job
from mlbatch.core.errors import CapacityError as CapacityError  # re-exported: providers raise it, the controller catches it
from mlbatch.core.errors import QuotaError as QuotaError
from mlbatch.core.runs import RunSpec

# Instance states as the controller sees them.
RUNNING = "running"
STOPPED = "stopped"  # ended, still present (local: exited container; GCE: TERMINATED)
GONE = "gone"  # deleted, or never created
# Characters a console holds for a line before passing it on unfinished (a \r progress bar
# never ends its line): the controller's memory stays bounded whatever the job prints.
CONSOLE_LINE_LIMIT = 64 * 1024


@dataclasses.dataclass(frozen=True)
class InstanceRequest:
    name: str
    spec: RunSpec
    job: Job
    attempt: int
    labels: dict[str, str]
    max_run_seconds: int  # the instance deletes itself after this, controller or not
    spot: bool
    detached: bool = False  # nobody watches: the instance removes itself when its agent is done
    task: int | None = None  # a sweep's task index: the agent records under tasks/<i>/
    node: bool = False  # a local sweep's node: it takes the sweep's tasks in turn (run/sweep_local.py)


@dataclasses.dataclass(frozen=True)
class InstanceInfo:
    name: str
    zone: str
    state: str
    labels: dict[str, str]


class Provider(Protocol):
    name: str
    zones: tuple[str, ...]  # tried in order when a zone has no capacity
    # How many creates a sweep may have under way at once: each waits on an engine or an API
    # (a container's start, an insert's operation), which works on several side by side.
    creates_at_once: int

    def preflight(self) -> None:
        """Refuse a run this provider cannot do (permissions, network), before anything is created."""

    def check_job(self, job: Job, allow_cpu: bool = False) -> None:
        """Refuse (100) a job this provider cannot give what it asks for (GPUs), before anything is created;
        `allow_cpu`: a GPU job may run on the CPU where there are none."""

    def describe(self, request: InstanceRequest, zone: str) -> dict[str, Any]:
        """What `create` would send (a docker run, an instances.insert body), without sending it."""

    def create(self, request: InstanceRequest, zone: str) -> None:
        """Create and start the instance in `zone`; CapacityError when the zone has none."""

    def adopt(self, name: str, zone: str) -> None:
        """An instance another process created in `zone` (its attempt's instance.json says
        where): later calls on `name` go there, not to the first of `zones`."""

    def state(self, name: str) -> str:
        """RUNNING, STOPPED or GONE."""

    def was_preempted(self, name: str) -> bool:
        """Whether the provider ended the instance (Spot preemption, maintenance)."""

    def console(self, name: str, stop) -> Iterator[str]:
        """The instance's console lines as they come, until `stop` is set or it ends."""

    def ends(self, run_id: str, stop) -> Iterator[str]:
        """The names of the run's instances as they end, told by the platform as it happens (an
        engine's events), until `stop` is set; nothing where the platform has no such events
        (the caller's polls find every end anyway: this only makes it sooner)."""

    def delete(self, name: str) -> None:
        """Delete the instance and anything it started; idempotent."""

    def list_ours(self) -> list[InstanceInfo]:
        """Instances labelled managed-by=mlbatch, and only those."""
