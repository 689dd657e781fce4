"""`invoke run-batch`: one code path for every provider.

validate (no side effect) -> idempotency key -> spec.json -> attempts:
    create in the first zone with capacity -> stream console -> wait for the agent's
    record, the instance's end or the deadline -> delete the instance
    preempted: next attempt with the same run id, up to the job's retries
-> result.json (the agent's, or the controller's when the run ended otherwise) -> exit code
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import re
import threading
import time
from typing import Any

from mlbatch.core import machines, runs
from mlbatch.core import manifest as manifests
from mlbatch.core.bucket import Bucket
from mlbatch.core.cancel import Cancelled
from mlbatch.core.cancel import cancel_on_signals as _cancel_on_signals
from mlbatch.core.catalog import MAX_TIMEOUT, Job, parse_params
from mlbatch.core.errors import AlreadyExists, BadInput, BadRecord, CapacityError, ExitCode, MlbatchError
from mlbatch.core.manifest import Manifest
from mlbatch.core.names import check_job_name, check_labels, instance_name, managed_labels, new_run_id
from mlbatch.core.text import visible
from mlbatch.core.versions import parse_version
from mlbatch.providers.base import GONE, STOPPED, InstanceRequest, Provider
from mlbatch.run import overlap
from mlbatch.run.echo import BoundedEcho, LogFollower, echo_log_after
from mlbatch.ui import Say

IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")
BOOT_MARGIN = 300  # seconds the controller allows beyond the job's timeout (boot, pull, upload)
SELF_DELETE_MARGIN = 900  # the instance's max_run_duration beyond the job's timeout
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


@dataclasses.dataclass(frozen=True)
class RunRequest:
    job: str
    version: str
    params: tuple[str, ...] = ()
    timeout_seconds: int | None = None
    idempotency_key: str = ""


@dataclasses.dataclass
class Prepared:
    manifest: Manifest
    job: Job
    params: dict[str, Any]
    timeout_seconds: int


@dataclasses.dataclass
class RunOutcome:
    run_id: str
    exit_code: int
    record: runs.ResultRecord
    phases: dict[str, float]
    attached: bool = False

    @property
    def result(self) -> dict[str, Any]:
        """The result record as result.json holds it."""
        return self.record.to_dict()


def prepare(bucket: Bucket, request: RunRequest) -> Prepared:
    """Every check that can refuse the run, before anything is written or created."""
    check_job_name(request.job)
    version = manifests.resolve_version(bucket, request.version)
    raw_params = parse_params(request.params)
    if request.timeout_seconds is not None and not 1 <= request.timeout_seconds <= MAX_TIMEOUT:
        raise BadInput(f"invalid --timeout {request.timeout_seconds}: expected seconds from 1 to {MAX_TIMEOUT}")
    if request.idempotency_key and not IDEMPOTENCY_KEY.match(request.idempotency_key):
        raise BadInput(f"invalid --idempotency-key {request.idempotency_key!r}: expected 1-128 of [A-Za-z0-9._:@-]")
    manifest = manifests.load(bucket, version)
    job = manifest.jobs.get(request.job)
    if job is None:
        raise BadInput(f"unknown job {request.job!r} in release {version}: expected one of {', '.join(manifest.jobs)}")
    params = job.resolve_params(raw_params)
    return Prepared(manifest, job, params, request.timeout_seconds or job.timeout_seconds)


def status_of(exc: MlbatchError) -> str:
    """The run status that ends a run with this error's exit code."""
    return {code: status for status, code in runs.STATUS_EXIT_CODES.items()}.get(exc.exit_code, runs.INFRA_FAILED)


def run_spec(bucket: Bucket, prepared: Prepared, run_id: str, idempotency_key: str, *, sweep: bool = False) -> runs.RunSpec:
    """spec.json: what every instance of the run is told. A sweep's spec carries the job's
    command alone; each task adds its params."""
    manifest, job = prepared.manifest, prepared.job
    limits = machines.job_limits(job.machine_type, job.memory_mb, job.pids)
    return runs.RunSpec(
        run_id=run_id,
        job=job.name,
        version=manifest.version,
        bucket=bucket.uri,
        container=manifest.containers[job.container].ref,
        code_key=manifest.code.uri.removeprefix(bucket.uri + "/"),
        code_sha256=manifest.code.sha256,
        argv=tuple(job.command) if sweep else tuple(job.argv(prepared.params)),
        params={} if sweep else prepared.params,
        timeout_seconds=prepared.timeout_seconds,
        created=runs.now_iso(),
        vm_image=manifest.vm_image.ref,
        idempotency_key=idempotency_key,
        max_log_bytes=job.max_log_mb * 1024 * 1024,
        memory_limit_mb=limits.memory_mb,
        pids_limit=limits.pids,
    )


