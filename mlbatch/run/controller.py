"""`invoke run-batch`: one code path for every provider.

begin (mlbatch/run/launch.py: validate, preflight, idempotency claim, spec.json, overlap slot)
-> attempts: create in the first zone with capacity -> stream console -> wait for the
    agent's record, the instance's end or the phase's deadline -> delete the instance
    preempted: next attempt with the same run id, up to the job's retries
-> result.json (the agent's, or the controller's when the run ended otherwise) -> exit code

Detached runs (mlbatch/run/detach.py) use the same public methods: `begin`, `launch`,
`attempts` (taking a run over), `record_end`, `delete_instance`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import threading
import time

from mlbatch.core import runs
from mlbatch.core.bucket import Bucket
from mlbatch.core.cancel import Cancelled, cancel_on_signals
from mlbatch.core.catalog import Job
from mlbatch.core.errors import CapacityError, MlbatchError, NotStarted
from mlbatch.core.names import instance_name
from mlbatch.core.text import visible
from mlbatch.providers.base import GONE, STOPPED, Provider
from mlbatch.run import launch as launching
from mlbatch.run.claims import Claim, Existing
from mlbatch.run.deadlines import Margins
from mlbatch.run.echo import BoundedEcho, echo_log_after
from mlbatch.run.launch import Begun, RunOutcome, RunRequest, prepare, run_spec, status_of
from mlbatch.ui import Say

__all__ = [
    "Cancelled",
    "Controller",
    "RunOutcome",
    "RunRequest",
    "backed_off",
    "prepare",
    "run_spec",
    "status_of",
    "summary_rows",
]

POLL = 0.25  # seconds between reads of result.json at the start of an attempt
# Seconds between asks to the provider (on GCE each is an instances.get call): records in
# the bucket end an attempt; the instance's state only catches one that vanished without.
STATE_CHECK_EVERY = 2.0
POLL_MAX, STATE_CHECK_MAX = 5.0, 30.0


def backed_off(base: float, elapsed: float, cap: float) -> float:
    """Waits grow with the attempt's age (x2 every 15 s of it, linearly) up to `cap`: quick
    answers for short jobs, a bounded cost per minute for long ones (result.json at most
    12 reads a minute after ~5 minutes, instances.get 2 a minute after ~3.5 minutes)."""
    return min(cap, base * (1 + elapsed / 15))


def _unix(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


class Controller:
    # Waits, as class attributes so fast tests can shorten them (behaviour is the same).
    poll = POLL
    state_check_every = STATE_CHECK_EVERY
    attach_poll = 1.0  # seconds between reads of a run followed through its records
    margins = Margins()

    def __init__(self, bucket: Bucket, provider: Provider, say: Say, echo: Say):
        self.bucket, self.provider, self.say, self.echo = bucket, provider, say, echo

    # --- entry points -----------------------------------------------------------------

    def run(self, request: RunRequest) -> RunOutcome:
        """Run to the end, attached; an idempotency key's existing run is followed instead."""
        begun = self.begin(request)
        if isinstance(begun, Existing):
            return self.attach(begun.run_id)
        with cancel_on_signals():
            return self.attempts(begun.spec, begun.job, claim=begun.claim)

    def begin(self, request: RunRequest) -> Begun | Existing:
        """Validate, preflight, claim the key, write spec.json, take the job's overlap slot."""
        prepared = prepare(self.bucket, request)
        attempts = 1 + prepared.job.max_preemption_retries
        begun = launching.begin(
            self.bucket,
            request,
            prepared,
            preflight=lambda: self._preflight(prepared),
            hold_seconds=self.margins.run_seconds(prepared.timeout_seconds, attempts),
            say=self.say,
        )
        if isinstance(begun, Begun):
            self.say(f"run {begun.spec.run_id}: job {request.job} of release {begun.spec.version} on {self.provider.name}")
        return begun

    def _preflight(self, prepared: launching.Prepared) -> None:
        """The provider's permissions and network, then whether it can give the job what it asks (GPUs)."""
        self.provider.preflight()
        self.provider.check_job(prepared.job, prepared.allow_cpu)

    def attach(self, run_id: str) -> RunOutcome:
        """Follow a run started elsewhere through its bucket records until it ends."""
        return launching.follow(self.bucket, run_id, self.echo, self.margins, self.attach_poll)

    # --- attempts ---------------------------------------------------------------------

    def attempts(
        self, spec: runs.RunSpec, job: Job, first: int = 1, adopt: bool = False, claim: Claim | None = None
    ) -> RunOutcome:
        """Attempts `first`.. of the run, to its end; with `adopt`, attempt `first`'s instance
        exists already (runs.wait takes the run over)."""
        try:
            return self._attempts(spec, job, first, adopt, claim)
        finally:
            launching.give_back(self.bucket, claim)

    def _attempts(self, spec: runs.RunSpec, job: Job, first: int, adopt: bool, claim: Claim | None) -> RunOutcome:
        phases: dict[str, float] = {}
        max_attempts = 1 + job.max_preemption_retries
        result: runs.ResultRecord | None = None
        attempt = 0
        try:
            for attempt in range(first, max_attempts + 1):
                try:
                    first_one = attempt == first  # the key's claim is settled or released by the first
                    result = self._one_attempt(spec, job, attempt, phases, adopt and first_one, claim if first_one else None)
                except Cancelled as exc:
                    # Record first, tear down second: the agent sees its job die when the
                    # instance goes and must find the run already ended as cancelled.
                    self.record_cancel(spec, attempt, exc)
                    raise
                finally:
                    with runs.timed(phases, "teardown"):
                        self.delete_instance(spec.run_id, attempt)
                if result is not None:
                    break
                self.say(f"attempt {attempt} was preempted" + ("; retrying" if attempt < max_attempts else ""))
            else:
                result = self.record_end(
                    spec,
                    runs.PREEMPTED,
                    attempt,
                    f"preempted {max_attempts} time(s); the job allows {job.max_preemption_retries} retries",
                )
        except NotStarted:
            raise  # not the run's end: its key's next trigger resumes it
        except Cancelled as exc:  # already recorded when it came during an attempt: the first record wins
            result = self.record_cancel(spec, attempt, exc)
        except CapacityError as exc:
            result = self.record_end(spec, runs.NO_CAPACITY, attempt, str(exc))
        except MlbatchError as exc:
            result = self.record_end(spec, status_of(exc), attempt, str(exc))
        return RunOutcome(spec.run_id, result.run_exit_code, result, {**phases, **result.phases})

    def launch(self, spec: runs.RunSpec, job: Job, attempt: int, detached: bool = False, claim: Claim | None = None) -> float:
        """Create the attempt's instance and record where and how; the unix time it was created.

        With the run's idempotency claim: settled once the instance exists. A failure that may
        pass is NotStarted: not to be recorded as the run's end, so that the key's next trigger
        resumes the run (the caller gives the claim back: launch.give_back)."""
        start = time.monotonic()
        name = instance_name(spec.run_id, attempt)
        try:
            zone, spot = self._create(spec, job, attempt, name, detached)
        except MlbatchError as exc:
            if claim is not None and not launching.ends_the_run(exc):
                raise NotStarted(
                    f"run {spec.run_id} did not start: {exc}; the next trigger with its idempotency key resumes it",
                    exc.exit_code,
                ) from exc
            raise
        created = runs.now_iso()
        self._write_instance(
            runs.InstanceRecord(
                run_id=spec.run_id,
                attempt=attempt,
                instance=name,
                zone=zone,
                spot=spot,
                machine_type=job.machine_type,
                gpu_type=job.gpu_type,
                gpu_count=job.gpu_count,
                created=created,
                detached=detached,
                phases={"create": round(time.monotonic() - start, 3)},
            )
        )
        if claim is not None:
            claim.settle()  # the key's run stands from here: a redelivery follows it
        return _unix(created)

    def adopt(self, run_id: str, attempt: int) -> runs.InstanceRecord | None:
        """An attempt's instance made by another process: tell the provider the zone it is in."""
        made = runs.read_instance(self.bucket, run_id, attempt)
        if made is not None:
            self.provider.adopt(made.instance, made.zone)
        return made

    def delete_instance(self, run_id: str, attempt: int) -> None:
        """Teardown must not hide why the attempt ended; the instance's own safety nets remain."""
        name = instance_name(run_id, attempt)
        start = time.monotonic()
        try:
            self.provider.delete(name)
        except Exception as exc:
            self.say(
                f"could not delete instance {name}: {exc}. It deletes itself at its max run duration, "
                "and `invoke gc` removes it once expired"
            )
            return
        record = runs.read_instance(self.bucket, run_id, attempt)
        if record is not None and not record.deleted:
            phases = {**record.phases, "teardown": round(time.monotonic() - start, 3)}
            self._write_instance(dataclasses.replace(record, deleted=runs.now_iso(), phases=phases))

    def record_end(self, spec: runs.RunSpec, status: str, attempt: int, message: str) -> runs.ResultRecord:
        """Record how the run ended when the agent could not; the first record written wins."""
        return launching.record_end(self.bucket, spec, status, attempt, message, self.say)

    def record_cancel(self, spec: runs.RunSpec, attempt: int, exc: Cancelled) -> runs.ResultRecord:
        return self.record_end(spec, runs.CANCELLED, attempt, f"cancelled by {exc}; instance deleted")

    # --- one attempt --------------------------------------------------------------------

    def _write_instance(self, record: runs.InstanceRecord) -> None:
        runs.write_record(self.bucket, runs.attempt_key(record.run_id, record.attempt, runs.INSTANCE_RECORD), record)

    def _create(self, spec: runs.RunSpec, job: Job, attempt: int, name: str, detached: bool) -> tuple[str, bool]:
        """Create the instance in the first zone with capacity; that zone, and whether it is Spot."""
        request = launching.instance_request(spec, job, attempt, self.margins, detached)
        spot = request.spot
        if job.spot and not spot:
            self.say(f"{attempt - 1} preemption(s): attempt {attempt} runs on-demand")
        errors = []
        for zone in self.provider.zones:
            try:
                self.provider.create(request, zone)
                self.say(f"instance {name} created in {zone}")
                return zone, spot
            except CapacityError as exc:
                errors.append(f"{zone}: {exc}")
                self.say(f"no capacity in {zone}; trying the next zone")
        raise CapacityError("no capacity in any zone: " + "; ".join(errors))

    def _one_attempt(
        self, spec: runs.RunSpec, job: Job, attempt: int, phases: dict[str, float], adopt: bool, claim: Claim | None
    ) -> runs.ResultRecord | None:
        """Run one attempt (or, adopting, follow the one whose instance exists); the final result
        record, or None when it was preempted."""
        name = instance_name(spec.run_id, attempt)
        if adopt:
            made = self.adopt(spec.run_id, attempt)
            created_at = _unix(made.created) if made else time.time()
        else:
            with runs.timed(phases, "create"):
                created_at = self.launch(spec, job, attempt, claim=claim)
        stop, wake = threading.Event(), threading.Event()
        console = BoundedEcho(self.echo)
        markers: list[str] = []  # the agent's fail-safe lines seen on the console
        streamer = threading.Thread(target=self._stream, args=(name, stop, console, markers, wake), daemon=True)
        streamer.start()
        result = None
        try:
            result = self._watch(spec, attempt, name, created_at, markers, wake)
        finally:
            stop.set()
            streamer.join(timeout=5)
            if result is not None:  # the console can end before the log does (a VM that deleted itself)
                echo_log_after(self.bucket, runs.attempt_key(spec.run_id, attempt, runs.ATTEMPT_LOG), console.last, console)
            console.close()
        if result is not None and result.started and result.attempt == attempt:
            phases["boot"] = round(max(0.0, _unix(result.started) - created_at), 3)
        return result

    def _watch(
        self, spec: runs.RunSpec, attempt: int, name: str, created_at: float, markers: list[str], wake: threading.Event
    ) -> runs.ResultRecord | None:
        """Wait for the attempt's end: its result, a preemption (None), the instance's end without
        a record, or the deadline of the phase its agent is in, read with the instance's state
        (a run taken over by runs.wait has used part of its time already: the deadline counts
        from the instance's creation and the phase's start). Reads come at each poll, and at
        once when `wake` is set (the console's end, the agent's recorded marker)."""
        started = time.monotonic()
        progress_key = runs.attempt_key(spec.run_id, attempt, runs.PROGRESS_RECORD)
        deadline, awaited = self.margins.deadline(created_at, spec.timeout_seconds, None)
        next_state_check = started + self.state_check_every
        while True:
            result = runs.read_result(self.bucket, spec.run_id)
            if result is not None:
                return result
            checking = time.monotonic() >= next_state_check
            if checking:
                age = time.monotonic() - started
                next_state_check = time.monotonic() + backed_off(self.state_check_every, age, STATE_CHECK_MAX)
                record = runs.read_attempt(self.bucket, spec.run_id, attempt)
                if record is not None and record.status == runs.PREEMPTED:
                    return None
                if self.provider.state(name) in (STOPPED, GONE):
                    time.sleep(self.poll)  # the agent writes its records before it ends: read once more
                    result = runs.read_result(self.bucket, spec.run_id)
                    if result is not None:
                        return result
                    if self.provider.was_preempted(name):
                        return None  # taken away before the agent could record it
                    # Ended with no result and no preemption: the agent failed (its console
                    # marker says why) or someone removed the instance. Not retried.
                    marker = markers[-1] if markers else ""
                    return self.record_end(
                        spec,
                        runs.INFRA_FAILED,
                        attempt,
                        f"instance {name} ended with no result and was not preempted"
                        + (f"; its console said: {marker.strip()}" if marker else ""),
                    )
            if checking or time.time() > deadline:  # the phase the agent is in now sets the deadline
                progress = runs.read_progress(self.bucket, progress_key, attempt)
                deadline, awaited = self.margins.deadline(created_at, spec.timeout_seconds, progress)
                if time.time() > deadline:
                    return self.record_end(
                        spec, runs.TIMEOUT, attempt, f"no result from instance {name}: timed out waiting for {awaited}"
                    )
            if wake.wait(backed_off(self.poll, time.monotonic() - started, POLL_MAX)):
                wake.clear()

    def _stream(self, name: str, stop: threading.Event, console: BoundedEcho, markers: list[str], wake: threading.Event) -> None:
        """Echo the instance's console; wake the watch when the agent says its records are written,
        and when the console ends (the instance did), rather than at the next poll."""
        with contextlib.suppress(Exception):  # the console is a convenience; the bucket log is the record
            for line in self.provider.console(name, stop):
                if runs.AGENT_RECORDED_MARKER in line:  # not the job's output: not in the bucket log, not shown
                    wake.set()
                    continue
                console.line(line)
                if runs.AGENT_FAILED_MARKER in line:  # a job can print one too: kept as it is shown
                    markers.append(visible(line))
        wake.set()


def summary_rows(outcome: RunOutcome) -> list[tuple[str, str]]:
    r = outcome.record
    rows = [
        ("run", outcome.run_id),
        ("status", r.status),
        ("exit code", str(outcome.exit_code)),
        ("attempts", str(r.attempt)),
        ("results", r.results or "-"),
    ]
    if r.message:
        rows.append(("message", r.message))
    times = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in runs.phases_in_order(outcome.phases))
    rows.append(("time", times or "-"))
    return rows
