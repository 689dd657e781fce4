"""Run records in the bucket (docs/architecture.md, "Records"), shared by controller and agent.

runs/<job>/<run_id>/spec.json              what to run; written before any instance exists
runs/<job>/<run_id>/attempts/<n>/log        the attempt's log, flushed while it runs
runs/<job>/<run_id>/attempts/<n>/progress.json  the phase the agent is in (the controller's deadlines)
runs/<job>/<run_id>/attempts/<n>/attempt.json  how the attempt ended (agent)
runs/<job>/<run_id>/attempts/<n>/results/...  what the attempt's job wrote to $MLBATCH_RESULTS_DIR
runs/<job>/<run_id>/result.json             how the run ended, naming its results; written last
idempotency/<job>/<sha256(key)[:32]>.json   the run a trigger's idempotency key started

docs/architecture.md ("Records") says where each departs from the contract's layout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import math
import time
from collections.abc import Iterator
from typing import Any, Self, TypeVar

from mlbatch.core.bucket import Bucket
from mlbatch.core.errors import BadRecord, ExitCode, NotFound
from mlbatch.core.names import job_of_run_id
from mlbatch.core.text import visible

# How a run or an attempt ended.
SUCCEEDED = "succeeded"
FAILED = "failed"  # the job ran and exited non-zero: its own code is the exit code
TIMEOUT = "timeout"
CANCELLED = "cancelled"
PREEMPTED = "preempted"
FETCH_FAILED = "fetch_failed"
INFRA_FAILED = "infra_failed"
NO_CAPACITY = "no_capacity"
QUOTA_EXCEEDED = "quota_exceeded"
PERMISSION_DENIED = "permission_denied"
NOT_FOUND = "not_found"
SKIPPED = "skipped"  # concurrency: skip, while a run of the job was still going; nothing was started
TASKS_FAILED = "tasks_failed"  # a sweep whose tasks did not all succeed
NO_EXIT_CODE = -1  # a record's exit_code when the job did not exit by itself (never ran, stopped, lost)
# The agent prints this at the start of a console line when it fails outside the job.
AGENT_FAILED_MARKER = "MLBATCH-AGENT-FAILED"
# The agent's console line once its attempt's records are written: a controller reading the
# console reads the records at once rather than at its next poll (a job printing it too only
# causes an early read).
AGENT_RECORDED_MARKER = "MLBATCH-AGENT-RECORDED"

STATUS_EXIT_CODES = {
    TIMEOUT: ExitCode.TIMEOUT,
    CANCELLED: ExitCode.CANCELLED,
    PREEMPTED: ExitCode.PREEMPTED,
    FETCH_FAILED: ExitCode.FETCH_FAILED,
    INFRA_FAILED: ExitCode.INFRA_FAILED,
    NO_CAPACITY: ExitCode.NO_CAPACITY,
    QUOTA_EXCEEDED: ExitCode.QUOTA_EXCEEDED,
    PERMISSION_DENIED: ExitCode.PERMISSION_DENIED,
    NOT_FOUND: ExitCode.NOT_FOUND,
    SKIPPED: ExitCode.SKIPPED_OVERLAP,
    TASKS_FAILED: ExitCode.TASKS_FAILED,
}
_EXIT_CODE_STATUSES: dict[int, str] = {int(code): status for status, code in STATUS_EXIT_CODES.items()}


def exit_code_of(status: str, job_exit_code: int) -> int:
    """The one mapping from how a run (or a task) ended to the exit code a scheduler sees:
    0 when it succeeded, the job's own code when the job failed, a reserved code otherwise."""
    if status == SUCCEEDED:
        return int(ExitCode.OK)
    if status == FAILED:
        return job_exit_code
    return int(STATUS_EXIT_CODES.get(status, ExitCode.INFRA_FAILED))


def status_of_exit_code(code: int) -> str:
    """The status that ends a run with this reserved exit code (the way back of exit_code_of)."""
    return _EXIT_CODE_STATUSES.get(code, INFRA_FAILED)


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


# --- typed records ------------------------------------------------------------------------
#
# Every record carries `schema_version`. Adding a field with a default keeps the version;
# a change an older reader would misread raises it. Records written before versions
# existed read as version 1; unknown keys are ignored so an older reader copes with an
# added field; a record from a newer schema is refused with a clear error.

SCHEMA_VERSION = 1


def _dumps(data: dict[str, Any]) -> str:
    """The one JSON form of records in the bucket: indented, keys sorted, a final newline.
    Strict JSON: a NaN or infinity raises instead of becoming `NaN`, which other readers refuse."""
    return json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n"


