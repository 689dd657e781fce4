"""`invoke runs` and `invoke runs.show` of a sweep, as a user runs them (the CLI in a subprocess,
output not a terminal: 80 columns, as in CI logs and Rundeck output), over records made by the
real sweep code (tests/support/run_records.py: in-memory provider, no engine)."""

from __future__ import annotations

import json

import pytest

from mlbatch.core import runs
from mlbatch.core.bucket import FileBucket
from tests.integration.helpers import invoke
from tests.support.run_records import make_records


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("inspect-cli")
    bucket = FileBucket(root / "bucket")
    return bucket, make_records(bucket, root / "instances").runs


def test_runs_show_of_a_sweep_lists_each_task_the_best_and_the_cost(records):
    bucket, made = records
    shown = invoke(bucket.uri, "runs.show", made["sweep"])
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    header = next(line for line in lines if line.lstrip().startswith("task "))
    assert header.split() == ["task", "criterion", "n_estimators", "status", "exit", "accuracy", "results"]
    rows = [line.split() for line in lines if line.rstrip().endswith("/results")]
    assert [r[0] for r in rows] == ["4", "3", "2", "1", "0", "5"], "every task, best first"
    assert rows[0] == ["4", "gini", "100", "succeeded", "0", "0.95", "tasks/4/results"]
    assert "best     task 4: accuracy=0.95 (criterion=gini n_estimators=100)" in lines
    assert f"results  {bucket.url(runs.run_prefix(made['sweep']))}/" in lines, "the URI whole, on its own line"
    assert any("est. cost" in line and "for 6 of 6 tasks as e2-standard-4 spot" in line for line in lines)
    assert not any("│ params    │ -" in line or "│ agent   │ -" in line for line in lines)
    uri_lines = ("results", "summary", "vm image", "container", "code", "prices", "best")
    assert [line for line in lines if len(line) > 80 and not line.startswith(uri_lines)] == [], "tables fit 80 columns"


def test_runs_show_json_of_a_sweep_gives_the_same(records):
    bucket, made = records
    shown = invoke(bucket.uri, "runs.show", made["sweep"], "--json")
    assert shown.returncode == 0, shown.stderr
    view = json.loads(shown.stdout)
    sweep = view["sweep"]
    assert sweep["best_task"] == 4 and sweep["ranking"][0] == 4 and len(sweep["tasks"]) == 6
    assert sweep["tasks"][4]["results"] == bucket.url(f"{runs.run_prefix(made['sweep'])}/tasks/4/results")
    assert sweep["tasks"][4]["params"] == {"criterion": "gini", "n_estimators": 100, "seed": 0}
    assert view["cost"]["estimated_usd"] > 0 and view["provenance"]["agent"]


def test_runs_lists_a_sweeps_best_metric(records):
    bucket, made = records
    listed = invoke(bucket.uri, "runs", "--job", "train", width=200)  # every column, whole
    assert listed.returncode == 0, listed.stderr
    (line,) = [x for x in listed.stdout.splitlines() if x.startswith(made["sweep"])]
    assert line.split()[3:5] == ["tasks_failed", "112"] and line.endswith("best t4: accuracy=0.95 train_seconds=1.0")
    as_json = json.loads(invoke(bucket.uri, "runs", "--json").stdout)
    (row,) = [r for r in as_json if r["run_id"] == made["sweep"]]
    assert row["sweep"]["best_task"] == 4 and row["metrics"]["accuracy"] == 0.95
