"""Sweeps without an engine: params sets, ranking and CSV, the agent's task mode, the Batch job body."""

from __future__ import annotations

import json

import pytest

from mlbatch.agent import task as task_mode
from mlbatch.core import runs, sweeps
from mlbatch.core.catalog import parse_catalog
from mlbatch.core.errors import BadInput, ExitCode
from mlbatch.core.sweeps import TaskRecord
from mlbatch.run.ranking import rank, summary_csv
from tests.conftest import ROOT

CATALOG = parse_catalog((ROOT / "batch_code" / "jobs.yaml").read_text())
SPEC = runs.RunSpec(
    run_id="sleep-20260101-000000-abcd", job="sleep", version="v1.0.0", bucket="gs://b-unit", container="r@sha256:1",
    code_key="k", code_sha256="s", argv=("python", "sleep.py"), params={}, timeout_seconds=60, created="now",
    vm_image="https://www.googleapis.com/compute/v1/projects/p/global/images/mlbatch-v1-0-0-1",
)  # fmt: skip


def test_sweeps_are_the_product_of_their_lists():
    assert sweeps.parse_sweeps(["a=1,2", "b=x,y"]) == [
        {"a": "1", "b": "x"},
        {"a": "1", "b": "y"},
        {"a": "2", "b": "x"},
        {"a": "2", "b": "y"},
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["a"], "expected name=value"),
        (["a=1,,2"], "no empty value"),
        (["a=1", "a=2"], "given twice"),
        (["a=1,1"], "listed twice"),
        (["Bad=1"], "expected name=value"),
    ],
)
def test_bad_sweeps_are_refused_by_name(options, message):
    with pytest.raises(BadInput, match=message):
        sweeps.parse_sweeps(options)


def test_sweep_file_lines_cross_the_grid_and_clashes_are_refused():
    lines = sweeps.parse_sweep_file("# backfill\nday=2024-01-01 seed=1\n\nday=2024-01-02 seed=2  # the second\n")
    assert lines == [{"day": "2024-01-01", "seed": "1"}, {"day": "2024-01-02", "seed": "2"}]
    tasks = sweeps.combine({"n": "5"}, [{"m": "a"}, {"m": "b"}], lines)
    assert len(tasks) == 4 and tasks[0] == {"n": "5", "day": "2024-01-01", "seed": "1", "m": "a"}
    with pytest.raises(BadInput, match="'seed' is given by more than one"):
        sweeps.combine({"seed": "0"}, [], lines)
    with pytest.raises(BadInput, match="line 2"):
        sweeps.parse_sweep_file("a=1\nnot-a-pair\n")
    with pytest.raises(BadInput, match="at most 1000"):
        sweeps.combine({}, [{"a": str(i)} for i in range(1001)], [])


def test_record_keys_of_a_task():
    keys = sweeps.RecordKeys.for_task("sleep-20260101-000000-abcd", 3)
    assert keys.log == "runs/sleep/sleep-20260101-000000-abcd/tasks/3/log"
    assert keys.attempt.endswith("/tasks/3/attempt.json") and keys.results.endswith("/tasks/3/results")
    assert keys.result is None, "a task never writes the run's result.json"
    retry = sweeps.RecordKeys.for_task("sleep-20260101-000000-abcd", 3, attempt=2)
    assert retry.log.endswith("/tasks/3/attempts/2/log") and retry.attempt == keys.attempt, "a retry appends to a log of its own"


def test_ranking_puts_the_best_metric_first_and_failures_last():
    job = CATALOG["train-digits"]
    assert (job.metric, job.metric_goal) == ("accuracy", "max")
    outcomes = [
        TaskRecord(index=0, params={"n_estimators": 10}, status="succeeded", exit_code=0, attempts=1, metrics={"accuracy": 0.9}),
        TaskRecord(index=1, params={"n_estimators": 20}, status="failed", exit_code=3, attempts=1),
        TaskRecord(index=2, params={"n_estimators": 30}, status="succeeded", exit_code=0, attempts=1, metrics={"accuracy": 0.95}),
    ]
    ranked = rank(outcomes, job)
    assert [o.index for o in ranked] == [2, 0, 1]
    lines = summary_csv(ranked).splitlines()
    assert lines[0] == "rank,task,param.n_estimators,status,exit_code,attempts,metric.accuracy"
    assert lines[1] == "1,2,30,succeeded,0,1,0.95" and lines[3] == "3,1,20,failed,3,1,"


def test_summary_csv_names_every_column_once_when_a_metric_shares_a_params_name():
    """train-digits writes n_estimators to metrics.json too: the header had it twice."""
    import csv
    import io

    outcome = TaskRecord(
        index=0, params={"n_estimators": 10}, status="succeeded", exit_code=0, attempts=1,
        metrics={"n_estimators": 10, "status": "ok", "accuracy": 0.9},
    )  # fmt: skip
    header = next(csv.reader(io.StringIO(summary_csv([outcome]))))
    assert len(header) == len(set(header)), header
    assert {"param.n_estimators", "metric.n_estimators", "status", "metric.status"} <= set(header)