class Record:
    """to_dict/from_dict for the dataclass records below."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def to_json(self) -> str:
        return _dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Any, what: str = "") -> Self:
        what = what or cls.__name__
        if not isinstance(data, dict):
            raise BadRecord(f"{what} is not a JSON object: {str(data)[:80]!r}")
        version = data.get("schema_version", 1)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise BadRecord(f"{what} has schema_version {version!r}; this mlbatch reads up to {SCHEMA_VERSION}: upgrade mlbatch")
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        values = {k: v for k, v in data.items() if k in fields}
        if "schema_version" in fields:
            values["schema_version"] = version  # explicit: a record without one is 1, whatever the default becomes
        missing = [name for name, f in fields.items() if name not in values and _required(f)]
        if missing:
            raise BadRecord(f"{what} lacks {', '.join(missing)}")
        try:
            return cls(**cls._decode(values))
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise BadRecord(f"{what} cannot be read: {exc}") from None

    @classmethod
    def from_json(cls, text: str | bytes, what: str = "") -> Self:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise BadRecord(f"{what or cls.__name__} is not JSON: {exc}") from None
        return cls.from_dict(data, what)

    @classmethod
    def _decode(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Turn JSON values into field types (nested records, tuples); the identity by default."""
        return values


def _required(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunSpec(Record):
    """spec.json: everything an instance needs to run one attempt, and nothing secret."""

    run_id: str
    job: str
    version: str
    bucket: str
    container: str  # repository@sha256:...
    code_key: str
    code_sha256: str
    argv: tuple[str, ...]
    params: dict[str, Any]
    timeout_seconds: int
    created: str
    vm_image: str
    idempotency_key: str = ""
    max_log_bytes: int = 0  # the job's max_log_mb; 0: no cap
    network: bool = False  # the job container gets a network (the catalog's network, or google_access)
    google_access: dict[str, Any] = dataclasses.field(default_factory=dict)  # core.access.GoogleAccess.to_dict()
    gpu_count: int = 0  # GPUs the job's container is given (the catalog's gpu.count)
    allow_cpu: bool = False  # run-batch --allow-cpu: without GPUs the job runs on the CPU instead of failing (104)
    # The job container's limits (core.machines.job_limits of the job); 0: none (specs before them).
    memory_limit_mb: int = 0
    pids_limit: int = 0
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def _decode(cls, values: dict[str, Any]) -> dict[str, Any]:
        return {**values, "argv": tuple(values["argv"])}


@dataclasses.dataclass(frozen=True, kw_only=True)
class InstanceSpec(Record):
    """What one instance is told: the run's spec and which attempt it is.

    Local: the file named by MLBATCH_INSTANCE_FILE. GCE: the metadata attributes
    mlbatch-run-spec (the RunSpec) and mlbatch-attempt; the rest the VM knows itself.
    mlbatch-run-id and mlbatch-bucket repeat two of the spec's fields, so that an agent that
    cannot read the spec still records why (agent/main.py, fail_safe).
    """

    spec: RunSpec
    attempt: int
    instance: str
    workdir: str
    task: int | None = None  # a sweep's task: the agent records under tasks/<i>/ (core/sweeps.py)
    node: bool = False  # a local sweep's node: it takes the sweep's tasks in turn (agent/node.py)
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def _decode(cls, values: dict[str, Any]) -> dict[str, Any]:
        return {**values, "spec": RunSpec.from_dict(values["spec"], "the instance's run spec"), "attempt": int(values["attempt"])}


# The states of an idempotency key's claim (IdempotencyRecord.state; mlbatch/run/claims.py).
KEY_STARTING = "starting"  # claimed; the run's first instance does not exist yet
KEY_STARTED = "started"  # the run stands: its first instance exists, or its end was recorded before one did
KEY_RELEASED = "released"  # not started, no end recorded: the key's next trigger resumes the run


@dataclasses.dataclass(frozen=True, kw_only=True)
class IdempotencyRecord(Record):
    """idempotency/<job>/<key hash>.json: the run a trigger's key started (mlbatch/run/claims.py).

    Records written before the claim had states are runs that stand: KEY_STARTED."""

    run_id: str
    created: str
    state: str = KEY_STARTED
    lease_until: float = 0.0  # unix seconds: a claim still KEY_STARTING after this was abandoned
    claimant: str = ""  # the trigger holding the claim (the run id it proposed): tells its own writes apart
    schema_version: int = SCHEMA_VERSION


@dataclasses.dataclass(frozen=True, kw_only=True)
class Provenance(Record):
    """What exactly ran: the release's pins and the agent that ran them."""

    version: str
    vm_image: str
    container: str
    code_sha256: str
    agent: str  # the agent's mlbatch version

    @classmethod
    def of(cls, spec: RunSpec, agent: str) -> Provenance:
        return cls(
            version=spec.version, vm_image=spec.vm_image, container=spec.container, code_sha256=spec.code_sha256, agent=agent
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class AttemptRecord(Record):
    """attempts/<n>/attempt.json: how one attempt ended, written by the agent."""

    run_id: str
    job: str
    version: str
    attempt: int
    instance: str
    status: str
    exit_code: int  # the job's own exit code; -1 when it did not exit by itself
    message: str
    started: str
    finished: str
    phases: dict[str, float]
    provenance: Provenance
    results: str  # URL of the run's results prefix
    # A GPU job's GPUs as nvidia-smi saw them: {"driver": "535.309.01", "gpus": [{"name", "memory_mib"}]};
    # {} for a job without GPUs (and in records written before GPU jobs).
    gpu: dict[str, Any] = dataclasses.field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def _decode(cls, values: dict[str, Any]) -> dict[str, Any]:
        return {**values, "provenance": Provenance.from_dict(values["provenance"], "provenance")}


AGENT = "agent"
CONTROLLER = "controller"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ResultRecord(Record):
    """result.json: how the run ended; written once, by the agent or by the controller."""

    run_id: str
    job: str
    version: str
    attempt: int
    status: str
    exit_code: int  # the job's own exit code; -1 when it did not exit by itself
    message: str
    finished: str
    results: str
    recorded_by: str = AGENT  # AGENT or CONTROLLER (records of the agent before versions had no key)
    instance: str = ""
    started: str = ""
    phases: dict[str, float] = dataclasses.field(default_factory=dict)
    provenance: Provenance | None = None  # the agent's; None when the controller ended the run
    # A sweep's result (core/sweeps.py): how many tasks, how many succeeded, where sweep.json is.
    tasks: int = 0
    succeeded: int = 0
    sweep: str = ""
    gpu: dict[str, Any] = dataclasses.field(default_factory=dict)  # the ending attempt's GPUs (AttemptRecord.gpu)
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def _decode(cls, values: dict[str, Any]) -> dict[str, Any]:
        provenance = values.get("provenance")
        return {**values, "provenance": Provenance.from_dict(provenance, "provenance") if provenance else None}

    @classmethod
    def of_attempt(cls, record: AttemptRecord) -> ResultRecord:
        """The agent ends the run with its attempt's record."""
        return cls(**{**dataclasses.asdict(record), "provenance": record.provenance, "recorded_by": AGENT})

    @property
    def run_exit_code(self) -> int:
        """The exit code run-batch returns for this run."""
        return exit_code_of(self.status, self.exit_code)


def results_of(bucket: Bucket, record: ResultRecord) -> str:
    """The key prefix of the results a run's record names: the attempt that ended it (a run
    recorded before attempts had their own: runs/<job>/<run_id>/results)."""
    return record.results.removeprefix(bucket.uri + "/")


@dataclasses.dataclass(frozen=True, kw_only=True)
class InstanceRecord(Record):
    """attempts/<n>/instance.json: where the controller made the attempt's instance, and when it went.

    Written when the instance exists, rewritten when the controller deletes it; a detached
    run's instance deletes itself, so `deleted` stays empty unless `runs.wait` took over.
    """

    run_id: str
    attempt: int
    instance: str
    zone: str
    spot: bool
    machine_type: str
    gpu_type: str = ""
    gpu_count: int = 0
    created: str
    deleted: str = ""
    detached: bool = False
    phases: dict[str, float] = dataclasses.field(default_factory=dict)  # the controller's: create, teardown
    schema_version: int = SCHEMA_VERSION


INSTANCE_RECORD = "instance.json"
PROGRESS_RECORD = "progress.json"

# The agent's phases on the instance, in order (ProgressRecord.phase).
PULL, FETCH, RUN, UPLOAD = "pull", "fetch", "run", "upload"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProgressRecord(Record):
    """progress.json beside the attempt's log: the phase the agent has entered, and when.

    The controller's deadline follows it (mlbatch/run/deadlines.py): a slow pull or a big
    upload each has its own margin instead of sharing one with the job's timeout."""

    run_id: str
    attempt: int
    phase: str  # PULL, FETCH, RUN or UPLOAD
    since: str  # when the agent entered it (ISO, UTC)
    schema_version: int = SCHEMA_VERSION


def read_instance(bucket: Bucket, run_id: str, attempt: int) -> InstanceRecord | None:
    return read_record(bucket, attempt_key(run_id, attempt, INSTANCE_RECORD), InstanceRecord)


def attempt_numbers(bucket: Bucket, run_id: str) -> list[int]:
    """The attempts that have any record (an instance, a log or an end), in order."""
    numbers = {int(k.split("/")[4]) for k in bucket.list(f"{run_prefix(run_id)}/attempts") if _attempt_object(k)}
    return sorted(numbers)


def _attempt_object(key: str) -> bool:
    """runs/<job>/<run_id>/attempts/<n>/<name>: an attempt's own object, not one of its results."""
    parts = key.split("/")
    return len(parts) == 6 and parts[3] == "attempts" and parts[4].isdigit()


def idempotency_record_key(job: str, idempotency_key: str) -> str:
    return f"idempotency/{job}/{hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]}.json"


def run_prefix(run_id: str) -> str:
    return f"runs/{job_of_run_id(run_id)}/{run_id}"


def spec_key(run_id: str) -> str:
    return f"{run_prefix(run_id)}/spec.json"


def result_key(run_id: str) -> str:
    return f"{run_prefix(run_id)}/result.json"


ATTEMPT_RECORD = "attempt.json"
ATTEMPT_LOG = "log"


def attempt_key(run_id: str, attempt: int, name: str) -> str:
    return f"{run_prefix(run_id)}/attempts/{attempt}/{name}"


def results_prefix(run_id: str, attempt: int) -> str:
    """Where attempt n's job results go: beside its log, so that a retry's files never mix
    with those a preempted attempt uploaded in part."""
    return attempt_key(run_id, attempt, "results")


# A run's phases in the order they happen: the controller times create, boot and teardown,
# the agent the rest; summaries and benchmarks list them in this order.
PHASES = ("create", "boot", "pull", "fetch", "run", "upload", "teardown")


def phases_in_order(phases: dict[str, float]) -> list[tuple[str, float]]:
    return [(name, phases[name]) for name in PHASES if name in phases]


@contextlib.contextmanager
def timed(phases: dict[str, float], name: str) -> Iterator[None]:
    """Add the seconds the block takes to phases[name] (a run's phases span attempts)."""
    if name not in PHASES:
        raise ValueError(f"unknown phase {name!r}: expected one of {', '.join(PHASES)}")
    start = time.monotonic()
    try:
        yield
    finally:
        phases[name] = round(phases.get(name, 0.0) + time.monotonic() - start, 3)


def read_json(bucket: Bucket, key: str) -> dict[str, Any] | None:
    try:
        return json.loads(bucket.read(key))
    except NotFound:
        return None


def scalar_metrics(data: Any) -> dict[str, Any]:
    """The scalars of a job's metrics.json, fit to show and to record: a NaN or infinity
    (which Python's json writes and reads) as its text, "nan" or "inf", so records and
    `--json` output stay strict JSON; control characters in names and text spelled out."""
    if not isinstance(data, dict):
        return {}
    scalars = {visible(str(k)): v for k, v in data.items() if isinstance(v, int | float | str | bool)}
    return {
        k: str(v) if isinstance(v, float) and not math.isfinite(v) else visible(v) if isinstance(v, str) else v
        for k, v in scalars.items()
    }


def write_json(bucket: Bucket, key: str, data: dict[str, Any], *, immutable: bool = False) -> None:
    bucket.write(key, _dumps(data).encode(), immutable=immutable)


R = TypeVar("R", bound=Record)


def read_record(bucket: Bucket, key: str, kind: type[R]) -> R | None:
    """The record at `key`, or None when there is none; BadRecord when it cannot be read."""
    try:
        data = bucket.read(key)
    except NotFound:
        return None
    return kind.from_json(data, bucket.url(key))


def write_record(bucket: Bucket, key: str, record: Record, *, immutable: bool = False) -> None:
    bucket.write(key, record.to_json().encode(), immutable=immutable)


def read_spec(bucket: Bucket, run_id: str) -> RunSpec | None:
    return read_record(bucket, spec_key(run_id), RunSpec)


def read_result(bucket: Bucket, run_id: str) -> ResultRecord | None:
    return read_record(bucket, result_key(run_id), ResultRecord)


def read_attempt(bucket: Bucket, run_id: str, attempt: int) -> AttemptRecord | None:
    return read_record(bucket, attempt_key(run_id, attempt, ATTEMPT_RECORD), AttemptRecord)


def read_progress(bucket: Bucket, key: str, attempt: int) -> ProgressRecord | None:
    """The agent's progress at `key`, if it is this attempt's (a task's key is shared by its attempts)."""
    record = read_record(bucket, key, ProgressRecord)
    return record if record is not None and record.attempt == attempt else None


def attempt_log_keys(bucket: Bucket, run_id: str) -> list[str]:
    """The keys of a run's attempt logs, in attempt order (a results file named `log` is not one)."""
    keys = (k for k in bucket.list(f"{run_prefix(run_id)}/attempts") if _attempt_object(k) and k.endswith("/" + ATTEMPT_LOG))
    return sorted(keys, key=lambda k: int(k.split("/")[-2]))


def list_run_ids(bucket: Bucket, job: str | None = None) -> list[str]:
    prefix = f"runs/{job}" if job else "runs"
    ids = {key.split("/")[2] for key in bucket.list(prefix) if key.endswith("/spec.json") and key.count("/") == 3}
    return sorted(ids, key=lambda r: (r.rsplit("-", 3)[-3:], r))
