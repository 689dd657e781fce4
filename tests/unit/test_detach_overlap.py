"""Detached runs, runs.wait / runs.cancel, the overlap policy and --version latest, against the
in-memory provider and a file:// bucket (the Docker tests in tests/integration prove them end to end)."""

from __future__ import annotations

import pytest

from mlbatch.core import runs
from mlbatch.core.errors import ExitCode, MlbatchError, NotFound, OverlapSkipped
from mlbatch.run import detach
from mlbatch.run.controller import RunRequest
from tests.support.memory_provider import hang, preempt, succeed
from tests.support.releases import CATALOG, publish_release

VERSION = "v1.0.0"
EXCLUSIVE = "v2.0.0-rc.1"  # a release whose catalog adds a job with concurrency: skip
NIGHTLY = """
  nightly:
    container: trainer
    command: [python, nightly.py]
    concurrency: skip
"""


def test_a_detached_run_returns_once_the_instance_exists(controller, provider, bucket):
    provider.no_capacity_in.add("europe-west4-a")
    provider.script(hang("tick 1"))
    run_id = detach.start(controller, RunRequest("sleep", VERSION))
    assert provider.running() == [f"mlb-{run_id}-1"], "nobody deletes it: it is left to its own safety nets"
    ((request, zone),) = provider.requests
    assert request.detached and zone == "europe-west4-b"
    made = runs.read_instance(bucket, run_id, 1)
    assert made is not None and (made.zone, made.spot, made.machine_type, made.detached) == (
        "europe-west4-b",
        True,
        "e2-standard-4",
        True,
    )
    assert made.phases["create"] >= 0 and not made.deleted
    assert runs.read_result(bucket, run_id) is None


def test_a_detached_run_that_cannot_start_is_recorded_and_raises_its_code(controller, provider, bucket):
    provider.no_capacity_in.update(provider.zones)
    with pytest.raises(MlbatchError, match="did not start: no capacity in any zone") as info:
        detach.start(controller, RunRequest("sleep", VERSION))
    assert info.value.exit_code == ExitCode.NO_CAPACITY
    (run_id,) = runs.list_run_ids(bucket, "sleep")
    assert runs.read_result(bucket, run_id).status == runs.NO_CAPACITY


def test_wait_takes_over_retries_a_preemption_and_returns_the_run_exit_code(controller, provider, bucket):
    provider.script(preempt("tick 1"), succeed("done"))
    run_id = detach.start(controller, RunRequest("sleep", VERSION))
    outcome = detach.wait(controller, run_id)
    assert (outcome.run_id, outcome.exit_code, outcome.record.attempt) == (run_id, 0, 2)
    assert [(r.attempt, r.detached) for r, _ in provider.requests] == [(1, True), (2, False)]
    assert provider.running() == [], "the waiter deletes the instances, as an attached run does"
    first = runs.read_instance(bucket, run_id, 1)
    assert first is not None and first.deleted and "teardown" in first.phases
    again = detach.wait(controller, run_id)
    assert again.exit_code == 0 and again.record == outcome.record, "an ended run reports at once"


def test_cancel_records_the_run_as_cancelled_and_deletes_the_instance(controller, provider, bucket):
    provider.script(hang("tick 1"))
    run_id = detach.start(controller, RunRequest("sleep", VERSION))
    record = detach.cancel(controller, run_id)
    assert (record.status, record.run_exit_code, record.recorded_by) == (runs.CANCELLED, ExitCode.CANCELLED, runs.CONTROLLER)
    assert provider.running() == [] and provider.deleted == [f"mlb-{run_id}-1"]
    assert detach.wait(controller, run_id).exit_code == ExitCode.CANCELLED
    assert detach.cancel(controller, run_id).status == runs.CANCELLED, "cancelling twice changes nothing"


def test_wait_and_cancel_of_an_unknown_run(controller):
    for action in (detach.wait, detach.cancel):
        with pytest.raises(NotFound, match="run sleep-20000101-000000-zzzz does not exist"):
            action(controller, "sleep-20000101-000000-zzzz")


def test_a_redelivered_trigger_starts_nothing_new(controller, provider, bucket):
    provider.script(hang())
    first = detach.start(controller, RunRequest("sleep", VERSION, idempotency_key="pubsub-981"))
    second = detach.start(controller, RunRequest("sleep", VERSION, idempotency_key="pubsub-981"))
    assert first == second and len(provider.requests) == 1 and runs.list_run_ids(bucket, "sleep") == [first]


def test_skip_starts_nothing_while_a_run_of_the_job_is_going(controller, provider, bucket):
    publish_release(bucket, EXCLUSIVE, CATALOG + NIGHTLY)
    provider.script(hang(), succeed())
    running = detach.start(controller, RunRequest("nightly", EXCLUSIVE))
    with pytest.raises(OverlapSkipped, match=f"run {running} of job nightly is still going") as info:
        controller.run(RunRequest("nightly", EXCLUSIVE))
    assert info.value.exit_code == ExitCode.SKIPPED_OVERLAP
    assert len(provider.requests) == 1, "no instance for the skipped trigger"
    skipped = [r for r in runs.list_run_ids(bucket, "nightly") if r != running]
    assert [runs.read_result(bucket, r).status for r in skipped] == [runs.SKIPPED], "the skip is on record"
    detach.cancel(controller, running)
    assert controller.run(RunRequest("nightly", EXCLUSIVE)).exit_code == 0, "the slot is free once the run ended"


def test_allow_starts_overlapping_runs(controller, provider):
    provider.script(hang(), hang())
    detach.start(controller, RunRequest("sleep", VERSION))
    detach.start(controller, RunRequest("sleep", VERSION))
    assert len(provider.running()) == 2


def test_version_latest_is_resolved_recorded_and_said(controller, provider, bucket, lines):
    publish_release(bucket, "v1.1.0-rc.1")
    provider.script(succeed())
    outcome = controller.run(RunRequest("sleep", "latest"))
    assert runs.read_spec(bucket, outcome.run_id).version == VERSION
    assert "--version latest resolved to v1.0.0" in lines
