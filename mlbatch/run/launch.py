"""The one launch path: every fact a run is started with is built here, once, for single
runs, detached runs, sweeps (local and Cloud Batch) and the triggers alike.

    prepare (no side effect) -> provider preflight -> idempotency claim -> spec.json
    -> the job's overlap slot -> (the caller creates instances, labelled by `labels`)

and, when the run ends without an agent to say how, `record_end` writes its result.json;
`follow` reads a run started elsewhere through its records until it ends.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable
from typing import Any

from mlbatch.core import manifest as manifests
from mlbatch.core import runs, sweeps
from mlbatch.core.bucket import Bucket
from mlbatch.core.cancel import Cancelled, cancel_on_signals
from mlbatch.core.catalog import MAX_TIMEOUT, Job, parse_params
from mlbatch.core.errors import AlreadyExists, BadInput, ExitCode, MlbatchError
from mlbatch.core.manifest import Manifest
from mlbatch.core.names import check_job_name, check_labels, managed_labels, new_run_id
from mlbatch.core.versions import parse_version
from mlbatch.run import claims, overlap
from mlbatch.run.claims import Claim, Existing
from mlbatch.run.deadlines import CREATE_BUDGET, Margins
from mlbatch.run.echo import BoundedEcho, LogFollower
from mlbatch.ui import Say

IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")
# The `role` label: what kind of thing of a run it is (gc and list_ours select on it).
ROLE_INSTANCE = "instance"
ROLE_SWEEP = "sweep"


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

    @classmethod
    def of(cls, record: runs.ResultRecord, attached: bool = False) -> RunOutcome:
        return cls(record.run_id, record.run_exit_code, record, dict(record.phases), attached)


@dataclasses.dataclass
class Begun:
    """A run whose spec.json is written and whose overlap slot is taken: its instances come next."""

    spec: runs.RunSpec
    job: Job
    claim: Claim | None  # its idempotency key's claim: settle once an instance exists, release if none ever did


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
    return runs.status_of_exit_code(exc.exit_code)


# --- the facts a run is started with ---------------------------------------------------------


def run_spec(bucket: Bucket, prepared: Prepared, run_id: str, idempotency_key: str, *, sweep: bool = False) -> runs.RunSpec:
    """spec.json: what every instance of the run is told. A sweep's spec carries the job's
    command alone; each task adds its params (`task_spec`)."""
    manifest, job = prepared.manifest, prepared.job
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
    )


def task_spec(spec: runs.RunSpec, job: Job, params: dict[str, Any]) -> runs.RunSpec:
    """What one task of a sweep runs: the run's spec with the task's params and argv."""
    return dataclasses.replace(spec, params=params, argv=tuple(job.argv(params)))


def labels(
    spec: runs.RunSpec, role: str, expires_at: float, *, attempt: int | None = None, task: int | None = None
) -> dict[str, str]:
    """The labels of whatever a run creates (instances, a Batch job): ours, whose, and when gc may remove it."""
    found = {
        **managed_labels(),
        "role": role,
        "job": spec.job,
        "run-id": spec.run_id,
        "version": parse_version(spec.version).slug,
    }
    if attempt is not None:
        found["attempt"] = str(attempt)
    if task is not None:
        found["task"] = str(task)
    found["expiry"] = str(int(expires_at))
    return check_labels(found)


def record_end(bucket: Bucket, spec: runs.RunSpec, status: str, attempt: int, message: str, say: Say) -> runs.ResultRecord:
    """Record how the run ended when no agent could; the first result written wins (its record is returned)."""
    record = runs.ResultRecord(
        run_id=spec.run_id,
        job=spec.job,
        version=spec.version,
        attempt=attempt,
        status=status,
        exit_code=runs.NO_EXIT_CODE,
        message=message,
        finished=runs.now_iso(),
        recorded_by=runs.CONTROLLER,
        results=bucket.url(runs.results_prefix(spec.run_id, attempt)) if attempt else "",
    )
    try:
        runs.write_record(bucket, runs.result_key(spec.run_id), record, immutable=True)
    except AlreadyExists:
        return runs.read_result(bucket, spec.run_id) or record
    say(message)
    return record


# --- beginning a run ----------------------------------------------------------------------------


def begin(
    bucket: Bucket,
    request: RunRequest,
    prepared: Prepared,
    *,
    preflight: Callable[[], None],
    hold_seconds: float,
    say: Say,
    plan: sweeps.SweepPlan | None = None,
) -> Begun | Existing:
    """Everything between validation and the first instance, for a run or a sweep (`plan`).

    `hold_seconds`: the longest the run may go on, how long it holds the job's overlap slot.
    An idempotency key that already names a run gives that run (`Existing`)."""
    job = prepared.job
    if request.version == manifests.LATEST:
        say(f"--version latest resolved to {prepared.manifest.version}")
    preflight()  # permissions and network, before anything is written or created
    run_id = new_run_id(job.name)
    claim = None
    if request.idempotency_key:
        claimed = claims.claim(bucket, job.name, request.idempotency_key, run_id, CREATE_BUDGET + hold_seconds)
        if isinstance(claimed, Existing):
            say(
                f"idempotency key {request.idempotency_key!r} already started run {claimed.run_id}"
                + (" (its first instance is still being created)" if claimed.starting else "")
            )
            return claimed
        claim = claimed
    spec = run_spec(bucket, prepared, run_id, request.idempotency_key, sweep=plan is not None)
    data = spec.to_dict() if plan is None else {**spec.to_dict(), "sweep": plan.to_dict()}
    runs.write_json(bucket, runs.spec_key(run_id), data, immutable=True)  # a sweep's: the RunSpec and its plan
    try:
        with cancel_on_signals():
            overlap.claim(bucket, job, run_id, hold_seconds, say)
    except overlap.OverlapSkipped as exc:
        record_end(bucket, spec, runs.SKIPPED, 0, str(exc), say)
        if claim is not None:
            claim.settle()  # the key's trigger was decided: a redelivery reports the skip
        raise
    except Cancelled as exc:
        record = record_end(bucket, spec, runs.CANCELLED, 0, f"cancelled by {exc} while waiting for the job's slot", say)
        if claim is not None:
            claim.release()
        raise MlbatchError(record.message, ExitCode.CANCELLED) from None
    return Begun(spec, job, claim)


# --- following a run started elsewhere --------------------------------------------------------


def follow(bucket: Bucket, run_id: str, echo: Say, margins: Margins, poll: float) -> RunOutcome:
    """Follow a run (or a sweep) through its bucket records until its result.json appears,
    showing its log as it grows; never starts or deletes anything."""
    spec = runs.read_spec(bucket, run_id)
    if spec is None:
        raise MlbatchError(f"run {run_id} has an idempotency record but no spec.json yet")
    plan = sweeps.read_plan(bucket, run_id)
    seconds = margins.attempt_seconds(spec.timeout_seconds)
    if plan is not None:
        seconds = margins.sweep_seconds(spec.timeout_seconds, len(plan.tasks), plan.parallelism)
    deadline = time.monotonic() + seconds
    follower, console = LogFollower(), BoundedEcho(echo)
    with cancel_on_signals():
        try:
            while True:
                result = runs.read_result(bucket, run_id)
                follower.follow(bucket, runs.attempt_log_keys(bucket, run_id), console)
                if result is not None:
                    return RunOutcome.of(result, attached=True)
                if time.monotonic() > deadline:
                    raise MlbatchError(f"run {run_id} has not ended after {seconds:.0f}s")
                time.sleep(poll)
        finally:
            console.close()
