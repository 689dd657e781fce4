"""The one launch path: every fact a run is started with is built here, once, for single
runs, detached runs, sweeps (local and Cloud Batch) and the triggers alike.

    prepare (no side effect) -> provider preflight -> idempotency claim -> spec.json
    -> the job's overlap slot -> (the caller creates instances, labelled by `labels`)

and, when the run ends without an agent to say how, `record_end` writes its result.json;
`follow` reads a run started elsewhere through its records until it ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mlbatch.core import machines, runs
from mlbatch.core import manifest as manifests
from mlbatch.core.bucket import Bucket
from mlbatch.core.cancel import Cancelled, cancel_on_signals
from mlbatch.core.catalog import MAX_TIMEOUT, Job, parse_params
from mlbatch.core.errors import (
    AlreadyExists,
    BadInput,
    CapacityError,
    ExitCode,
    MlbatchError,
    NotFound,
    PermissionDenied,
    QuotaError,
)
from mlbatch.core.manifest import Manifest
from mlbatch.core.names import check_job_name, check_labels, instance_name, managed_labels, new_run_id
from mlbatch.core.versions import parse_version
from mlbatch.providers.base import InstanceRequest
from mlbatch.run import claims, overlap
from mlbatch.run.claims import Claim, Existing
from mlbatch.run.deadlines import CREATE_BUDGET, Margins
from mlbatch.run.echo import BoundedEcho, LogFollower
from mlbatch.ui import Say

if TYPE_CHECKING:  # a single run never reads a sweep's plan: core.sweeps loads with a sweep's modules
    from mlbatch.core import sweeps

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
    allow_cpu: bool = False  # a GPU job without GPUs runs on the CPU instead of being refused


@dataclasses.dataclass
class Prepared:
    manifest: Manifest
    job: Job
    params: dict[str, Any]
    timeout_seconds: int
    allow_cpu: bool = False


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
    manifest.image_for(job)  # a GPU job of a release without a GPU image: refused here
    if request.allow_cpu and not job.gpu_count:
        raise BadInput(f"--allow-cpu applies to GPU jobs; job {job.name} asks for no GPU")
    return Prepared(manifest, job, params, request.timeout_seconds or job.timeout_seconds, request.allow_cpu)


def ends_the_run(exc: MlbatchError) -> bool:
    """Whether a failure to create a run's first instance ends the run (recorded, its key
    spent) rather than passing (a keyed run is then resumed by its key's next trigger): no
    capacity, quota, a refused permission or a bad request fail the same way again."""
    return isinstance(exc, CapacityError | QuotaError | PermissionDenied | BadInput | NotFound)


def give_back(bucket: Bucket, claim: Claim | None) -> None:
    """After the launch of a keyed run stopped before its first instance: the key is spent if
    the run's end is on record (a skip, a cancel, no capacity), else released, so that its
    next trigger resumes the run. Nothing to do once the claim is settled."""
    if claim is None or claim.record.state != runs.KEY_STARTING:
        return
    try:
        ended = runs.read_result(bucket, claim.run_id) is not None
    except Exception:  # the bucket failed too: released, and the trigger that resumes the run looks again
        ended = False
    with contextlib.suppress(Exception):  # on a failure path: else the claim's lease runs out, and it is resumed then
        if ended:
            claim.settle()
        else:
            claim.release()


def status_of(exc: MlbatchError) -> str:
    """The run status that ends a run with this error's exit code."""
    return runs.status_of_exit_code(exc.exit_code)


# --- the facts a run is started with ---------------------------------------------------------


def run_spec(bucket: Bucket, prepared: Prepared, run_id: str, idempotency_key: str, *, sweep: bool = False) -> runs.RunSpec:
    """spec.json: what every instance of the run is told. A sweep's spec carries the job's
    command alone; each task adds its params (`task_spec`)."""
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
        vm_image=manifest.image_for(job).ref,
        idempotency_key=idempotency_key,
        max_log_bytes=job.max_log_mb * 1024 * 1024,
        network=job.network or bool(job.google_access),
        google_access=job.google_access.to_dict(),
        gpu_count=job.gpu_count,
        allow_cpu=prepared.allow_cpu,
        memory_limit_mb=limits.memory_mb,
        pids_limit=limits.pids,
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


def instance_request(spec: runs.RunSpec, job: Job, attempt: int, margins: Margins, detached: bool = False) -> InstanceRequest:
    """What the provider is asked to create for a run's attempt: Spot unless the job's
    preemptions so far say on-demand, labelled ours with an expiry, deleting itself once the
    attempt's whole span (`Margins.instance_seconds`) has passed."""
    max_run = margins.instance_seconds(spec.timeout_seconds)
    spot = job.spot and not (job.on_demand_after_preemptions and attempt - 1 >= job.on_demand_after_preemptions)
    return InstanceRequest(
        name=instance_name(spec.run_id, attempt),
        spec=spec,
        job=job,
        attempt=attempt,
        max_run_seconds=max_run,
        spot=spot,
        detached=detached,
        labels=labels(spec, ROLE_INSTANCE, time.time() + max_run, attempt=attempt),
    )


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
    An idempotency key that already names a run gives that run (`Existing`); one whose run
    another trigger claimed and did not start gives that run to launch (`Begun.claim.resumed`)."""
    if request.version == manifests.LATEST:
        say(f"--version latest resolved to {prepared.manifest.version}")
    preflight()  # permissions and network, before anything is written or created
    run_id = new_run_id(prepared.job.name)
    claim = None
    if request.idempotency_key:
        claimed = claims.claim(bucket, prepared.job.name, request.idempotency_key, run_id, CREATE_BUDGET)
        if isinstance(claimed, Existing):
            say(
                f"idempotency key {request.idempotency_key!r} already started run {claimed.run_id}"
                + (" (its first instance is still being created)" if claimed.starting else "")
            )
            return claimed
        claim = claimed
    try:
        return _spec_and_slot(bucket, request, prepared, claim, run_id, hold_seconds, say, plan)
    except BaseException:
        give_back(bucket, claim)
        raise


def _spec_and_slot(
    bucket: Bucket,
    request: RunRequest,
    prepared: Prepared,
    claim: Claim | None,
    run_id: str,
    hold_seconds: float,
    say: Say,
    plan: sweeps.SweepPlan | None,
) -> Begun | Existing:
    """spec.json (a resumed run's is already there), then the job's overlap slot."""
    job = prepared.job
    spec = None
    if claim is not None and claim.resumed:
        run_id = claim.run_id
        say(f"idempotency key {request.idempotency_key!r}: resuming run {run_id}, claimed by a trigger that did not start it")
        if runs.read_result(bucket, run_id) is not None:  # its end got recorded after all
            claim.settle()
            return Existing(run_id, starting=False)
        spec = runs.read_spec(bucket, run_id)
        if spec is not None:
            job = manifests.load(bucket, spec.version).jobs[spec.job]
    if spec is None:
        spec = run_spec(bucket, prepared, run_id, request.idempotency_key, sweep=plan is not None)
        data = spec.to_dict() if plan is None else {**spec.to_dict(), "sweep": plan.to_dict()}
        runs.write_json(bucket, runs.spec_key(run_id), data, immutable=True)  # a sweep's: the RunSpec and its plan
    try:
        with cancel_on_signals():
            overlap.claim(bucket, job, run_id, hold_seconds, say)
    except overlap.OverlapSkipped as exc:
        record_end(bucket, spec, runs.SKIPPED, 0, str(exc), say)
        raise
    except Cancelled as exc:
        record = record_end(bucket, spec, runs.CANCELLED, 0, f"cancelled by {exc} while waiting for the job's slot", say)
        raise MlbatchError(record.message, ExitCode.CANCELLED) from None
    return Begun(spec, job, claim)


# --- following a run started elsewhere --------------------------------------------------------


def follow(bucket: Bucket, run_id: str, echo: Say, margins: Margins, poll: float) -> RunOutcome:
    """Follow a run (or a sweep) through its bucket records until its result.json appears,
    showing its log as it grows; never starts or deletes anything."""
    spec = runs.read_spec(bucket, run_id)
    if spec is None:
        raise MlbatchError(f"run {run_id} has an idempotency record but no spec.json yet")
    from mlbatch.core import sweeps  # a followed run may be a sweep

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
