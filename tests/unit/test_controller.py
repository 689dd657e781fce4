"""The controller's decisions against the in-memory provider and a file:// bucket, in seconds.

The Docker tests in tests/integration prove the same end to end; these pin each decision.
"""

from __future__ import annotations

import threading
import time

import pytest

import mlbatch
from mlbatch.core import runs
from mlbatch.core.catalog import MAX_TIMEOUT
from mlbatch.core.errors import BadInput, BadRecord, ExitCode, NotFound
from mlbatch.run.controller import Cancelled, RunRequest, summary_rows
from mlbatch.run.deadlines import Margins
from tests.support.memory_provider import fail, hang, preempt, succeed, vanish
from tests.unit.conftest import VERSION, FastController


def run(controller, job="sleep", **kwargs):
    return controller.run(RunRequest(job, VERSION, **kwargs))


def attempts_of(provider):
    return [(request.attempt, zone, request.spot) for request, zone in provider.requests]


def test_a_run_that_succeeds(controller, provider, bucket, lines):
    provider.script(succeed("hello from the job"))
    outcome = run(controller, params=("seconds=2",))
    assert (outcome.exit_code, outcome.record.status, outcome.record.recorded_by) == (0, runs.SUCCEEDED, runs.AGENT)
    assert "hello from the job" in lines, "the console reached the caller"
    spec = runs.read_spec(bucket, outcome.run_id)
    assert spec is not None and spec.argv == ("python", "sleep.py", "--seconds=2") and spec.params == {"seconds": 2}
    attempt = runs.read_attempt(bucket, outcome.run_id, 1)
    assert attempt is not None and attempt.provenance.agent == mlbatch.__version__
    assert attempt.provenance.container == spec.container and outcome.record.provenance == attempt.provenance
    assert provider.running() == [] and provider.deleted == [f"mlb-{outcome.run_id}-1"]
    summary = dict(summary_rows(outcome))
    assert summary["status"] == runs.SUCCEEDED and summary["attempts"] == "1"
    shown = [part.split()[0] for part in summary["time"].split(", ")]
    assert shown == [name for name in runs.PHASES if name in outcome.phases] and "teardown" in shown


def test_the_job_exit_code_is_the_run_exit_code(controller, provider):
    provider.script(fail(3))
    outcome = run(controller)
    assert (outcome.exit_code, outcome.record.status) == (3, runs.FAILED)


def test_a_preempted_attempt_is_retried_with_the_same_run_id(controller, provider, bucket):
    provider.script(preempt("tick 1"), succeed())
    outcome = run(controller)
    assert outcome.exit_code == 0 and outcome.record.attempt == 2
    names = [request.name for request, _ in provider.requests]
    assert names == [f"mlb-{outcome.run_id}-1", f"mlb-{outcome.run_id}-2"]
    assert {request.spec.run_id for request, _ in provider.requests} == {outcome.run_id}
    first = runs.read_attempt(bucket, outcome.run_id, 1)
    assert first is not None and first.status == runs.PREEMPTED
    assert provider.running() == []


def test_an_instance_that_vanishes_without_a_record_counts_as_preempted(controller, provider):
    provider.script(vanish(), succeed())
    outcome = run(controller)
    assert outcome.exit_code == 0 and outcome.record.attempt == 2


def test_attempts_after_k_preemptions_run_on_demand(controller, provider, lines):
    provider.script(preempt(), preempt(), succeed())
    outcome = run(controller, job="spot-then-on-demand")
    assert outcome.exit_code == 0
    assert [spot for _, _, spot in attempts_of(provider)] == [True, True, False]
    assert "2 preemption(s): attempt 3 runs on-demand" in lines


def test_preempted_beyond_the_retries_is_105(controller, provider, bucket):
    provider.script(preempt(), preempt(), preempt())
    outcome = run(controller)
    assert outcome.exit_code == ExitCode.PREEMPTED == 105
    assert (outcome.record.status, outcome.record.recorded_by, outcome.record.attempt) == (runs.PREEMPTED, runs.CONTROLLER, 3)
    assert "preempted 3 time(s); the job allows 2 retries" in outcome.record.message
    assert runs.read_result(bucket, outcome.run_id) == outcome.record
    assert provider.running() == []


def test_no_retries_means_the_first_preemption_ends_the_run(controller, provider):
    provider.script(preempt())
    assert run(controller, job="no-retries").exit_code == ExitCode.PREEMPTED


def test_a_zone_without_capacity_falls_back_to_the_next(controller, provider, lines):
    provider.no_capacity_in.add("europe-west4-a")
    provider.script(succeed())
    outcome = run(controller)
    assert outcome.exit_code == 0
    assert attempts_of(provider) == [(1, "europe-west4-b", True)]
    assert "no capacity in europe-west4-a; trying the next zone" in lines


