"""`invoke runs.download RUN [--to DIR]`: a run's results from the bucket into a folder.

A run's results are where its result record says (the attempt that ended it); a sweep's are
each task's last attempt's (sweep.json says which), written to DIR/tasks/<i>/. Keys come from the bucket, so each destination is
checked to stay inside DIR before anything is written (a key with `..` is refused).
"""

from __future__ import annotations

from pathlib import Path

from mlbatch.core import runs, sweeps
from mlbatch.core.bucket import Bucket
from mlbatch.core.errors import BadInput, NotFound
from mlbatch.ui import Say


def _wanted(bucket: Bucket, run_id: str) -> list[tuple[str, str]]:
    """(key, path under DIR) of every result file of the run."""
    if runs.read_spec(bucket, run_id) is None:
        raise NotFound(f"run {run_id} does not exist in {bucket.uri} (see `invoke runs`)")
    result = runs.read_result(bucket, run_id)
    if result is None:
        raise BadInput(f"run {run_id} has not ended: its results are uploaded when it ends (`invoke logs {run_id} --follow`)")
    if result.sweep:
        record = runs.read_record(bucket, sweeps.sweep_key(run_id), sweeps.SweepRecord)
        found = []
        for task in record.tasks if record else ():  # each task's last attempt: a retry's files never mix with a preempted one's
            results = sweeps.task_attempt_key(run_id, task.index, max(task.attempts, 1), "results")
            found += [(key, f"tasks/{task.index}/{key.removeprefix(results + '/')}") for key in bucket.list(results)]
        return found
    if not result.results:  # ended before any instance: no results
        return []
    results = runs.results_of(bucket, result)
    return [(key, key.removeprefix(results + "/")) for key in bucket.list(results)]


def download(bucket: Bucket, run_id: str, folder: Path, say: Say) -> list[Path]:
    """Copy the run's results into `folder` (made if need be); the files written."""
    wanted = _wanted(bucket, run_id)
    root = folder.resolve()
    targets = []
    for key, relative in wanted:
        target = (root / relative).resolve()
        if not target.is_relative_to(root) or target == root:
            raise BadInput(f"result {bucket.url(key)} would land outside {folder}: refused, nothing written")
        targets.append((key, target))
    for key, target in targets:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            bucket.download(key, target)
        except OSError as exc:  # a folder the user named that cannot be written
            raise BadInput(f"cannot write {target}: {exc.strerror or exc}: choose another --to folder") from None
        say(f"{bucket.url(key)} -> {target}")
    return [target for _, target in targets]
