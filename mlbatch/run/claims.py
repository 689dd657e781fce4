"""Idempotency keys: the same key never starts two runs, and a key whose run never started
does not stop the next trigger from starting one.

`idempotency/<job>/<sha256(key)[:32]>.json` names the run a key started, in a state:

    starting   claimed; the run's first instance does not exist yet
    started    the first instance exists (or the trigger was skipped): the key's run stands,
               a later trigger with the key follows or reports it
    released   the run ended before any instance existed (no capacity, quota, an API error,
               a cancel): a later trigger with the key starts a new run

A claim still `starting` past its lease was abandoned: its launcher died, and whatever it
may have created has deleted itself by then (the lease covers the create and the
instance's whole life). Every write is a compare-and-swap on the generation just read, so
of two triggers exactly one claims; a write whose answer was lost is retried by the
storage client, meets 412, and the record read again names our own run: taken as done.
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
    starting: bool  # another trigger is still creating its first instance


@dataclasses.dataclass
class Claim:
    """A key this trigger holds for its run, at the generation it last wrote."""

    bucket: Bucket
    idempotency_key: str
    record_key: str
    record: runs.IdempotencyRecord
    generation: int

    def settle(self) -> None:
        """The run stands (its first instance exists, or it was skipped): the key is spent."""
        self._move(runs.KEY_STARTED)

    def release(self) -> bool:
        """The run ended before any instance existed: a later trigger with the key may start
        one. Best effort (this runs on a failure path): a claim left starting is taken over
        at its lease. Whether it was released."""
        if self.record.state != runs.KEY_STARTING:  # a run that started stands, whatever comes after
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
                if current is None or current.run_id != wanted.run_id:
                    raise MlbatchError(
                        f"idempotency key {self.idempotency_key!r} no longer names run {wanted.run_id} "
                        f"(now {current.run_id if current else 'nothing'}): its claim was taken over after its lease"
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
    """Claim the key for `run_id` (starting), or the run it already names.

    `lease_seconds`: how long the claim may stay starting before another trigger takes it
    over; longer than creating the run and its first instance's whole life."""
    record_key = runs.idempotency_record_key(job, idempotency_key)
    while True:
        existing, generation = _read(bucket, record_key, idempotency_key)
        if existing is not None and existing.run_id == run_id:  # our write, whose answer was lost
            return Claim(bucket, idempotency_key, record_key, existing, generation)
        if existing is not None and not _free(existing):
            return Existing(existing.run_id, existing.state == runs.KEY_STARTING)
        mine = runs.IdempotencyRecord(
            run_id=run_id, created=runs.now_iso(), state=runs.KEY_STARTING, lease_until=time.time() + lease_seconds
        )
        try:
            bucket.write_if_generation(record_key, mine.to_json().encode(), generation)
        except Conflict:
            continue  # another trigger wrote between our read and our write: look again


def _free(record: runs.IdempotencyRecord) -> bool:
    """Whether a new trigger may claim the key over this record."""
    if record.state == runs.KEY_RELEASED:
        return True
    return record.state == runs.KEY_STARTING and time.time() >= record.lease_until
