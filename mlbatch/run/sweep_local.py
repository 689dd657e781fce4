"""A sweep on the local provider: at most P instances at once, nodes that run tasks in turn.

A Cloud Batch VM runs a sweep's tasks one after another; so does a local sweep's node
(agent/node.py): the sweep starts min(P, N) nodes, each takes the next task no node has taken
(tasks/<i>/claim.json), runs its first attempt and records it under tasks/<i>/, and ends when
none is left. A 200-task sweep at parallelism 4 so boots four instances, not 200. Each node is
the throw-away instance a single run uses (its spec and labels from mlbatch/run/launch.py).
A task whose attempt was preempted (its agent recorded so, or its instance vanished without a
record) runs again on an instance of its own, up to the job's retries; a node that ends while
tasks are left untaken is replaced. An attempt's deadline follows its agent's phase, as a run's
does; a node past it is deleted. A result.json written by someone else (runs.cancel) stops the
sweep.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import threading
import time
from collections.abc import Callable, Iterable

from mlbatch.core import runs, sweeps
from mlbatch.core.bucket import Bucket
from mlbatch.core.cancel import Cancelled
from mlbatch.core.manifest import SWEEP_NODES
from mlbatch.core.names import check_gce_name
from mlbatch.core.sweeps import TaskRecord
from mlbatch.providers.base import GONE, STOPPED, InstanceRequest, Provider
from mlbatch.run import launch as launching
from mlbatch.run.controller import POLL, STATE_CHECK_EVERY
from mlbatch.run.deadlines import SELF_DELETE_SLACK, Margins
from mlbatch.run.sweep import PreparedSweep, SweepStopped, read_task_attempt
from mlbatch.ui import Say

LOST_NODES_LIMIT = 2  # nodes that may end before taking a task (a stop, a crash) before the sweep stops


def task_instance_name(run_id: str, task: int, attempt: int) -> str:
    """A retry's own instance."""
    return check_gce_name(f"mlb-{run_id}-t{task}-{attempt}", "instance name")


def node_name(run_id: str, node: int) -> str:
    return check_gce_name(f"mlb-{run_id}-n{node}", "instance name")


@dataclasses.dataclass
class _Running:
    task: int
    attempt: int
    name: str  # the instance it runs on: a node, or the retry's own
    created_at: float  # unix seconds: the instance's creation, or when the node was seen to take it
    deadline: float  # unix seconds, as of the agent's last known phase
    awaited: str  # what the deadline waits for


@dataclasses.dataclass
class _Execution:
    """What one sweep has under way: its instances, the tasks running on them, the retries waiting."""

    tasks: int
    parallelism: int
    instances: dict[str, int | None] = dataclasses.field(default_factory=dict)  # live: a retry's task, or None (a node)
    running: dict[int, _Running] = dataclasses.field(default_factory=dict)  # by task: its attempt under way
    retries: collections.deque[tuple[int, int]] = dataclasses.field(default_factory=collections.deque)
    taken: int = 0  # tasks 0..taken-1 have been taken by nodes (they take them in order)
    took: set[str] = dataclasses.field(default_factory=set)  # the nodes that took a task
    nodes_made: int = 0
    nodes_lost: int = 0  # nodes that ended without taking a task while tasks were left
    ended: set[int] = dataclasses.field(default_factory=set)

    def starts(self) -> tuple[list[tuple[int, int]], int]:
        """The retries to start now, each on its own instance (first: they waited), and how many new nodes.
        Under a release whose agent has no node mode every first attempt waits here as a retry does."""
        free = self.parallelism - len(self.instances)
        retries = [self.retries.popleft() for _ in range(min(free, len(self.retries)))]
        busy = {r.name for r in self.running.values()}
        idle_nodes = sum(1 for name, task in self.instances.items() if task is None and name not in busy)
        return retries, max(0, min(free - len(retries), self.tasks - self.taken - idle_nodes))


class _Told:
    """The names of instances the platform said have ended (Provider.ends), until the sweep takes them."""

    def __init__(self) -> None:
        self._names: set[str] = set()
        self._said = threading.Condition()

    def add(self, name: str) -> None:
        with self._said:
            self._names.add(name)
            self._said.notify_all()

    def wait(self, timeout: float) -> set[str]:
        """The names said since the last call, waiting up to `timeout` for one."""
        with self._said:
            self._said.wait_for(lambda: bool(self._names), timeout)
            names, self._names = self._names, set()
        return names