def instance_request(spec: runs.RunSpec, job: Job, attempt: int, detached: bool = False) -> InstanceRequest:
    """What the provider is asked to create for attempt `attempt`: Spot unless the job's
    preemptions so far say on-demand, labelled ours with an expiry, deleting itself after
    the timeout plus a margin."""
    max_run = spec.timeout_seconds + SELF_DELETE_MARGIN
    preemptions = attempt - 1
    spot = job.spot and not (job.on_demand_after_preemptions and preemptions >= job.on_demand_after_preemptions)
    return InstanceRequest(
        name=instance_name(spec.run_id, attempt),
        spec=spec,
        job=job,
        attempt=attempt,
        max_run_seconds=max_run,
        spot=spot,
        detached=detached,
        labels=check_labels(
            {
                **managed_labels(),
                "role": "instance",
                "job": spec.job,
                "run-id": spec.run_id,
                "version": parse_version(spec.version).slug,
                "attempt": str(attempt),
                "expiry": str(int(time.time()) + max_run),
            }
        ),
    )


class Controller:
    # Waits, as class attributes so fast tests can shorten them (behaviour is the same).
    poll = POLL
    state_check_every = STATE_CHECK_EVERY
    boot_margin = BOOT_MARGIN
    attach_poll = 1.0  # seconds between reads of a run followed through its records

    def __init__(self, bucket: Bucket, provider: Provider, say: Say, echo: Say):
        self.bucket, self.provider, self.say, self.echo = bucket, provider, say, echo

    # --- entry point ----------------------------------------------------------------

    def run(self, request: RunRequest) -> RunOutcome:
        begun = self._begin(request)
        if isinstance(begun, str):  # the idempotency key's run: follow it
            return self.attach(begun)
        spec, job = begun
        with _cancel_on_signals():
            return self._attempts(spec, job)

    def _begin(self, request: RunRequest) -> tuple[runs.RunSpec, Job] | str:
        """Validate, claim the key, write spec.json, take the job's overlap slot: the new run's
        spec and job, or the run id an idempotency key already started."""
        prepared = prepare(self.bucket, request)
        if request.version == manifests.LATEST:
            self.say(f"--version latest resolved to {prepared.manifest.version}")
        self.provider.preflight()  # permissions and network, before anything is written or created
        run_id = new_run_id(request.job)
        if request.idempotency_key:
            key = runs.idempotency_record_key(request.job, request.idempotency_key)
            try:
                runs.write_record(self.bucket, key, runs.IdempotencyRecord(run_id=run_id, created=runs.now_iso()), immutable=True)
            except AlreadyExists:
                existing = self._read_key_record(key, request.idempotency_key)
                self.say(f"idempotency key {request.idempotency_key!r} already started run {existing.run_id}")
                return existing.run_id
        spec = run_spec(self.bucket, prepared, run_id, request.idempotency_key)
        runs.write_record(self.bucket, runs.spec_key(run_id), spec, immutable=True)
        self._take_slot(spec, prepared.job)
        self.say(f"run {run_id}: job {request.job} of release {spec.version} on {self.provider.name}")
        return spec, prepared.job

    def _take_slot(self, spec: runs.RunSpec, job: Job) -> None:
        """The job's overlap slot (concurrency skip | wait); a skipped or cancelled wait is recorded."""
        deadline = time.time() + (1 + job.max_preemption_retries) * (spec.timeout_seconds + SELF_DELETE_MARGIN)
        try:
            with _cancel_on_signals():
                overlap.claim(self.bucket, job, spec.run_id, deadline, self.say)
        except overlap.OverlapSkipped as exc:
            self._final(spec, runs.SKIPPED, 0, str(exc))
            raise
        except Cancelled as exc:
            record = self._cancelled(spec, 0, exc)
            raise MlbatchError(record.message, ExitCode.CANCELLED) from None

    def _read_key_record(self, key: str, idempotency_key: str) -> runs.IdempotencyRecord:
        """The run an idempotency key started; a clear error when its record is unreadable."""
        try:
            existing = runs.read_record(self.bucket, key, runs.IdempotencyRecord)
        except BadRecord as exc:
            raise BadRecord(
                f"idempotency key {idempotency_key!r} has a record that cannot be read ({exc}); "
                "no run was started: inspect or remove it"
            ) from None
        if existing is None:  # it existed a moment ago: removed by hand in between
            raise BadRecord(
                f"idempotency key {idempotency_key!r}: its record {self.bucket.url(key)} vanished; no run was started"
            )
        return existing

    # --- attempts ---------------------------------------------------------------------

    def _attempts(self, spec: runs.RunSpec, job: Job, first: int = 1, adopt: bool = False) -> RunOutcome:
        """Attempts `first`.. of the run; with `adopt`, attempt `first`'s instance exists already (runs.wait)."""
        phases: dict[str, float] = {}
        max_attempts = 1 + job.max_preemption_retries
        result: runs.ResultRecord | None = None
        attempt = 0
        try:
            for attempt in range(first, max_attempts + 1):
                name = instance_name(spec.run_id, attempt)
                try:
                    result = self._one_attempt(spec, job, attempt, name, phases, adopt and attempt == first)
                except Cancelled as exc:
                    # Record first, tear down second: the agent sees its job die when the
                    # instance goes and must find the run already ended as cancelled.
                    self._cancelled(spec, attempt, exc)
                    raise
                finally:
                    with runs.timed(phases, "teardown"):
                        self._delete(name, spec.run_id, attempt)
                if result is not None:
                    break
                self.say(f"attempt {attempt} was preempted" + ("; retrying" if attempt < max_attempts else ""))
            else:
                result = self._final(
                    spec,
                    runs.PREEMPTED,
                    attempt,
                    f"preempted {max_attempts} time(s); the job allows {job.max_preemption_retries} retries",
                )
        except Cancelled as exc:  # already recorded when it came during an attempt: the first record wins
            result = self._cancelled(spec, attempt, exc)
        except CapacityError as exc:
            result = self._final(spec, runs.NO_CAPACITY, attempt, str(exc))
        except MlbatchError as exc:
            result = self._final(spec, status_of(exc), attempt, str(exc))
        return RunOutcome(spec.run_id, result.run_exit_code, result, {**phases, **result.phases})

    def _cancelled(self, spec: runs.RunSpec, attempt: int, exc: Cancelled) -> runs.ResultRecord:
        return self._final(spec, runs.CANCELLED, attempt, f"cancelled by {exc}; instance deleted")

    def _delete(self, name: str, run_id: str, attempt: int) -> None:
        """Teardown must not hide why the attempt ended; the instance's own safety nets remain."""
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

    def _write_instance(self, record: runs.InstanceRecord) -> None:
        runs.write_record(self.bucket, runs.attempt_key(record.run_id, record.attempt, runs.INSTANCE_RECORD), record)

    def _launch(self, spec: runs.RunSpec, job: Job, attempt: int, detached: bool = False) -> float:
        """Create the attempt's instance and record where and how; the unix time it was created."""
        start = time.monotonic()
        zone, spot = self._create(spec, job, attempt, instance_name(spec.run_id, attempt), detached)
        created = runs.now_iso()
        self._write_instance(
            runs.InstanceRecord(
                run_id=spec.run_id,
                attempt=attempt,
                instance=instance_name(spec.run_id, attempt),
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
        return dt.datetime.fromisoformat(created).timestamp()

    def _create(self, spec: runs.RunSpec, job: Job, attempt: int, name: str, detached: bool = False) -> tuple[str, bool]:
        """Create the instance in the first zone with capacity; that zone, and whether it is Spot."""
        request = instance_request(spec, job, attempt, detached)
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
        self, spec: runs.RunSpec, job: Job, attempt: int, name: str, phases: dict[str, float], adopt: bool = False
    ) -> runs.ResultRecord | None:
        """Run one attempt (or, adopting, follow the one whose instance exists); the final result
        record, or None when it was preempted."""
        if adopt:
            made = runs.read_instance(self.bucket, spec.run_id, attempt)
            created_at = dt.datetime.fromisoformat(made.created).timestamp() if made else time.time()
        else:
            with runs.timed(phases, "create"):
                created_at = self._launch(spec, job, attempt)
        stop = threading.Event()
        console = BoundedEcho(self.echo)
        markers: list[str] = []  # the agent's fail-safe lines seen on the console
        streamer = threading.Thread(target=self._stream, args=(name, stop, console, markers), daemon=True)
        streamer.start()
        started = time.monotonic()
        # A run taken over (runs.wait of a detached run) has used part of its time already.
        deadline = started + spec.timeout_seconds + self.boot_margin - max(0.0, time.time() - created_at)
        next_state_check = started + self.state_check_every
        result = None
        try:
            while True:
                result = runs.read_result(self.bucket, spec.run_id)
                if result is not None:
                    break
                if time.monotonic() >= next_state_check:
                    age = time.monotonic() - started
                    next_state_check = time.monotonic() + backed_off(self.state_check_every, age, STATE_CHECK_MAX)
                    record = runs.read_attempt(self.bucket, spec.run_id, attempt)
                    if record is not None and record.status == runs.PREEMPTED:
                        return None
                    if self.provider.state(name) in (STOPPED, GONE):
                        time.sleep(self.poll)  # the agent writes its records before it ends: read once more
                        result = runs.read_result(self.bucket, spec.run_id)
                        if result is not None:
                            break
                        if self.provider.was_preempted(name):
                            return None  # taken away before the agent could record it
                        # Ended with no result and no preemption: the agent failed (its console
                        # marker says why) or someone removed the instance. Not retried.
                        marker = markers[-1] if markers else ""
                        return self._final(
                            spec,
                            runs.INFRA_FAILED,
                            attempt,
                            f"instance {name} ended with no result and was not preempted"
                            + (f"; its console said: {marker.strip()}" if marker else ""),
                        )
                if time.monotonic() > deadline:
                    return self._final(
                        spec,
                        runs.TIMEOUT,
                        attempt,
                        f"no result {spec.timeout_seconds + self.boot_margin}s after the instance was created",
                    )
                time.sleep(backed_off(self.poll, time.monotonic() - started, POLL_MAX))
        finally:
            stop.set()
            streamer.join(timeout=5)
            if result is not None:  # the console can end before the log does (a VM that deleted itself)
                echo_log_after(self.bucket, runs.attempt_key(spec.run_id, attempt, runs.ATTEMPT_LOG), console.last, console)
            console.close()
        if result.started:
            started = dt.datetime.fromisoformat(result.started).timestamp()
            phases["boot"] = round(max(0.0, started - created_at), 3)
        return result

    def _stream(self, name: str, stop: threading.Event, console: BoundedEcho, markers: list[str]) -> None:
        with contextlib.suppress(Exception):  # the console is a convenience; the bucket log is the record
            for line in self.provider.console(name, stop):
                console.line(line)
                if runs.AGENT_FAILED_MARKER in line:  # a job can print one too: kept as it is shown
                    markers.append(visible(line))

    def _final(self, spec: runs.RunSpec, status: str, attempt: int, message: str) -> runs.ResultRecord:
        """Record how the run ended when the agent could not; the first record written wins."""
        record = runs.ResultRecord(
            run_id=spec.run_id,
            job=spec.job,
            version=spec.version,
            attempt=attempt,
            status=status,
            exit_code=-1,
            message=message,
            finished=runs.now_iso(),
            recorded_by=runs.CONTROLLER,
            results=self.bucket.url(runs.results_prefix(spec.run_id)),
        )
        try:
            runs.write_record(self.bucket, runs.result_key(spec.run_id), record, immutable=True)
        except AlreadyExists:
            return runs.read_result(self.bucket, spec.run_id) or record
        self.say(message)
        return record

    # --- attaching to an existing run ----------------------------------------------------

    def attach(self, run_id: str) -> RunOutcome:
        """Follow a run started elsewhere through its bucket records until it ends."""
        spec = runs.read_spec(self.bucket, run_id)
        if spec is None:
            raise MlbatchError(f"run {run_id} has an idempotency record but no spec.json yet")
        deadline = time.monotonic() + spec.timeout_seconds + self.boot_margin
        follower, console = LogFollower(), BoundedEcho(self.echo)
        with _cancel_on_signals():
            try:
                while True:
                    result = runs.read_result(self.bucket, run_id)
                    follower.follow(self.bucket, runs.attempt_log_keys(self.bucket, run_id), console)
                    if result is not None:
                        return RunOutcome(run_id, result.run_exit_code, result, dict(result.phases), True)
                    if time.monotonic() > deadline:
                        raise MlbatchError(f"run {run_id} has not ended after {spec.timeout_seconds + self.boot_margin}s")
                    time.sleep(self.attach_poll)
            finally:
                console.close()


def summary_rows(outcome: RunOutcome) -> list[tuple[str, str]]:
    r = outcome.record
    rows = [
        ("run", outcome.run_id),
        ("status", r.status),
        ("exit code", str(outcome.exit_code)),
        ("attempts", str(r.attempt)),
        ("results", r.results),
    ]
    if r.message:
        rows.append(("message", r.message))
    times = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in runs.phases_in_order(outcome.phases))
    rows.append(("time", times or "-"))
    return rows
