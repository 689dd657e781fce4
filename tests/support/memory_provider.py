"""An in-memory Provider whose instances do what the test scripts, for fast controller tests.

It keeps the Provider protocol of mlbatch/providers/base.py as strictly as the real ones:
`create` refuses an unknown zone or a name in use, `state` says GONE for what was deleted or
never made, `delete` is idempotent, `list_ours` returns only instances labelled
managed-by=mlbatch. The instance's agent is the real one's record path
(mlbatch.agent.runner.Attempt: log, attempt.json, result.json into the run's bucket); only
the container part (pull, run) is replaced by the scripted outcome.

    provider = MemoryProvider(tmp_path / "instances", zones=("zone-a", "zone-b"))
    provider.script(preempt(), succeed("hello"))     # what attempt 1, 2, ... do
    provider.no_capacity_in.add("zone-a")            # creates there raise CapacityError
    provider.raise_from("state", Cancelled("SIGTERM"))  # the next state() raises it
    provider.raise_from("create", QuotaError("..."), after=1)  # the second create raises it
    provider.script(succeed(metrics={"accuracy": 0.9}))  # the job wrote results/metrics.json
    provider.nodes_fail = 1                          # the next node's agent fails at its start

A local sweep's node (request.node, agent/node.py) takes the sweep's tasks in turn through the
real claims (core/sweeps.py), each task doing the next scripted behaviour; one that does not
end (hang, stay_in), is preempted or vanishes ends the node's turn there.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlbatch.agent.runner import Attempt
from mlbatch.core import runs, sweeps
from mlbatch.core.bucket import open_bucket
from mlbatch.core.errors import AlreadyExists, CapacityError, NotFound, QuotaError
from mlbatch.core.names import is_managed
from mlbatch.core.sweeps import RecordKeys
from mlbatch.providers.base import GONE, RUNNING, STOPPED, InstanceInfo, InstanceRequest


@dataclasses.dataclass(frozen=True)
class Behaviour:
    """What one instance does once created."""

    status: str | None  # the status its agent records; None: it records nothing
    exit_code: int = -1
    lines: tuple[str, ...] = ()
    end_state: str = STOPPED  # its state afterwards (RUNNING: it never ends)
    preempted: bool = False  # whether the provider says it took the instance away
    phase: str = ""  # the phase its agent reports having entered (progress.json) and stays in
    results: tuple[tuple[str, bytes], ...] = ()  # files its job leaves in $MLBATCH_RESULTS_DIR, uploaded by the agent


def _results(results: dict[str, bytes] | None, metrics: dict[str, Any] | None) -> tuple[tuple[str, bytes], ...]:
    """The files a job leaves: `results`, and `metrics` as its metrics.json."""
    files = dict(results or {})
    if metrics is not None:
        files["metrics.json"] = json.dumps(metrics).encode()
    return tuple(files.items())


def succeed(*lines: str, results: dict[str, bytes] | None = None, metrics: dict[str, Any] | None = None) -> Behaviour:
    return Behaviour(runs.SUCCEEDED, 0, lines, results=_results(results, metrics))


def fail(exit_code: int, *lines: str, metrics: dict[str, Any] | None = None) -> Behaviour:
    return Behaviour(runs.FAILED, exit_code, lines, results=_results(None, metrics))


def preempt(*lines: str, results: dict[str, bytes] | None = None) -> Behaviour:
    """Spot preemption: the agent gets SIGTERM and records the attempt as preempted (after
    uploading `results`, when given: what it managed to upload before the VM went)."""
    return Behaviour(runs.PREEMPTED, -1, lines, preempted=True, results=tuple((results or {}).items()))


def vanish(preempted: bool = True) -> Behaviour:
    """The instance is gone without a record (taken away before its agent could write)."""
    return Behaviour(None, end_state=GONE, preempted=preempted)


def hang(*lines: str) -> Behaviour:
    """The instance runs its job and never records an end."""
    return Behaviour(None, lines=lines, end_state=RUNNING, phase=runs.RUN)


def stay_in(phase: str, *lines: str) -> Behaviour:
    """The instance's agent enters `phase` (a slow pull, a big upload) and is still in it."""
    return Behaviour(None, lines=lines, end_state=RUNNING, phase=phase)


