"""Compare-and-swap writes whose answer is lost (FaultProxy in front of fake-gcs-server drops
the connection after the emulator stored the object): the storage client retries the
conditional write, meets 412, and the decision must still be ours (issue 17, bug 2).

Google's storage client retries a write that carries if_generation_match on a dropped
connection (google.cloud.storage.retry.DEFAULT_RETRY_IF_GENERATION_SPECIFIED); GCS answers
the retry 412 Precondition Failed because the first try changed the generation
(https://cloud.google.com/storage/docs/request-preconditions)."""

from __future__ import annotations

import pytest

from mlbatch.core import runs
from mlbatch.core.bucket import open_bucket
from mlbatch.run import claims
from mlbatch.run.overlap import claim, slot_key
from tests.integration.test_overlap import job

pytestmark = pytest.mark.chaos

NIGHTLY = job("skip")
RUN = "nightly-20261125-030000-aaaa"


def test_a_slot_write_whose_answer_was_lost_leaves_the_slot_to_its_writer(faulty_gcs, tally):
    proxy, uri = faulty_gcs
    bucket = open_bucket(uri)
    proxy.inject("upload", "drop-after", 1, name_contains=slot_key("nightly"))
    claim(bucket, NIGHTLY, RUN, 3600, print)  # before the fix: OverlapSkipped, "run ...-aaaa ... is still going"
    assert proxy.injected == 1, "the answer of the slot's write was lost"
    tally["faults_injected"] += 1
    assert runs.read_json(bucket, slot_key("nightly"))["run_id"] == RUN, "the run that wrote the slot holds it"
    tally["faults_survived"] += 1


def test_a_key_claim_whose_answer_was_lost_is_still_ours(faulty_gcs, tally):
    proxy, uri = faulty_gcs
    bucket = open_bucket(uri)
    record_key = runs.idempotency_record_key("nightly", "pubsub-1")
    proxy.inject("upload", "drop-after", 2, name_contains=record_key)  # the claim, then its settling
    claimed = claims.claim(bucket, "nightly", "pubsub-1", RUN, 3600)
    assert isinstance(claimed, claims.Claim) and claimed.record.run_id == RUN, "not taken for someone else's run"
    claimed.settle()
    assert proxy.injected == 2
    tally["faults_injected"] += 2
    stored = runs.read_record(bucket, record_key, runs.IdempotencyRecord)
    assert stored is not None and (stored.run_id, stored.state) == (RUN, runs.KEY_STARTED)
    again = claims.claim(bucket, "nightly", "pubsub-1", "nightly-20261125-030001-bbbb", 3600)
    assert again == claims.Existing(RUN, starting=False)
    tally["faults_survived"] += 2
