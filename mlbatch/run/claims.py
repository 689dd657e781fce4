"""Idempotency keys: one key, one run, and that run is launched even when the trigger that
claimed the key could not create its first instance.

`idempotency/<job>/<sha256(key)[:32]>.json` names the run a key started, in a state:

    starting   claimed; the run's first instance does not exist yet
    started    the run stands: its first instance exists, or its end is recorded before
               one did (no capacity, quota, a skip, a cancel); a later trigger follows or
               reports it
    released   its launcher could not create the first instance for a reason that may pass
               (an API error, a dropped connection, a bucket write that failed) and did not
               record an end: the next trigger with the key resumes the same run

A claim still `starting` past its lease was abandoned (its launcher died) and is resumed
too. Resuming is safe even if the launcher had created the instance before it died: the
instance's name is the run's (`mlb-<run_id>-1`), so a second create of it meets the
first (GCE's 409 for our own run id and attempt is taken as done). Every write is a
compare-and-swap on the generation just read and names its claimant, so of two triggers
exactly one holds the key; a write whose answer was lost is retried by the storage
client, meets 412, and the record read again names our claimant: taken as done.
"""

from __future__ import annotations

import dataclasses
import time

from mlbatch.core import runs
from mlbatch.core.bucket import Bucket
from mlbatch.core.errors import BadRecord, Conflict, MlbatchError


@dataclasses.dataclass(frozen=True)
class Existing:
    """The run a key already names."""

    run_id: str
    starting: bool  # another trigger is creating its first instance right now


@dataclasses.dataclass
class Claim:
    """A key this trigger holds, at the generation it last wrote."""

    bucket: Bucket
    idempotency_key: str
    record_key: str
    record: runs.IdempotencyRecord
    generation: int
    resumed: bool  # the run another trigger claimed and did not start: launch it, under its run id

    @property
    def run_id(self) -> str:
        return self.record.run_id

    def settle(self) -> None:
        """The run stands (its first instance exists, or its end is recorded): the key is spent."""
        self._move(runs.KEY_STARTED)

    def release(self) -> bool:
        """The first instance could not be created and no end was recorded: the key's next
        trigger resumes the run. Best effort (this runs on a failure path): a claim left
        starting is resumed at its lease. Whether it was released."""
        if self.record.state != runs.KEY_STARTING:  # a run that stands stays so, whatever comes after
            return False
        try:
            self._move(runs.KEY_RELEASED)
        except MlbatchError:
            return False
        return True

    def _move(self, state: str) -> None:
        if self.record.state == state:
            return
        wanted = dataclasses.replace(self.record, state=state)
        while True:
            try:
                self.bucket.write_if_generation(self.record_key, wanted.to_json().encode(), self.generation)
            except Conflict:
                current, self.generation = _read(self.bucket, self.record_key, self.idempotency_key)
                if current is None or current.claimant != wanted.claimant:
                    raise MlbatchError(
                        f"idempotency key {self.idempotency_key!r} is no longer held by this trigger "
                        f"(now {current.claimant if current else 'nobody'}): its claim was taken over after its lease"
                    ) from None
                if current.state != state:
                    continue  # our record, at a generation we had not seen: write it again
            else:
                _, self.generation = self.bucket.read_generation(self.record_key)
            self.record = wanted
            return


def _read(bucket: Bucket, record_key: str, idempotency_key: str) -> tuple[runs.IdempotencyRecord | None, int]:
    data, generation = bucket.read_generation(record_key)
    if data is None:
        return None, generation
    try:
        return runs.IdempotencyRecord.from_json(data, bucket.url(record_key)), generation
    except BadRecord as exc:
        raise BadRecord(
            f"idempotency key {idempotency_key!r} has a record that cannot be read ({exc}); "
            "no run was started: inspect or remove it"
        ) from None


def claim(bucket: Bucket, job: str, idempotency_key: str, run_id: str, lease_seconds: float) -> Claim | Existing:
    """Claim the key for a new run, `run_id`, or to resume the run it names that was not
    started (`Claim.resumed`); or the run it names that stands or is being started (`Existing`).

    `lease_seconds`: how long the claim may stay starting before another trigger resumes the
    run; longer than creating the first instance may take."""
    record_key = runs.idempotency_record_key(job, idempotency_key)
    while True:
        existing, generation = _read(bucket, record_key, idempotency_key)
        if existing is not None and existing.claimant == run_id:  # our write, whose answer was lost
            return Claim(bucket, idempotency_key, record_key, existing, generation, resumed=existing.run_id != run_id)
        if existing is not None and not _resumable(existing):
            return Existing(existing.run_id, existing.state == runs.KEY_STARTING)
        mine = runs.IdempotencyRecord(
            run_id=existing.run_id if existing is not None else run_id,
            created=existing.created if existing is not None else runs.now_iso(),
            state=runs.KEY_STARTING,
            lease_until=time.time() + lease_seconds,
            claimant=run_id,
        )
        try:
            bucket.write_if_generation(record_key, mine.to_json().encode(), generation)
        except Conflict:
            continue  # another trigger wrote between our read and our write: look again


def _resumable(record: runs.IdempotencyRecord) -> bool:
    """Whether this trigger may take the key over to launch the run it names."""
    if record.state == runs.KEY_RELEASED:
        return True
    return record.state == runs.KEY_STARTING and time.time() >= record.lease_until