@dataclasses.dataclass
class MemoryInstance:
    request: InstanceRequest | None
    zone: str
    labels: dict[str, str]
    state: str
    preempted: bool = False
    lines: tuple[str, ...] = ()


class MemoryProvider:
    name = "memory"
    creates_at_once = 1  # scripted behaviours go to instances in the order they are created

    def __init__(self, workdir: Path, zones: tuple[str, ...] = ("zone-a",)):
        self.workdir = workdir
        self.zones = zones
        self.no_capacity_in: set[str] = set()
        self.quota_exceeded = False
        self.instances: dict[str, MemoryInstance] = {}
        self.requests: list[tuple[InstanceRequest, str]] = []  # every create call that made an instance
        self.deleted: list[str] = []
        self.adopted: dict[str, str] = {}  # instance -> the zone a controller was told it is in
        self.state_checks = 0  # state() calls: how a test knows a watcher has looked again
        self.node_tasks: list[InstanceRequest] = []  # what each task a node took ran: its spec, its node (name)
        self.nodes_fail = 0  # how many of the next nodes end at their start, taking no task
        self._script: list[Behaviour] = []
        self._raise: dict[str, tuple[BaseException, int]] = {}  # method -> (what to raise, calls to let pass first)
        self._lock = threading.Lock()  # console() runs in the controller's streaming thread

    # --- what the test drives -----------------------------------------------------------

    def script(self, *behaviours: Behaviour) -> None:
        """What the next instances do, one behaviour per create, in order."""
        self._script.extend(behaviours)

    def raise_from(self, method: str, exc: BaseException, after: int = 0) -> None:
        """The next call of `method` ("create", "state", "delete", ...) raises `exc` (with
        `after`, the call after that many more)."""
        self._raise[method] = (exc, after)

    def add_foreign(self, name: str, labels: dict[str, str], state: str = RUNNING, zone: str = "") -> None:
        """An instance someone else made (gc must judge it by its labels)."""
        self.instances[name] = MemoryInstance(None, zone or self.zones[0], labels, state)

    def running(self) -> list[str]:
        return [name for name, inst in self.instances.items() if inst.state != GONE]

    def _interrupt(self, method: str) -> None:
        exc, after = self._raise.pop(method, (None, 0))
        if exc is not None and after:
            self._raise[method] = (exc, after - 1)
        elif exc is not None:
            raise exc

    # --- the Provider protocol ----------------------------------------------------------

    def preflight(self) -> None:
        """Nothing to check in memory (the gce provider's preflight is tested against the fake API),
        unless the test makes it refuse (raise_from("preflight", PermissionDenied(...)))."""
        self._interrupt("preflight")

    def check_job(self, job, allow_cpu: bool = False) -> None:
        """Instances in memory have whatever GPUs they are asked for."""

    def describe(self, request: InstanceRequest, zone: str) -> dict:
        return {"zone": zone, "name": request.name, "spot": request.spot, "labels": request.labels}

    def create(self, request: InstanceRequest, zone: str) -> None:
        self._interrupt("create")
        if zone not in self.zones:
            raise NotFound(f"zone {zone} does not exist: expected one of {', '.join(self.zones)}")
        if request.name in self.instances and self.instances[request.name].state != GONE:
            raise AlreadyExists(f"instance {request.name} already exists")
        if self.quota_exceeded:
            raise QuotaError(f"creating {request.name} in {zone}: Quota 'CPUS' exceeded")
        if zone in self.no_capacity_in:
            raise CapacityError(f"{zone}: ZONE_RESOURCE_POOL_EXHAUSTED")
        if request.node:
            self._node(request, zone)
            return
        behaviour = self._next(request.name)
        instance = MemoryInstance(request, zone, dict(request.labels), RUNNING, lines=behaviour.lines)
        with self._lock:
            self.instances[request.name] = instance
            self.requests.append((request, zone))
        if behaviour.status is not None or behaviour.phase:
            self._agent(request, behaviour)
        instance.state, instance.preempted = behaviour.end_state, behaviour.preempted

    def _next(self, what: str) -> Behaviour:
        if not self._script:
            raise AssertionError(f"the test scripted no behaviour for {what}")
        return self._script.pop(0)

    def _node(self, request: InstanceRequest, zone: str) -> None:
        """A sweep's node: the real claims, then each task taken does the next scripted behaviour."""
        instance = MemoryInstance(request, zone, dict(request.labels), RUNNING)
        with self._lock:
            self.instances[request.name] = instance
            self.requests.append((request, zone))
        if self.nodes_fail:
            self.nodes_fail -= 1
            instance.state = STOPPED
            return
        bucket = open_bucket(request.spec.bucket)
        plan = sweeps.read_plan(bucket, request.spec.run_id)
        assert plan is not None, "a node is started for a sweep, whose spec.json has its plan"
        last, behaviour = -1, Behaviour(runs.SUCCEEDED)
        while (task := sweeps.claim_next(bucket, request.spec.run_id, len(plan.tasks), request.name, last + 1)) is not None:
            last, behaviour = task, self._next(f"task {task} on node {request.name}")
            spec = dataclasses.replace(request.spec, params=plan.tasks[task].params, argv=plan.tasks[task].argv)
            taken = dataclasses.replace(request, spec=spec, task=task, node=False)
            self.node_tasks.append(taken)
            if behaviour.status is not None or behaviour.phase:
                self._agent(taken, behaviour)
            if behaviour.status in (None, runs.PREEMPTED):  # it does not end, or the node goes with it
                break
        instance.state, instance.preempted = behaviour.end_state, behaviour.preempted

    def _agent(self, request: InstanceRequest, behaviour: Behaviour) -> None:
        """The real agent's records for the scripted outcome."""
        keys = RecordKeys.for_task(request.spec.run_id, request.task, request.attempt) if request.task is not None else None
        attempt = Attempt(request.spec, request.attempt, request.name, self.workdir / request.name, keys)
        try:
            if behaviour.phase:
                with attempt.phase(behaviour.phase):
                    pass
            for line in behaviour.lines:
                attempt.log.write(line)
            if behaviour.results:  # the job's results, uploaded by the agent's own upload
                folder = attempt.workdir / "results"
                for relative, data in behaviour.results:
                    (folder / relative).parent.mkdir(parents=True, exist_ok=True)
                    (folder / relative).write_bytes(data)
                with attempt.phase(runs.UPLOAD):
                    attempt.upload()
            if behaviour.status is not None:
                attempt.log.info(f"attempt {request.attempt} {behaviour.status}")
        finally:
            attempt.log.close()
        if behaviour.status is not None:
            attempt.record(behaviour.status, behaviour.exit_code)

    def adopt(self, name: str, zone: str) -> None:
        instance = self.instances.get(name)
        if instance is not None and instance.zone != zone:  # as a zonal API would answer 404
            raise AssertionError(f"instance {name} is in {instance.zone}, not in {zone}")
        self.adopted[name] = zone

    def state(self, name: str) -> str:
        self.state_checks += 1
        self._interrupt("state")
        instance = self.instances.get(name)
        return GONE if instance is None else instance.state

    def was_preempted(self, name: str) -> bool:
        self._interrupt("was_preempted")
        instance = self.instances.get(name)
        return bool(instance and instance.preempted)

    def console(self, name: str, stop: threading.Event) -> Iterator[str]:
        with self._lock:
            instance = self.instances.get(name)
        if instance is None:
            return
        yield from instance.lines
        if instance.state == RUNNING:
            stop.wait()

    def ends(self, run_id: str, stop: threading.Event) -> Iterator[str]:
        """No events in memory: the controllers' polls find every end (as on GCE)."""
        yield from ()

    def delete(self, name: str) -> None:
        self._interrupt("delete")
        instance = self.instances.get(name)
        if instance is not None and instance.state != GONE:
            instance.state = GONE
            self.deleted.append(name)

    def list_ours(self) -> list[InstanceInfo]:
        return [
            InstanceInfo(name=name, zone=inst.zone, state=inst.state, labels=dict(inst.labels))
            for name, inst in self.instances.items()
            if inst.state != GONE and is_managed(inst.labels)
        ]
