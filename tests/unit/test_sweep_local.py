"""The local sweep runner's decisions against the in-memory provider and a file:// bucket, in seconds.

tests/integration/test_sweep_local.py proves the same end to end with the engine and the baked image.
"""

from __future__ import annotations

import pytest

from mlbatch.core import runs, sweeps
from mlbatch.core.bucket import FileBucket
from mlbatch.core.errors import BadInput, ExitCode
from mlbatch.run.controller import Cancelled
from mlbatch.run.deadlines import Margins
from mlbatch.run.records import read_logs
from mlbatch.run.sweep import Sweep, SweepRequest
from mlbatch.run.sweep_local import LocalTasks
from tests.support.memory_provider import MemoryProvider, fail, hang, preempt, stay_in, succeed, vanish
from tests.support.releases import CATALOG, publish_release

VERSION = "v1.0.0"
RUN_ID = "sleep-20261130-101500-ab12"


class FastTasks(LocalTasks):
    poll = 0.001
    state_check_every = 0.0


@pytest.fixture
def bucket(tmp_path):
    bucket = FileBucket(tmp_path / "bucket")
    publish_release(bucket, VERSION, CATALOG.replace("    max_preemption_retries: 2\n", "    max_preemption_retries: 1\n", 1))
    return bucket


@pytest.fixture
def provider(tmp_path):
    return MemoryProvider(tmp_path / "instances", zones=("europe-west4-a",))


def sweep(bucket, provider, lines=None, **kwargs):
    say = lines.append if lines is not None else lambda _: None
    kwargs.setdefault("sweeps", ("seconds=1,2,3",))
    return Sweep(bucket, FastTasks(bucket, provider, say), say).run(SweepRequest("sleep", VERSION, **kwargs))


def test_nodes_take_the_tasks_in_turn_and_the_records_are_written(bucket, provider):
    provider.script(succeed("a"), succeed("b"), succeed("c"))
    outcome, tasks = sweep(bucket, provider, parallelism=2)
    assert outcome.exit_code == 0 and outcome.record.status == "succeeded"
    made = [request for request, _ in provider.requests]
    assert len(made) == 2 and all(r.node and r.task is None for r in made), "P nodes, not one instance a task"
    assert made[0].labels["role"] == "instance" and "task" not in made[0].labels
    assert sorted((r.task, r.spec.params["seconds"], r.spec.argv[-1]) for r in provider.node_tasks) == [
        (0, 1, "--seconds=1"),
        (1, 2, "--seconds=2"),
        (2, 3, "--seconds=3"),
    ], "every task taken once, with its own params and argv"
    assert provider.running() == [], "every node was deleted"
    assert [(t.status, t.attempts) for t in tasks] == [("succeeded", 1)] * 3
    claims = [runs.read_record(bucket, sweeps.claim_key(outcome.run_id, i), sweeps.TaskClaim) for i in range(3)]
    assert [c.node for c in claims if c is not None] == [r.name for r in provider.node_tasks]
    record = runs.read_record(bucket, sweeps.sweep_key(outcome.run_id), sweeps.SweepRecord)
    assert record is not None and [t.params["seconds"] for t in record.tasks] == [1, 2, 3]
    assert bucket.exists(sweeps.task_key(outcome.run_id, 2, "log")), "the agent logged under tasks/<i>/"
    logs = read_logs(bucket, outcome.run_id)
    assert logs.startswith("===== task 0 =====\na\n") and "===== task 2 =====\nc\n" in logs, "`invoke logs` shows each task"
    result = runs.read_result(bucket, outcome.run_id)
    assert result is not None and (result.tasks, result.succeeded) == (3, 3)
    plan = sweeps.SweepPlan.from_dict(runs.read_json(bucket, runs.spec_key(outcome.run_id))["sweep"])
    assert plan.parallelism == 2 and plan.tasks[1].argv[-1] == "--seconds=2"
    assert runs.read_spec(bucket, outcome.run_id) is not None, "spec.json stays a RunSpec for `runs` and attaching"


def test_two_nodes_racing_for_a_task_one_takes_it(bucket):
    """The claim is written once: of nodes that try the same task, one gets it and the others move on."""
    assert sweeps.claim_next(bucket, RUN_ID, 3, "node-a") == 0
    assert sweeps.claim_next(bucket, RUN_ID, 3, "node-b") == 1, "task 0 is taken: the next one"
    assert sweeps.claim_next(bucket, RUN_ID, 3, "node-b", start=0) == 2
    assert sweeps.claim_next(bucket, RUN_ID, 3, "node-a", start=1) is None, "none left"
    claim = runs.read_record(bucket, sweeps.claim_key(RUN_ID, 0), sweeps.TaskClaim)
    assert claim is not None and claim.node == "node-a"


def test_a_failing_task_gives_tasks_failed_while_the_others_go_on(bucket, provider):
    provider.script(succeed(), fail(3), succeed())
    outcome, tasks = sweep(bucket, provider)
    assert outcome.exit_code == ExitCode.TASKS_FAILED
    assert [(t.status, t.exit_code) for t in tasks] == [("succeeded", 0), ("failed", 3), ("succeeded", 0)]
    assert "1 of 3 tasks did not succeed" in outcome.record.message


