"""A sweep on the local provider: one instance per task attempt, at most P at once.

Each instance is the same throw-away instance a single run uses (its spec and labels from
mlbatch/run/launch.py), told its task index: its agent records under tasks/<i>/. A task
whose instance was preempted (its agent recorded so, or it vanished without a record)
runs again, up to the job's retries. An attempt's deadline follows its agent's phase, as a
run's does. A result.json written by someone else (runs.cancel) stops the sweep.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable

from mlbatch.core import runs, sweeps
from mlbatch.core.bucket import Bucket
from mlbatch.core.cancel import Cancelled
from mlbatch.core.names import check_gce_name
from mlbatch.core.sweeps import TaskRecord
from mlbatch.providers.base import GONE, STOPPED, InstanceRequest, Provider
from mlbatch.run import launch as launching
from mlbatch.run.controller import POLL, STATE_CHECK_EVERY
from mlbatch.run.deadlines import Margins
from mlbatch.run.sweep import PreparedSweep, read_task_attempt
from mlbatch.ui import Say


def task_instance_name(run_id: str, task: int, attempt: int) -> str:
    return check_gce_name(f"mlb-{run_id}-t{task}-{attempt}", "instance name")


@dataclasses.dataclass
class _Running:
    task: int
    attempt: int
    name: str
    created_at: float  # unix seconds
    deadline: float  # unix seconds, as of the agent's last known phase
    awaited: str  # what the deadline waits for


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
        for info in self.provider.list_ours():
            if info.labels.get("run-id") == run_id:
                self._delete(info.name)

    def execute(self, spec: runs.RunSpec, sweep: PreparedSweep, outcomes: list[TaskRecord], started: Callable[[], None]) -> None:
        job = sweep.prepared.job
        pending = collections.deque((i, 1) for i in range(len(sweep.tasks)))
        running: dict[int, _Running] = {}
        next_state_check = time.monotonic() + self.state_check_every
        stop, wake = threading.Event(), threading.Event()
        threading.Thread(target=self._wake_on_ends, args=(spec.run_id, stop, wake), daemon=True).start()
        try:
            while pending or running:
                starts = [pending.popleft() for _ in range(min(len(pending), sweep.parallelism - len(running)))]
                if starts:
                    self._start_all(spec, sweep, starts, running, outcomes, started)
                if wake.wait(self.poll):  # an instance ended: read its record now rather than at the next poll
                    wake.clear()
                check_state = time.monotonic() >= next_state_check
                if check_state:
                    next_state_check = time.monotonic() + self.state_check_every
                    if runs.read_result(self.bucket, spec.run_id) is not None:  # before the states: cancel deletes after
                        raise Cancelled("runs.cancel")
                for task, r in list(running.items()):
                    ended = self._ended(spec, r, check_state)
                    if ended is None:
                        continue
                    del running[task]
                    self._delete(r.name)
                    status, exit_code, message = ended
                    if status == runs.PREEMPTED and r.attempt <= job.max_preemption_retries:
                        self.say(f"task {task}: attempt {r.attempt} was preempted; retrying")
                        pending.appendleft((task, r.attempt + 1))
                        continue
                    outcomes[task].ended(status, exit_code, r.attempt, message)
                    done = sum(1 for o in outcomes if o.attempts and o.status != runs.CANCELLED)
                    self.say(f"task {task} {status} ({done}/{len(outcomes)} done)")
        finally:
            stop.set()
            for r in running.values():  # cancelled or failed: nothing is left running
                self._delete(r.name)

    def _wake_on_ends(self, run_id: str, stop: threading.Event, wake: threading.Event) -> None:
        with contextlib.suppress(Exception):  # events only make the sweep sooner: its polls find every end
            for _ in self.provider.ends(run_id, stop):
                wake.set()

    def _start_all(
        self,
        spec: runs.RunSpec,
        sweep: PreparedSweep,
        starts: list[tuple[int, int]],
        running: dict[int, _Running],
        outcomes: list[TaskRecord],
        started: Callable[[], None],
    ) -> None:
        """Create the instances of these (task, attempt)s at once (each create waits on the engine
        or the API, not on this machine's CPU alone). Every create is over before this returns, a
        failed or cancelled one included, and each instance made is in `running`, so the sweep's
        teardown finds it; `started` once one exists; then the first failure is raised."""
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(len(starts), self.provider.creates_at_once)))
        futures = [(pool.submit(self._start, spec, sweep, task, attempt), task, attempt) for task, attempt in starts]
        try:
            concurrent.futures.wait([f for f, _, _ in futures])
        finally:
            pool.shutdown(wait=True)  # a signal's Cancelled may come while waiting: the creates end first
            failure = None
            for future, task, attempt in futures:
                if future.exception() is not None:
                    failure = failure or future.exception()
                    continue
                running[task] = future.result()
                outcomes[task].attempts = attempt
            if any(future.exception() is None for future, _, _ in futures):
                started()
        if failure is not None:
            raise failure

    def _ended(self, spec: runs.RunSpec, r: _Running, check_state: bool) -> tuple[str, int, str] | None:
        """(status, exit code, message) once the task's attempt has ended, else None."""

        def record() -> runs.AttemptRecord | None:
            found = read_task_attempt(self.bucket, spec.run_id, r.task)
            return found if found is not None and found.attempt == r.attempt else None  # not an earlier attempt's

        found = record()
        if found is None and check_state and self.provider.state(r.name) in (STOPPED, GONE):
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

    def _start(self, spec: runs.RunSpec, sweep: PreparedSweep, task: int, attempt: int) -> _Running:
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
        return _Running(task, attempt, name, created_at, deadline, awaited)

    def _delete(self, name: str) -> None:
        try:
            self.provider.delete(name)
        except Exception as exc:  # the instance's own safety nets and `invoke gc` remain
            self.say(f"could not delete instance {name}: {exc}")
