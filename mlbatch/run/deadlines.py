"""How long an attempt may take, phase by phase, and how long its instance may live.

The job's timeout bounds the job alone (the agent stops it then). Around it each phase
has a margin of its own, counted from when the agent entered it (its progress.json):

    created --start--> the job starts --timeout + run_grace--> it ends --upload--> records

so a slow pull never eats into the upload's time, and an instance that is uploading a big
result is not deleted because pull and upload together went past one shared margin. An
instance's own safety net (GCE max_run_duration, the Batch task's maxRunDuration) is the
whole span plus a slack: it ends an attempt only once the controller would have.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math

from mlbatch.core import runs

START_MARGIN = 900  # seconds from the instance's creation until the job starts: boot, pull, fetch
RUN_GRACE = 60  # seconds past the job's timeout: the agent stops the job (10 s) and drains its output
UPLOAD_MARGIN = 900  # seconds from the job's end: its results uploaded, its records written
SELF_DELETE_SLACK = 300  # seconds an instance outlives the controller's deadline before it deletes itself
QUEUE_MARGIN = 1800  # seconds a sweep's tasks may wait for capacity (Cloud Batch queues them)
CREATE_BUDGET = 1800  # seconds creating an attempt's instance may take (zone after zone, each operation up to 600 s)


def _unix(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


@dataclasses.dataclass(frozen=True)
class Margins:
    start: float = START_MARGIN
    run_grace: float = RUN_GRACE
    upload: float = UPLOAD_MARGIN

    def attempt_seconds(self, timeout: int) -> float:
        """The longest one attempt may take, from its instance's creation to its records."""
        return self.start + timeout + self.run_grace + self.upload

    def instance_seconds(self, timeout: int) -> int:
        """The instance's max run duration: it deletes itself after this, controller or not."""
        return int(self.attempt_seconds(timeout) + SELF_DELETE_SLACK)

    def sweep_seconds(self, timeout: int, tasks: int, parallelism: int) -> float:
        """The longest a sweep's tasks may take: waves of `parallelism` tasks, each wave one
        attempt long, after a wait for capacity."""
        return math.ceil(tasks / parallelism) * self.attempt_seconds(timeout) + QUEUE_MARGIN

    def run_seconds(self, timeout: int, attempts: int) -> int:
        """The longest a run of `attempts` attempts may go on: how long it may hold the job's overlap slot."""
        return attempts * (CREATE_BUDGET + self.instance_seconds(timeout))

    def deadline(self, created_at: float, timeout: int, progress: runs.ProgressRecord | None) -> tuple[float, str]:
        """(unix time, what it waits for) by which the attempt must have moved on, given the
        agent's latest progress; the controller records a timeout past it."""
        if progress is not None and progress.phase == runs.RUN:
            return _unix(progress.since) + timeout + self.run_grace, f"the job to end (its timeout is {timeout}s)"
        if progress is not None and progress.phase == runs.UPLOAD:
            return _unix(progress.since) + self.upload, f"the results upload ({self.upload:.0f}s margin)"
        phase = progress.phase if progress is not None else "boot"
        return created_at + self.start, f"the job to start (in {phase}; {self.start:.0f}s margin)"
