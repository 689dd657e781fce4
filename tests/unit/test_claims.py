"""Idempotency keys count as spent only once their run has an instance or a recorded end (issue 17,
bug 1): a trigger whose create failed for a reason that may pass leaves the run to the key's next
trigger (a Pub/Sub redelivery), which launches that same run; a run that cannot run (no capacity)
is recorded, and its key reports it."""

from __future__ import annotations

import pytest

from mlbatch.core import runs
from mlbatch.core.errors import ExitCode, MlbatchError, NotStarted, OverlapSkipped, QuotaError
from mlbatch.run import detach
from mlbatch.run.controller import RunRequest
from tests.support.memory_provider import hang, preempt, succeed
from tests.support.releases import CATALOG, publish_release

VERSION = "v1.0.0"
KEY = "pubsub-4711"


def claim_of(bucket, job="sleep", key=KEY) -> runs.IdempotencyRecord:
    record = runs.read_record(bucket, runs.idempotency_record_key(job, key), runs.IdempotencyRecord)
    assert record is not None
    return record


def test_a_redelivery_after_a_create_that_failed_launches_the_run(controller, provider, bucket):
    provider.raise_from("create", MlbatchError("creating the instance: 503 Service Unavailable"))
    with pytest.raises(MlbatchError, match="did not start") as info:
        detach.start(controller, RunRequest("sleep", VERSION, idempotency_key=KEY))
    assert info.value.exit_code == ExitCode.INFRA_FAILED, "not final: Pub/Sub redelivers"
    (claimed,) = runs.list_run_ids(bucket, "sleep")
    provider.script(hang())
    started = detach.start(controller, RunRequest("sleep", VERSION, idempotency_key=KEY))
    assert [request.name for request, _ in provider.requests] == [f"mlb-{claimed}-1"], (
        "the redelivery launched the run rather than acknowledging one that never ran"
    )
    assert started == claimed and runs.list_run_ids(bucket, "sleep") == [claimed], "one key, one run"
    assert (claim_of(bucket).run_id, claim_of(bucket).state) == (claimed, runs.KEY_STARTED)
    again = detach.start(controller, RunRequest("sleep", VERSION, idempotency_key=KEY))
    assert again == claimed and len(provider.requests) == 1, "once it has an instance the key is spent"


def test_a_failed_create_is_not_the_runs_end_and_frees_the_key_for_its_next_trigger(controller, provider, bucket):
    provider.raise_from("create", MlbatchError("creating the instance: 503 Service Unavailable"))
    with pytest.raises(NotStarted, match="the next trigger with its idempotency key resumes it"):
        controller.run(RunRequest("sleep", VERSION, idempotency_key="cron-20261125"))
    (claimed,) = runs.list_run_ids(bucket, "sleep")
    assert runs.read_result(bucket, claimed) is None and claim_of(bucket, key="cron-20261125").state == runs.KEY_RELEASED
    provider.script(succeed())
    retried = controller.run(RunRequest("sleep", VERSION, idempotency_key="cron-20261125"))
    assert (retried.run_id, retried.exit_code, retried.attached) == (claimed, 0, False)


def test_no_capacity_ends_a_keyed_run_and_its_key_reports_it(controller, provider, bucket):
    provider.no_capacity_in.update(provider.zones)
    first = controller.run(RunRequest("sleep", VERSION, idempotency_key="cron-20261126"))
    assert first.exit_code == ExitCode.NO_CAPACITY
    assert claim_of(bucket, key="cron-20261126").state == runs.KEY_STARTED, "decided: it would fail the same way"
    provider.no_capacity_in.clear()
    again = controller.run(RunRequest("sleep", VERSION, idempotency_key="cron-20261126"))
    assert (again.run_id, again.exit_code, again.attached) == (first.run_id, ExitCode.NO_CAPACITY, True)
    assert provider.requests == []


def test_a_run_that_started_keeps_its_key_when_a_retry_cannot_be_created(controller, provider, bucket):
    provider.script(preempt())
    provider.raise_from("create", QuotaError("creating attempt 2: Quota 'CPUS' exceeded"), after=1)
    outcome = controller.run(RunRequest("sleep", VERSION, idempotency_key=KEY))
    assert (outcome.exit_code, outcome.record.attempt) == (ExitCode.QUOTA_EXCEEDED, 2)
    assert claim_of(bucket).state == runs.KEY_STARTED, "its first instance existed: the run stands"
    again = controller.run(RunRequest("sleep", VERSION, idempotency_key=KEY))
    assert again.attached and again.run_id == outcome.run_id and len(provider.requests) == 1


def test_a_trigger_meeting_a_key_still_being_started_asks_to_be_retried(controller, provider, bucket):
    """Two deliveries of one message at once: the second must not acknowledge a run that may never start."""
    provider.script(hang())
    starting = runs.IdempotencyRecord(
        run_id="sleep-20261125-030000-aaaa", created=runs.now_iso(), state=runs.KEY_STARTING, lease_until=4102444800.0
    )
    runs.write_record(bucket, runs.idempotency_record_key("sleep", KEY), starting)
    with pytest.raises(MlbatchError, match="run sleep-20261125-030000-aaaa is still being started") as info:
        detach.start(controller, RunRequest("sleep", VERSION, idempotency_key=KEY))
    assert info.value.exit_code == ExitCode.INFRA_FAILED and provider.requests == []


def test_a_claim_abandoned_past_its_lease_is_resumed(controller, provider, bucket):
    """Its launcher died (nothing said it gave up): past the lease the next trigger launches the run."""
    provider.script(hang())
    abandoned = runs.IdempotencyRecord(
        run_id="sleep-20261125-030000-aaaa", created="", state=runs.KEY_STARTING, lease_until=1.0, claimant="x"
    )
    runs.write_record(bucket, runs.idempotency_record_key("sleep", KEY), abandoned)
    run_id = detach.start(controller, RunRequest("sleep", VERSION, idempotency_key=KEY))
    assert run_id == abandoned.run_id and [request.name for request, _ in provider.requests] == [f"mlb-{run_id}-1"]
    spec = runs.read_spec(bucket, run_id)
    assert spec is not None and spec.idempotency_key == KEY, "its spec.json written by the trigger that resumed it"
    assert claim_of(bucket).state == runs.KEY_STARTED


def test_a_record_written_before_claims_had_states_stands(controller, provider, bucket):
    runs.write_json(bucket, runs.idempotency_record_key("sleep", KEY), {"run_id": "sleep-20261125-030000-aaaa", "created": ""})
    assert detach.start(controller, RunRequest("sleep", VERSION, idempotency_key=KEY)) == "sleep-20261125-030000-aaaa"
    assert provider.requests == []


def test_a_skipped_trigger_spends_its_key(controller, provider, bucket):
    publish_release(
        bucket, "v2.0.0", CATALOG + "  nightly:\n    container: trainer\n    command: [python, n.py]\n    concurrency: skip\n"
    )
    provider.script(hang())
    detach.start(controller, RunRequest("nightly", "v2.0.0"))
    request = RunRequest("nightly", "v2.0.0", idempotency_key="slot-3")
    with pytest.raises(OverlapSkipped):
        controller.run(request)
    assert claim_of(bucket, "nightly", "slot-3").state == runs.KEY_STARTED
    again = controller.run(request)  # the trigger was decided: its redelivery reports the skip
    assert again.attached and again.exit_code == ExitCode.SKIPPED_OVERLAP and len(provider.requests) == 1
