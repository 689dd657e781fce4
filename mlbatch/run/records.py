"""Reading runs back from the bucket after their instances are gone: runs, logs, gc."""

from __future__ import annotations

import dataclasses
import time

from mlbatch.core import runs, sweeps
from mlbatch.core.bucket import Bucket
from mlbatch.core.errors import NotFound
from mlbatch.core.names import is_managed
from mlbatch.providers.base import STOPPED, Provider


@dataclasses.dataclass(frozen=True)
class RunRow:
    run_id: str
    job: str
    version: str
    created: str
    status: str  # the result's status, or "running" while there is none
    exit_code: str


def list_runs(bucket: Bucket, job: str | None = None) -> list[RunRow]:
    rows = []
    for run_id in runs.list_run_ids(bucket, job):
        spec = runs.read_spec(bucket, run_id)
        result = runs.read_result(bucket, run_id)
        rows.append(
            RunRow(
                run_id,
                spec.job if spec else "?",
                spec.version if spec else "?",
                spec.created if spec else "?",
                result.status if result else "running",
                str(result.run_exit_code) if result else "-",
            )
        )
    return rows


def log_parts(bucket: Bucket, run_id: str) -> list[tuple[str, str]]:
    """(heading, key) of every log of the run, in order: attempts, then a sweep's tasks attempt by attempt."""
    if not bucket.exists(runs.spec_key(run_id)):
        raise NotFound(f"run {run_id} does not exist in {bucket.uri} (see `invoke runs`)")
    parts = [(f"===== attempt {key.split('/')[-2]} =====\n", key) for key in runs.attempt_log_keys(bucket, run_id)]
    for key in sweeps.task_log_keys(bucket, run_id):  # a sweep: each task's log, attempt by attempt
        task = key.split("/tasks/", 1)[1].split("/")
        parts.append((f"===== task {task[0]}" + (f" attempt {task[2]}" if len(task) == 4 else "") + " =====\n", key))
    return parts


def read_log_bytes(bucket: Bucket, run_id: str) -> bytes:
    """Every log of the run as the job wrote it, each after a `===== attempt N =====` line."""
    return b"".join(heading.encode() + bucket.read(key) for heading, key in log_parts(bucket, run_id))


def read_logs(bucket: Bucket, run_id: str) -> str:
    return read_log_bytes(bucket, run_id).decode(errors="replace")


def collect_garbage(provider: Provider, dry_run: bool, now: float | None = None) -> list[tuple[str, str]]:
    """Delete instances that are ours and expired, or stopped with no controller to clean them."""
    now = time.time() if now is None else now
    removed = []
    for info in provider.list_ours():
        if not is_managed(info.labels):
            continue  # list_ours filters on it already; never touch what is not ours
        expiry = info.labels.get("expiry", "")
        if expiry.isdigit() and int(expiry) < now:
            reason = "expired"
        elif info.state == STOPPED:
            reason = "stopped (orphaned)"
        else:
            continue
        if not dry_run:
            provider.delete(info.name)
        removed.append((info.name, reason))
    return removed
