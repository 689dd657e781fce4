"""Overlap policy: what a trigger does while a run of the same job is still going.

The catalog's `concurrency` per job: `allow` (default: nothing is checked), `skip` (the
trigger starts nothing and exits with ExitCode.SKIPPED_OVERLAP) or `wait` (the trigger
waits for the running one to end, then starts).

The decision is one compare-and-swap on `concurrency/<job>.json`, the job's slot, which
names the run holding it. A trigger reads the slot and its generation; when the holder
has ended (its result.json exists) or is past its deadline (its instances have deleted
themselves by then), the trigger writes its own run id with the generation it read as
precondition. Of two triggers racing, exactly one write succeeds; the other reads the
slot again and finds it taken. Listing runs is never part of the decision, and no one
has to free the slot: the holder's result record does.

A write whose answer was lost is retried by the storage client and meets 412: the slot
read again names our own run, which then holds it (it does not skip itself). The
holder's deadline is computed when the slot is written, not before a wait for it.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

from mlbatch.core import runs
from mlbatch.core.bucket import Bucket
from mlbatch.core.catalog import Job
from mlbatch.core.errors import Conflict, OverlapSkipped
from mlbatch.ui import Say

ALLOW, SKIP, WAIT = "allow", "skip", "wait"
WAIT_POLL = 2.0  # seconds between looks at the slot while waiting


def slot_key(job: str) -> str:
    return f"concurrency/{job}.json"


def _going(bucket: Bucket, holder: dict[str, Any] | None, now: float) -> bool:
    if not holder:
        return False
    if now >= float(holder.get("deadline", 0)):
        return False
    return not bucket.exists(runs.result_key(holder["run_id"]))


def claim(bucket: Bucket, job: Job, run_id: str, hold_seconds: float, say: Say, poll: float = WAIT_POLL) -> None:
    """Take the job's slot for run_id (until it ends, or for `hold_seconds` from when it takes
    it), or raise OverlapSkipped.

    With `allow` this does nothing; with `wait` it returns once the slot is ours.
    """
    if job.concurrency == ALLOW:
        return
    told = False
    while True:
        data, generation = bucket.read_generation(slot_key(job.name))
        holder = json.loads(data) if data else None
        if holder and holder.get("run_id") == run_id:
            return  # ours: our own write, whose answer was lost
        if _going(bucket, holder, time.time()):
            assert holder is not None
            if job.concurrency == SKIP:
                raise OverlapSkipped(
                    f"skipped: run {holder['run_id']} of job {job.name} is still going and the job's concurrency is skip"
                )
            if not told:
                say(f"waiting for run {holder['run_id']} of job {job.name} to end (the job's concurrency is wait)")
                told = True
            time.sleep(poll)
            continue
        now = time.time()
        since = dt.datetime.fromtimestamp(now, dt.UTC).isoformat(timespec="milliseconds")
        record = {"run_id": run_id, "since": since, "deadline": now + hold_seconds}
        try:
            bucket.write_if_generation(slot_key(job.name), json.dumps(record, sort_keys=True).encode(), generation)
            return
        except Conflict:
            continue  # another trigger decided between our read and our write: look again
