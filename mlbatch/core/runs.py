"""Run records in the bucket (DESIGN.md, "Bucket layout"), shared by controller and agent.

runs/<job>/<run_id>/spec.json              what to run; written before any instance exists
runs/<job>/<run_id>/attempts/<n>/log        the attempt's log, flushed while it runs
runs/<job>/<run_id>/attempts/<n>/attempt.json  how the attempt ended (agent)
runs/<job>/<run_id>/results/...             what the job wrote to $MLBATCH_RESULTS_DIR
runs/<job>/<run_id>/result.json             how the run ended; written last
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import time
from collections.abc import Iterator
from typing import Any

from mlbatch.core.bucket import Bucket
from mlbatch.core.errors import ExitCode, NotFound
from mlbatch.core.names import job_of_run_id

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
# The agent prints this at the start of a console line when it fails outside the job.
AGENT_FAILED_MARKER = "MLBATCH-AGENT-FAILED"

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
}


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """Everything an instance needs to run one attempt, and nothing secret."""

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
    profile: str
    vm_image: str
    idempotency_key: str = ""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        data = json.loads(text)
        data["argv"] = tuple(data["argv"])
        return cls(**data)


def run_prefix(run_id: str) -> str:
    return f"runs/{job_of_run_id(run_id)}/{run_id}"


def spec_key(run_id: str) -> str:
    return f"{run_prefix(run_id)}/spec.json"


def result_key(run_id: str) -> str:
    return f"{run_prefix(run_id)}/result.json"


def attempt_key(run_id: str, attempt: int, name: str) -> str:
    return f"{run_prefix(run_id)}/attempts/{attempt}/{name}"


def results_prefix(run_id: str) -> str:
    return f"{run_prefix(run_id)}/results"


@contextlib.contextmanager
def timed(phases: dict[str, float], name: str) -> Iterator[None]:
    """Add the seconds the block takes to phases[name] (a run's phases span attempts)."""
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


def write_json(bucket: Bucket, key: str, data: dict[str, Any], *, immutable: bool = False) -> None:
    bucket.write(key, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode(), immutable=immutable)


def exit_code_of(result: dict[str, Any]) -> int:
    """The exit code run-batch returns for a final result record."""
    status = result["status"]
    if status == SUCCEEDED:
        return 0
    if status == FAILED:
        return int(result["exit_code"])
    return int(STATUS_EXIT_CODES.get(status, ExitCode.INFRA_FAILED))


def list_run_ids(bucket: Bucket, job: str | None = None) -> list[str]:
    prefix = f"runs/{job}" if job else "runs"
    ids = {key.split("/")[2] for key in bucket.list(prefix) if key.endswith("/spec.json") and key.count("/") == 3}
    return sorted(ids, key=lambda r: (r.rsplit("-", 3)[-3:], r))
