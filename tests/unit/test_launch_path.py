"""One launch path (issue 17): single runs and sweeps are started by the same code, so what
one gets the other gets: the job's log cap, the concurrency policy, the provider's
preflight, the labels. And a sweep's run id is never taken for a single run's (bug 4)."""

from __future__ import annotations

import threading
import time

import pytest

from mlbatch.core import runs, sweeps
from mlbatch.core.errors import ExitCode, OverlapSkipped, PermissionDenied
from mlbatch.run import detach
from mlbatch.run.controller import RunRequest
from mlbatch.run.sweep import Sweep, SweepRequest
from mlbatch.run.sweep_local import LocalTasks
from tests.support.memory_provider import hang, succeed
from tests.support.releases import CATALOG, publish_release
from tests.unit.conftest import VERSION, FastController

CAPPED = "v3.0.0"  # a release whose sleep job keeps 1 MB of log
EXCLUSIVE = "v4.0.0"  # a release whose nightly job's concurrency is skip
NIGHTLY = """
  nightly:
    container: trainer
    command: [python, nightly.py]
    concurrency: skip
    params:
      day: {type: str, default: "1"}
"""


class FastTasks(LocalTasks):
    poll = 0.001
    state_check_every = 0.0
    margins = FastController.margins


def sweep(bucket, provider, job="sleep", version=VERSION, lines=None, **kwargs):
    say = lines.append if lines is not None else lambda _: None
    kwargs.setdefault("sweeps", ("seconds=1,2",))
    return Sweep(bucket, FastTasks(bucket, provider, say), say).run(SweepRequest(job, version, **kwargs))


def wait_until(condition, what: str, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.005)


def test_sweep_tasks_keep_the_jobs_log_cap(bucket, provider):
    publish_release(
        bucket, CAPPED, CATALOG.replace("    timeout_seconds: 600\n", "    timeout_seconds: 600\n    max_log_mb: 1\n", 1)
    )
    provider.script(succeed("x" * (3 * 1024 * 1024)), succeed("short"))
    outcome, _ = sweep(bucket, provider, version=CAPPED)
    assert outcome.exit_code == 0
    assert {request.spec.max_log_bytes for request, _ in provider.requests} == {1024 * 1024}
    log = bucket.read(sweeps.task_key(outcome.run_id, 0, runs.ATTEMPT_LOG))
    assert len(log) < 1024 * 1024 + 1024, f"task 0 kept {len(log)} bytes of a 1 MB capped log"


def test_a_run_and_a_sweep_task_are_labelled_and_specified_alike(controller, provider, bucket):
    provider.script(succeed(), succeed(), succeed())
    run = controller.run(RunRequest("sleep", VERSION, params=("seconds=2",)))
    swept, _ = sweep(bucket, provider, sweeps=("seconds=2,3",))
    (single, _), (node, _), _ = provider.requests
    task = provider.node_tasks[0]
    assert set(single.labels) - set(node.labels) == {"attempt"}, "a node runs several tasks: its labels name none"
    for key in ("managed-by", "role", "job", "version"):
        assert node.labels[key] == single.labels[key], key
    assert (single.labels["run-id"], node.labels["run-id"]) == (run.run_id, swept.run_id)
    differs = {f for f in runs.RunSpec.__dataclass_fields__ if getattr(single.spec, f) != getattr(task.spec, f)}
    assert differs == {"run_id", "created"}, "a task of seconds=2 is told what a run of seconds=2 is"
    assert node.max_run_seconds >= single.max_run_seconds, "a node lasts as long as the sweep may"


def test_a_sweep_keeps_the_jobs_concurrency_policy(controller, provider, bucket):
    publish_release(bucket, EXCLUSIVE, CATALOG + NIGHTLY)
    provider.script(hang())
    running = detach.start(controller, RunRequest("nightly", EXCLUSIVE))
    with pytest.raises(OverlapSkipped, match=f"run {running} of job nightly is still going"):
        sweep(bucket, provider, job="nightly", version=EXCLUSIVE, sweeps=("day=1,2",))
    assert len(provider.requests) == 1, "no task started"
    (skipped,) = [r for r in runs.list_run_ids(bucket, "nightly") if r != running]
    assert runs.read_result(bucket, skipped).status == runs.SKIPPED


def test_a_sweep_asks_the_providers_preflight_before_anything_is_written(bucket, provider):
    provider.raise_from("preflight", PermissionDenied("the caller lacks compute.instances.create"))
    with pytest.raises(PermissionDenied, match="compute.instances.create"):
        sweep(bucket, provider)
    assert list(bucket.list("runs")) == [] and provider.requests == []


def test_wait_and_cancel_on_a_sweep_follow_and_stop_its_tasks(controller, provider, bucket, lines):
    provider.script(hang(), hang())
    said: list[str] = []
    outcomes: dict[str, object] = {}
    swept = threading.Thread(target=lambda: outcomes.setdefault("sweep", sweep(bucket, provider, lines=said)))
    swept.start()
    wait_until(lambda: len(provider.requests) == 2, "both tasks to start")
    run_id = provider.requests[0][0].spec.run_id
    waiter = threading.Thread(target=lambda: outcomes.setdefault("wait", detach.wait(controller, run_id)))
    waiter.start()
    wait_until(lambda: any(f"following sweep {run_id}" in line for line in lines), "runs.wait to follow the sweep")
    record = detach.cancel(controller, run_id, tasks=lambda: FastTasks(bucket, provider, said.append))
    swept.join(timeout=30)
    waiter.join(timeout=30)
    assert (record.status, record.run_exit_code) == (runs.CANCELLED, ExitCode.CANCELLED)
    assert [request.name for request, _ in provider.requests] == [f"mlb-{run_id}-n1", f"mlb-{run_id}-n2"], (
        "runs.wait started no instance of its own"
    )
    assert provider.running() == [], "runs.cancel stopped every task"
    sweep_outcome, tasks = outcomes["sweep"]  # type: ignore[misc]
    assert sweep_outcome.exit_code == ExitCode.CANCELLED and [t.status for t in tasks] == [runs.CANCELLED] * 2
    assert outcomes["wait"].exit_code == ExitCode.CANCELLED  # type: ignore[attr-defined]
    result = runs.read_result(bucket, run_id)
    assert result is not None and result.status == runs.CANCELLED and result.tasks == 0, "the cancel's record stands"
    assert bucket.exists(sweeps.sweep_key(run_id)), "the sweep's own run-batch still wrote what its tasks did"


def test_wait_takes_a_run_over_in_the_zone_its_instance_was_made(controller, provider, bucket):
    """Issue 15 item 5: after a stockout in the first zone the instance is in the second."""
    provider.no_capacity_in.add("europe-west4-a")
    provider.script(hang())
    run_id = detach.start(controller, RunRequest("sleep", VERSION, timeout_seconds=1))
    provider.adopted.clear()  # what a fresh process knows
    detach.wait(controller, run_id)
    assert provider.adopted == {f"mlb-{run_id}-1": "europe-west4-b"}


def test_cancel_deletes_the_instance_in_the_zone_it_was_made(controller, provider, bucket):
    provider.no_capacity_in.add("europe-west4-a")
    provider.script(hang())
    run_id = detach.start(controller, RunRequest("sleep", VERSION))
    detach.cancel(controller, run_id)
    assert provider.adopted == {f"mlb-{run_id}-1": "europe-west4-b"} and provider.running() == []
