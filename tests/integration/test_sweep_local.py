"""`invoke run-batch --sweep` on the local profile: real engine, registry, baked image and agent."""

from __future__ import annotations

import csv
import io
import json
import signal
import time

import pytest

from mlbatch.core import runs, sweeps
from mlbatch.core.bucket import open_bucket
from mlbatch.core.errors import ExitCode
from mlbatch.local.infra import docker_client
from mlbatch.release.flow import release
from mlbatch.ui import Steps
from tests.conftest import make_settings, unique_version
from tests.integration.helpers import invoke, start_invoke, wait_for
from tests.integration.test_run_local import instances

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.usefixtures("infra")]  # a release first: minutes


@pytest.fixture(scope="module")
def env(infra, tmp_path_factory):
    settings = make_settings(f"file://{tmp_path_factory.mktemp('sweep-bucket')}")
    return settings, release(settings, unique_version(), Steps()).version


def run_id_of(output: str) -> str:
    return output.split("sweep ", 1)[1].split(":", 1)[0]


def test_a_grid_sweep_runs_every_task_and_ranks_them(env):
    settings, version = env
    result = invoke(
        settings.bucket,
        *("run-batch", "--job", "sleep", "--version", version),
        *("--sweep", "seconds=1,3", "--sweep", "message=a,b", "--parallelism", "2"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    run_id = run_id_of(result.stdout)
    bucket = open_bucket(settings.bucket)
    record = runs.read_json(bucket, sweeps.sweep_key(run_id))
    assert [t["params"] for t in record["tasks"]] == [
        {"seconds": 1, "message": "a"},
        {"seconds": 1, "message": "b"},
        {"seconds": 3, "message": "a"},
        {"seconds": 3, "message": "b"},
    ]
    assert all(t["status"] == "succeeded" and t["exit_code"] == 0 for t in record["tasks"])
    assert [t["metrics"] for t in record["tasks"]] == [{"ticks": 1}, {"ticks": 1}, {"ticks": 3}, {"ticks": 3}]
    for i in range(4):
        log = bucket.read(sweeps.task_key(run_id, i, "log")).decode()
        assert f"{record['tasks'][i]['params']['message']} 1/" in log, "each task ran with its own params"
        assert runs.read_json(bucket, sweeps.task_key(run_id, i, "attempt.json"))["status"] == "succeeded"
    rows = list(csv.DictReader(io.StringIO(bucket.read(sweeps.summary_key(run_id)).decode())))
    assert [r["param.seconds"] for r in rows] == ["3", "3", "1", "1"], "best first by the catalog's metric (metric.ticks, max)"
    assert runs.read_json(bucket, runs.result_key(run_id))["status"] == "succeeded"
    assert "best first by ticks" in result.stdout and "4 of 4 succeeded" in result.stdout
    assert instances(run_id) == []


def test_a_failing_task_gives_the_reserved_code_and_the_others_go_on(env, tmp_path):
    settings, version = env
    sweep_file = tmp_path / "codes.txt"
    sweep_file.write_text("# one exit code a line\nexit_code=0\nexit_code=3\nexit_code=0\n")
    result = invoke(
        settings.bucket, "run-batch", "--job", "fail-on-purpose", "--version", version, "--sweep-file", str(sweep_file)
    )
    assert result.returncode == ExitCode.TASKS_FAILED == 112, result.stdout + result.stderr
    record = runs.read_json(open_bucket(settings.bucket), sweeps.sweep_key(run_id_of(result.stdout)))
    assert [(t["status"], t["exit_code"]) for t in record["tasks"]] == [("succeeded", 0), ("failed", 3), ("succeeded", 0)]
    assert "1 of 3 tasks did not succeed" in result.stdout


def test_a_bad_params_set_is_refused_before_anything_starts(env):
    settings, version = env
    before = set(open_bucket(settings.bucket).list("runs"))
    result = invoke(settings.bucket, "run-batch", "--job", "sleep", "--version", version, "--sweep", "seconds=1,many")
    assert result.returncode == ExitCode.BAD_INPUT, result.stdout + result.stderr
    assert "task 1 (seconds=many)" in result.stderr and "expected a int" in result.stderr
    assert set(open_bucket(settings.bucket).list("runs")) == before


def test_cancelling_a_sweep_stops_its_tasks(env):
    settings, version = env
    proc = start_invoke(
        settings.bucket, "run-batch", "--job", "sleep", "--version", version, "--sweep", "seconds=60,61,62", "--parallelism", "2"
    )
    wait_for(lambda: len([c for c in instances() if c.status == "running"]) >= 2, what="two task instances")
    time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == ExitCode.CANCELLED, output
    run_id = run_id_of(output)
    record = runs.read_json(open_bucket(settings.bucket), sweeps.sweep_key(run_id))
    assert [t["status"] for t in record["tasks"]] == ["cancelled"] * 3
    assert instances(run_id) == []


def test_the_idempotency_key_gives_one_sweep(env):
    settings, version = env
    args = ("run-batch", "--job", "sleep", "--version", version, "--sweep", "seconds=1,2", "--idempotency-key", "slot-1")
    first = invoke(settings.bucket, *args)
    second = invoke(settings.bucket, *args)
    assert first.returncode == second.returncode == 0, first.stdout + second.stdout
    run_id = run_id_of(first.stdout)
    assert f"already started run {run_id}" in second.stdout
    assert len([k for k in open_bucket(settings.bucket).list("runs/sleep") if k.endswith("/sweep.json")]) >= 1
    assert json.loads(open_bucket(settings.bucket).read(runs.result_key(run_id)))["tasks"] == 2


def test_nodes_run_the_tasks_in_turn_and_a_stopped_nodes_task_runs_again(env):
    """Five tasks at parallelism 2 run on two nodes taking them in turn (agent/node.py), not on five
    instances. Stopping the node that runs task 0 is a local preemption: its agent records the attempt
    as preempted, the task runs again on an instance of its own, and the tasks left go on."""
    settings, version = env
    bucket = open_bucket(settings.bucket)
    before = set(runs.list_run_ids(bucket, "sleep"))
    proc = start_invoke(
        settings.bucket,
        "run-batch",
        "--job",
        "sleep",
        "--version",
        version,
        "--sweep",
        "seconds=30,1,2,3,4",
        "--parallelism",
        "2",
    )
    try:
        run_id = wait_for(lambda: next(iter(set(runs.list_run_ids(bucket, "sleep")) - before), None), what="the sweep's run id")

        def task_0_running():
            progress = runs.read_json(bucket, sweeps.RecordKeys.for_task(run_id, 0).progress) or {}
            return progress.get("phase") == runs.RUN and runs.read_record(bucket, sweeps.claim_key(run_id, 0), sweeps.TaskClaim)

        claim = wait_for(task_0_running, what="task 0 running on a node")
        docker_client().containers.get(claim.node).kill(signal="SIGTERM")
    except BaseException:  # the sweep is cancelled, not left running
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=180)
        raise
    output, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, output
    record = runs.read_json(bucket, sweeps.sweep_key(run_id))
    assert [(t["status"], t["attempts"]) for t in record["tasks"]] == [("succeeded", 2)] + [("succeeded", 1)] * 4
    ran_on = {i: runs.read_json(bucket, sweeps.task_key(run_id, i, "attempt.json"))["instance"] for i in range(5)}
    assert ran_on[0] == f"mlb-{run_id}-t0-2", "the retry ran on an instance of its own"
    assert {ran_on[i] for i in range(1, 5)} <= {f"mlb-{run_id}-n{n}" for n in (1, 2, 3)}, "the rest on nodes"
    assert "task 0: attempt 1 was preempted; retrying" in output
    logs = [bucket.read(sweeps.task_key(run_id, i, "log")).decode() for i in range(1, 5)]
    assert any("fetched for an earlier task" in log for log in logs), "a node fetches the code once for its tasks"
    assert instances(run_id) == []