def test_catalog_metric_is_checked():
    text = "jobs:\n  j:\n    container: c\n    command: [x]\n    metric_goal: best\n"
    with pytest.raises(BadInput, match="metric_goal 'best' must be max or min"):
        parse_catalog(text)


def test_agent_task_mode_reads_what_cloud_batch_sets():
    env = {
        "MLBATCH_RUN_SPEC": SPEC.to_json(),
        "MLBATCH_TASK": json.dumps({"params": {"seconds": 2}, "argv": ["python", "sleep.py", "--seconds=2"]}),
        "BATCH_TASK_INDEX": "4",
        "BATCH_TASK_RETRY_ATTEMPT": "1",
        "MLBATCH_WORKDIR": "/w",
    }
    assert task_mode.on_batch(env) and not task_mode.on_batch({"BATCH_TASK_INDEX": "0"})
    instance = task_mode.batch_instance(env)
    assert instance.task == 4 and instance.attempt == 2 and instance.workdir == "/w"
    assert instance.spec.params == {"seconds": 2} and instance.spec.argv[-1] == "--seconds=2"
    assert runs.InstanceSpec.from_json(instance.to_json()).task == 4, "the local instance file carries it the same way"


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        ("succeeded", 0, 0),
        ("failed", 3, 3),
        ("failed", 300, 255),
        ("failed", ExitCode.PREEMPTED, 1),  # a job's own 105 must not be retried as a preemption
        ("timeout", -1, ExitCode.TIMEOUT),
        ("infra_failed", -1, 110),
        ("preempted", -1, ExitCode.PREEMPTED),
    ],
)
def test_the_task_exit_code_is_what_the_lifecycle_policy_acts_on(status, code, expected):
    from mlbatch.providers.batch import RETRIED_EXIT_CODES

    assert task_mode.exit_code(status, code) == expected
    assert (expected in RETRIED_EXIT_CODES) == (status == "preempted"), "only a preemption is retried"


def test_the_batch_job_body_is_valid_for_batch_v1_and_retries_only_preemption():
    from google.cloud import batch_v1

    from mlbatch.providers.batch import PREEMPTED_EXIT_CODE, BatchJobs
    from tests.conftest import repo_config
    from tests.support import discovery

    config = repo_config()
    config["profile"] = "test"
    config["profiles"]["test"].update(bucket="gs://b-unit", batch_endpoint="http://127.0.0.1:9")
    from mlbatch.core.settings import load_settings

    settings = load_settings(config, ROOT)
    job = CATALOG["sleep"]
    tasks = [job.resolve_params({"seconds": str(i)}) for i in (1, 2)]
    body = BatchJobs(settings).job_body(SPEC, job, tasks, 2, {"managed-by": "mlbatch"}, 900)
    wire = json.loads(batch_v1.Job.to_json(body, use_integers_for_enums=False))
    assert discovery.check_body("Job", wire, "batch.projects.locations.jobs.create", api=discovery.BATCH) == []
    group = wire["taskGroups"][0]
    assert group["taskCount"] == "2" and group["parallelism"] == "2" and group["taskCountPerNode"] == "1"
    assert [json.loads(e["variables"]["MLBATCH_TASK"])["params"] for e in group["taskEnvironments"]] == tasks
    # One policy (the API supports one): RETRY_TASK on a preemption, by Batch's code or the agent's; any other code fails.
    [policy] = group["taskSpec"]["lifecyclePolicies"]
    assert policy == {"action": "RETRY_TASK", "actionCondition": {"exitCodes": [PREEMPTED_EXIT_CODE, ExitCode.PREEMPTED]}}
    assert group["taskSpec"]["maxRetryCount"] == job.max_preemption_retries
    policy = wire["allocationPolicy"]["instances"][0]
    assert policy["policy"]["provisioningModel"] == "SPOT" and policy["blockProjectSshKeys"] is True
    assert policy["policy"]["bootDisk"]["image"] == "projects/p/global/images/mlbatch-v1-0-0-1"
    assert wire["allocationPolicy"]["network"]["networkInterfaces"][0]["noExternalIpAddress"] is True
    assert "MLBATCH_RUN_SPEC" in group["taskSpec"]["runnables"][0]["environment"]["variables"]


def test_the_local_sweep_path_never_imports_the_cloud_clients_and_the_task_mode_stays_in_core():
    from tests.unit.test_imports import modules_after

    assert "google.cloud.batch_v1" in modules_after("from mlbatch.providers import batch"), "install the gce extra"
    loaded = modules_after("import tasks; from mlbatch.run import sweep, sweep_local, sweep_runners, sweep_bench")
    assert not {"google.cloud.batch_v1", "google.cloud.compute_v1"} & loaded
    agent = modules_after("import mlbatch.agent.main, mlbatch.agent.task")
    assert {m for m in agent if m.startswith("mlbatch.") and not m.startswith(("mlbatch.core", "mlbatch.agent"))} == set()