def test_a_preempted_task_runs_again_on_its_own_instance_up_to_the_jobs_retries(bucket, provider):
    provider.script(preempt(), succeed(), vanish(), vanish())
    outcome, tasks = sweep(bucket, provider, sweeps=("seconds=1,2",), parallelism=1)
    made = [(r.node, r.task, r.attempt) for r, _ in provider.requests]
    assert made == [(True, None, 1), (False, 0, 2), (True, None, 1), (False, 1, 2)], (
        "task 0 preempted on the node: its retry on its own instance first, then a new node takes task 1, "
        "which vanishes with it: retried too"
    )
    assert provider.requests[1][0].spec.params == {"seconds": 1} and provider.requests[1][0].labels["task"] == "0"
    assert [(t.status, t.attempts) for t in tasks] == [("succeeded", 2), ("preempted", 2)]
    logs = read_logs(bucket, outcome.run_id)
    assert "===== task 0 =====\n[mlbatch] attempt 1 preempted" in logs, "the preempted attempt's log is kept"
    assert "===== task 0 attempt 2 =====\n[mlbatch] attempt 2 succeeded" in logs
    assert outcome.exit_code == ExitCode.TASKS_FAILED


def test_a_node_lost_before_taking_a_task_is_replaced(bucket, provider):
    provider.nodes_fail = 1
    provider.script(succeed(), succeed())
    outcome, tasks = sweep(bucket, provider, sweeps=("seconds=1,2",), parallelism=1)
    assert outcome.exit_code == 0 and [t.status for t in tasks] == ["succeeded"] * 2
    assert len(provider.requests) == 2 and provider.running() == []


def test_a_sweep_whose_nodes_all_fail_at_their_start_stops_instead_of_making_more(bucket, provider):
    provider.nodes_fail = 100
    outcome, tasks = sweep(bucket, provider, parallelism=2)
    assert outcome.exit_code == ExitCode.INFRA_FAILED and outcome.record.status == "infra_failed"
    assert "4 instances of the sweep ended before taking a task" in outcome.record.message
    assert len(provider.requests) == 4 and provider.running() == [], "two at once, two again, then no more"
    assert [t.status for t in tasks] == ["cancelled"] * 3


class DeadlineTasks(FastTasks):
    margins = Margins(start=0.2)


def test_a_node_stuck_in_a_task_is_deleted_at_its_deadline_and_another_takes_the_rest(bucket, provider):
    provider.script(stay_in(runs.PULL), succeed())
    lines: list[str] = []
    outcome, tasks = Sweep(bucket, DeadlineTasks(bucket, provider, lines.append), lines.append).run(
        SweepRequest("sleep", VERSION, sweeps=("seconds=1,2",), parallelism=1)
    )
    assert [(t.status, t.attempts) for t in tasks] == [("timeout", 1), ("succeeded", 1)]
    first, second = (r.name for r, _ in provider.requests)
    assert first in provider.deleted and provider.node_tasks[1].name == second
    assert "timed out waiting for the job to start" in tasks[0].message
    assert outcome.exit_code == ExitCode.TASKS_FAILED and provider.running() == []


def test_at_most_parallelism_tasks_at_once_and_a_cancel_stops_them_all(bucket, provider):
    provider.script(hang(), hang(), hang())
    provider.raise_from("state", Cancelled("SIGTERM"))
    outcome, tasks = sweep(bucket, provider, parallelism=2)
    assert len(provider.requests) == 2 and len(provider.node_tasks) == 2, "the third task waits for a free node"
    assert outcome.exit_code == ExitCode.CANCELLED and provider.running() == []
    assert [t.status for t in tasks] == ["cancelled"] * 3


def test_bad_params_of_any_task_refuse_the_sweep_before_anything_is_written(bucket, provider):
    with pytest.raises(BadInput, match=r"task 1 \(seconds=x\)"):
        sweep(bucket, provider, sweeps=("seconds=1,x",))
    with pytest.raises(BadInput, match="--parallelism 0"):
        sweep(bucket, provider, parallelism=0)
    with pytest.raises(BadInput, match="is not a file"):
        sweep(bucket, provider, sweeps=(), sweep_file="/nonexistent/sweep.txt")
    assert list(bucket.list("runs")) == [] and provider.requests == []


def test_the_same_idempotency_key_gives_the_same_sweep(bucket, provider):
    provider.script(succeed(), succeed(), succeed())
    first, _ = sweep(bucket, provider, idempotency_key="slot-7")
    lines: list[str] = []
    second, tasks = sweep(bucket, provider, lines, idempotency_key="slot-7")
    assert second.run_id == first.run_id and second.attached and len(tasks) == 3
    assert len(provider.requests) == 3 and any("already started run" in line for line in lines)


def test_under_a_release_whose_agent_predates_nodes_each_task_runs_on_its_own_instance(tmp_path, provider):
    """Its agent would take a node's instance file for a single run's (an unknown field is ignored)."""
    bucket = FileBucket(tmp_path / "old-bucket")
    publish_release(bucket, "v0.9.0", agent_features=())
    provider.script(succeed(), fail(2), succeed())
    lines: list[str] = []
    outcome, tasks = Sweep(bucket, FastTasks(bucket, provider, lines.append), lines.append).run(
        SweepRequest("sleep", "v0.9.0", sweeps=("seconds=1,2,3",), parallelism=2)
    )
    assert [(r.task, r.attempt, r.node) for r, _ in provider.requests] == [(0, 1, False), (1, 1, False), (2, 1, False)]
    assert [t.status for t in tasks] == ["succeeded", "failed", "succeeded"] and provider.running() == []
    assert "release v0.9.0's agent predates sweep nodes: an instance a task" in lines
    assert outcome.exit_code == ExitCode.TASKS_FAILED