def test_no_capacity_anywhere_is_106(controller, provider, bucket):
    provider.no_capacity_in.update(provider.zones)
    outcome = run(controller)
    assert outcome.exit_code == ExitCode.NO_CAPACITY == 106
    assert "europe-west4-a" in outcome.record.message and "europe-west4-b" in outcome.record.message
    assert provider.requests == [] and runs.read_result(bucket, outcome.run_id) == outcome.record


def test_quota_is_107(controller, provider):
    provider.quota_exceeded = True
    outcome = run(controller)
    assert outcome.exit_code == ExitCode.QUOTA_EXCEEDED == 107
    assert outcome.record.status == runs.QUOTA_EXCEEDED and "Quota 'CPUS' exceeded" in outcome.record.message


def test_an_instance_without_a_result_past_the_deadline_is_108(controller, provider):
    provider.script(hang("tick 1"))
    outcome = run(controller, timeout_seconds=1)
    assert outcome.exit_code == ExitCode.TIMEOUT == 108
    assert outcome.record.status == runs.TIMEOUT and outcome.record.recorded_by == runs.CONTROLLER
    assert provider.running() == [], "the hung instance was deleted"


@pytest.mark.parametrize("moment", ["create", "state", "was_preempted"])
def test_cancel_records_109_and_deletes_the_instance(controller, provider, bucket, moment):
    provider.script(vanish() if moment == "was_preempted" else hang())
    provider.raise_from(moment, Cancelled("SIGTERM"))
    outcome = run(controller)
    assert outcome.exit_code == ExitCode.CANCELLED == 109
    result = runs.read_result(bucket, outcome.run_id)
    assert result is not None and result.status == runs.CANCELLED and "SIGTERM" in result.message
    assert provider.running() == []


def test_the_same_idempotency_key_attaches_to_the_first_run(controller, provider, bucket, lines):
    provider.script(fail(4, "first run's line"))
    first = run(controller, idempotency_key="rundeck-exec-4711")
    lines.clear()
    second = run(controller, idempotency_key="rundeck-exec-4711")
    assert second.attached and second.run_id == first.run_id and second.exit_code == first.exit_code == 4
    assert len(provider.requests) == 1 and runs.list_run_ids(bucket, "sleep") == [first.run_id]
    assert any("first run's line" in line for line in lines), "the second caller saw the run's log"


def test_a_duplicate_trigger_follows_a_running_run_to_its_end(controller, provider, bucket):
    provider.script(hang("tick 1"))
    request = RunRequest("sleep", VERSION, timeout_seconds=1, idempotency_key="slot-2026-11-25T20:00")
    outcomes = {}
    first = threading.Thread(target=lambda: outcomes.setdefault("first", controller.run(request)))
    first.start()
    while not runs.list_run_ids(bucket, "sleep"):  # the first run's spec is written
        time.sleep(0.001)
    follower = FastController(bucket, provider, print, print)
    follower.margins = Margins(start=10)  # it must outwait the first run's own deadline (timeout + its margins 0)
    second = follower.run(request)
    first.join(timeout=30)
    assert second.attached and second.run_id == outcomes["first"].run_id
    assert second.exit_code == outcomes["first"].exit_code == ExitCode.TIMEOUT
    assert len(provider.requests) == 1


def test_an_unreadable_idempotency_record_is_a_clear_error(controller, provider, bucket):
    provider.script(succeed())
    first = run(controller, idempotency_key="slot-1")
    (key,) = list(bucket.list("idempotency"))
    bucket.write(key, b"{not json")
    with pytest.raises(BadRecord, match="idempotency key 'slot-1' has a record that cannot be read.*no run was started"):
        run(controller, idempotency_key="slot-1")
    assert runs.list_run_ids(bucket) == [first.run_id] and len(provider.requests) == 1


@pytest.mark.parametrize(
    ("request_", "error", "message"),
    [
        (RunRequest("no-such-job", VERSION), BadInput, "unknown job 'no-such-job'.*expected one of"),
        (RunRequest("sleep", "1.0"), BadInput, "invalid version '1.0'"),
        (RunRequest("sleep", VERSION, params=("learning_rate=0.1",)), BadInput, "unknown param 'learning_rate'"),
        (RunRequest("sleep", VERSION, params=("seconds=$(id)",)), BadInput, "expected a int"),
        (RunRequest("sleep", VERSION, timeout_seconds=0), BadInput, "invalid --timeout 0"),
        (RunRequest("sleep", VERSION, timeout_seconds=MAX_TIMEOUT + 1), BadInput, f"expected seconds from 1 to {MAX_TIMEOUT}"),
        (RunRequest("sleep", VERSION, idempotency_key="a b"), BadInput, "invalid --idempotency-key"),
        (RunRequest("sleep", "v99.0.0"), NotFound, "release v99.0.0 does not exist"),
        (RunRequest("Bad_Job", VERSION), BadInput, "invalid job name"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_input_is_refused_before_any_write(controller, provider, bucket, request_, error, message):
    before = sorted(bucket.list(""))
    with pytest.raises(error, match=message):
        controller.run(request_)
    assert sorted(bucket.list("")) == before
    assert provider.requests == []