class LocalTasks:
    poll = POLL  # seconds between reads of the running tasks' records
    state_check_every = STATE_CHECK_EVERY  # seconds between asks to the provider
    margins = Margins()

    def __init__(self, bucket: Bucket, provider: Provider, say: Say):
        self.bucket, self.provider, self.say = bucket, provider, say
        self.name = f"{provider.name} instances"

    def preflight(self) -> None:
        self.provider.preflight()

    def stop(self, run_id: str) -> None:
        """Delete every instance of the sweep (runs.cancel; the sweep's own run-batch then stops too)."""
        self._delete_all([info.name for info in self.provider.list_ours() if info.labels.get("run-id") == run_id])

    def execute(self, spec: runs.RunSpec, sweep: PreparedSweep, outcomes: list[TaskRecord], started: Callable[[], None]) -> None:
        job = sweep.prepared.job
        run = _Execution(len(sweep.tasks), sweep.parallelism)
        if SWEEP_NODES not in sweep.prepared.manifest.image_for(job).agent_features:
            self.say(f"release {spec.version}'s agent predates sweep nodes: an instance a task")
            run.retries.extend((task, 1) for task in range(run.tasks))  # each on its own instance, as a retry is
            run.taken = run.tasks  # no node takes any
        next_state_check = time.monotonic() + self.state_check_every
        stop, told = threading.Event(), _Told()
        threading.Thread(target=self._wake_on_ends, args=(spec.run_id, stop, told), daemon=True).start()
        try:
            while len(run.ended) < run.tasks:
                retries, nodes = run.starts()
                if retries or nodes:
                    self._start_all(spec, sweep, run, retries, nodes, outcomes, started)
                said_ended = told.wait(self.poll) & run.instances.keys()  # the engine said so: look now, ask nothing
                ask_states = time.monotonic() >= next_state_check  # the polls find every end, told or not
                check_state = bool(said_ended) or ask_states
                if check_state:
                    if runs.read_result(self.bucket, spec.run_id) is not None:  # before the states: cancel deletes after
                        raise Cancelled("runs.cancel")
                gone = set(said_ended)
                if ask_states:
                    next_state_check = time.monotonic() + self.state_check_every
                    gone |= {n for n in run.instances if self.provider.state(n) in (STOPPED, GONE)}
                self._see_taken(spec, run, outcomes)
                for task, r in list(run.running.items()):
                    ended = self._ended(spec, r, r.name in gone, check_state)
                    if ended is None:
                        continue
                    del run.running[task]
                    status, exit_code, message = ended
                    if run.instances.get(r.name) == task or status == runs.TIMEOUT:  # a retry's own instance, or a stuck node
                        gone.add(r.name)
                    if status == runs.PREEMPTED and r.attempt <= job.max_preemption_retries:
                        self.say(f"task {task}: attempt {r.attempt} was preempted; retrying")
                        run.retries.append((task, r.attempt + 1))
                        continue
                    outcomes[task].ended(status, exit_code, r.attempt, message)
                    run.ended.add(task)
                    done = sum(1 for o in outcomes if o.attempts and o.status != runs.CANCELLED)
                    self.say(f"task {task} {status} ({done}/{len(outcomes)} done)")
                if gone:
                    self._forget(run, gone)
        finally:
            stop.set()
            self._delete_all(run.instances)  # what ended last, or cancelled or failed: nothing is left running

    def _see_taken(self, spec: runs.RunSpec, run: _Execution, outcomes: list[TaskRecord]) -> None:
        """The tasks nodes have taken since the last look: each runs its first attempt on its node."""
        while run.taken < run.tasks:
            claim = runs.read_record(self.bucket, sweeps.claim_key(spec.run_id, run.taken), sweeps.TaskClaim)
            if claim is None:
                return
            created_at = time.time()
            deadline, awaited = self.margins.deadline(created_at, spec.timeout_seconds, None)
            run.running[run.taken] = _Running(run.taken, 1, claim.node, created_at, deadline, awaited)
            run.took.add(claim.node)
            outcomes[run.taken].attempts = 1
            run.taken += 1

    def _forget(self, run: _Execution, gone: set[str]) -> None:
        """Delete the instances that ended (or must end); stop a sweep whose nodes fail before taking a task."""
        for name in gone:
            if run.instances.pop(name, 0) is None and name not in run.took and run.taken < run.tasks:
                run.nodes_lost += 1  # it ended with tasks left for it, having taken none
        self._delete_all(gone)
        if run.nodes_lost > LOST_NODES_LIMIT:  # nodes that fail at their start fail for a reason the next one has too
            raise SweepStopped(
                f"{run.nodes_lost} instances of the sweep ended before taking a task (their agent failed at its start); "
                "each one's console is the engine's log of its container",
                runs.INFRA_FAILED,
            )

    def _wake_on_ends(self, run_id: str, stop: threading.Event, told: _Told) -> None:
        with contextlib.suppress(Exception):  # events only make the sweep sooner: its polls find every end
            for name in self.provider.ends(run_id, stop):
                told.add(name)

    def _start_all(
        self,
        spec: runs.RunSpec,
        sweep: PreparedSweep,
        run: _Execution,
        retries: list[tuple[int, int]],
        nodes: int,
        outcomes: list[TaskRecord],
        started: Callable[[], None],
    ) -> None:
        """Create these retries' instances and `nodes` nodes at once (each create waits on the engine
        or the API, not on this machine's CPU alone). Every create is over before this returns, a
        failed or cancelled one included, and each instance made is in `run`, so the sweep's
        teardown finds it; `started` once one exists; then the first failure is raised."""
        creates: list[tuple[Callable[[], tuple[str, _Running | None]], int | None, int]] = []
        for task, attempt in retries:
            creates.append((functools.partial(self._start_retry, spec, sweep, task, attempt), task, attempt))
        for _ in range(nodes):
            run.nodes_made += 1
            creates.append((functools.partial(self._start_node, spec, sweep, run.nodes_made), None, 0))
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(len(creates), self.provider.creates_at_once)))
        futures = [(pool.submit(create), of, attempt) for create, of, attempt in creates]
        try:
            concurrent.futures.wait([f for f, _, _ in futures])
        finally:
            pool.shutdown(wait=True)  # a signal's Cancelled may come while waiting: the creates end first
            failure = None
            for future, of, attempt in futures:
                if future.exception() is not None:
                    failure = failure or future.exception()
                    continue
                name, running = future.result()
                run.instances[name] = of
                if running is not None:  # a retry: its task runs on it from now
                    run.running[running.task] = running
                    outcomes[running.task].attempts = attempt
            if any(future.exception() is None for future, _, _ in futures):
                started()
        if failure is not None:
            raise failure

    def _ended(self, spec: runs.RunSpec, r: _Running, instance_ended: bool, check_state: bool) -> tuple[str, int, str] | None:
        """(status, exit code, message) once the task's attempt has ended, else None. `instance_ended`:
        its instance was seen stopped or gone at this check."""

        def record() -> runs.AttemptRecord | None:
            found = read_task_attempt(self.bucket, spec.run_id, r.task)
            return found if found is not None and found.attempt == r.attempt else None  # not an earlier attempt's

        found = record()
        if found is None and instance_ended:
            time.sleep(self.poll)  # the agent writes its record before it ends: read once more
            found = record()
            if found is None:
                return runs.PREEMPTED, runs.NO_EXIT_CODE, "the instance ended without a record"
        if found is not None:
            return found.status, found.exit_code, found.message
        if check_state or time.time() > r.deadline:  # the phase the agent is in now sets the deadline
            key = sweeps.RecordKeys.for_task(spec.run_id, r.task, r.attempt).progress
            progress = runs.read_progress(self.bucket, key, r.attempt)
            r.deadline, r.awaited = self.margins.deadline(r.created_at, spec.timeout_seconds, progress)
            if time.time() > r.deadline:
                return runs.TIMEOUT, runs.NO_EXIT_CODE, f"no record from instance {r.name}: timed out waiting for {r.awaited}"
        return None

    def _start_retry(self, spec: runs.RunSpec, sweep: PreparedSweep, task: int, attempt: int) -> tuple[str, _Running]:
        """A retry on its own instance, as a single run's attempt is: told its task, it records under tasks/<i>/."""
        job = sweep.prepared.job
        name = task_instance_name(spec.run_id, task, attempt)
        max_run = self.margins.instance_seconds(spec.timeout_seconds)
        created_at = time.time()
        request = InstanceRequest(
            name=name,
            spec=launching.task_spec(spec, job, sweep.tasks[task]),
            job=job,
            attempt=attempt,
            labels=launching.labels(spec, launching.ROLE_INSTANCE, created_at + max_run, attempt=attempt, task=task),
            max_run_seconds=max_run,
            spot=job.spot,
            task=task,
        )
        self.provider.create(request, self.provider.zones[0])
        deadline, awaited = self.margins.deadline(created_at, spec.timeout_seconds, None)
        return name, _Running(task, attempt, name, created_at, deadline, awaited)

    def _start_node(self, spec: runs.RunSpec, sweep: PreparedSweep, node: int) -> tuple[str, None]:
        """A node: it takes the sweep's tasks in turn (agent/node.py) for as long as the sweep may last."""
        job = sweep.prepared.job
        name = node_name(spec.run_id, node)
        max_run = int(sweep.seconds(self.margins) + SELF_DELETE_SLACK)
        request = InstanceRequest(
            name=name,
            spec=spec,
            job=job,
            attempt=1,
            labels=launching.labels(spec, launching.ROLE_INSTANCE, time.time() + max_run),
            max_run_seconds=max_run,
            spot=job.spot,
            node=True,
        )
        self.provider.create(request, self.provider.zones[0])
        return name, None

    def _delete_all(self, names: Iterable[str]) -> None:
        """Delete these instances side by side, as they are created: a sweep's nodes mostly end together."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=self.provider.creates_at_once) as pool:
            list(pool.map(self._delete, list(names)))

    def _delete(self, name: str) -> None:
        try:
            self.provider.delete(name)
        except Exception as exc:  # the instance's own safety nets and `invoke gc` remain
            self.say(f"could not delete instance {name}: {exc}")
