"""runs.show and the run list of a sweep, from records written by the real sweep code and agent
record path (in-memory provider, file:// bucket); the people's form at 80 columns."""

from __future__ import annotations

import dataclasses
import io
import json

import pytest
from rich.console import Console

from mlbatch.core import manifest as manifests
from mlbatch.core import runs, sweeps
from mlbatch.core.bucket import FileBucket
from mlbatch.run import inspect, inspect_render
from mlbatch.run.prices import load_prices
from tests.support.releases import publish_release
from tests.support.run_records import CATALOG, make_records

PRICES = load_prices()
MINIMUM = PRICES.cost(PRICES.hourly("e2-standard-4", True, "europe-west4"), 0)  # one task: the one-minute minimum


@pytest.fixture
def made(tmp_path):
    bucket = FileBucket(tmp_path / "bucket")
    return bucket, make_records(bucket, tmp_path / "instances").runs


def rendered(view, width=80) -> str:
    out = io.StringIO()
    Console(file=out, width=width, soft_wrap=True).print(inspect_render.render_show(view))
    return out.getvalue()


def test_show_of_a_sweep_has_every_task_the_best_and_the_cost(made):
    bucket, made_runs = made
    view = inspect.show(bucket, made_runs["sweep"], PRICES)
    sweep = view["sweep"]
    assert (view["status"], view["exit_code"]) == ("tasks_failed", 112)
    assert [t["params"] for t in sweep["tasks"][:2]] == [
        {"n_estimators": 10, "criterion": "gini", "seed": 0},
        {"n_estimators": 10, "criterion": "entropy", "seed": 0},
    ]
    assert [t["status"] for t in sweep["tasks"]] == ["succeeded"] * 5 + ["failed"]
    assert sweep["tasks"][5]["exit_code"] == 2 and sweep["tasks"][5]["metric"] is None
    assert sweep["tasks"][4]["metric"] == 0.95 and sweep["tasks"][4]["metrics"]["train_seconds"] == 1.0
    assert (sweep["metric"], sweep["metric_goal"], sweep["best_task"]) == ("accuracy", "max", 4)
    assert sweep["ranking"] == [4, 3, 2, 1, 0, 5]
    assert sweep["swept"] == ["criterion", "n_estimators"] and sweep["shared_params"] == {"seed": 0}
    for task in sweep["tasks"][:5]:  # the results path names what the task wrote
        key = task["results"].removeprefix(bucket.uri + "/") + "/metrics.json"
        assert bucket.exists(key), f"{task['results']} holds the task's results"
    assert view["results"] == bucket.url(f"{runs.run_prefix(made_runs['sweep'])}/tasks")
    assert view["provenance"]["agent"], "the agent's version, from the tasks' records"
    assert sweep["priced_tasks"] == 6 and view["cost"]["estimated_usd"] == pytest.approx(6 * MINIMUM, abs=1e-5)
    assert sweep["priced_as"] == "e2-standard-4 spot in europe-west4", "a local release's tasks: the table's local_region"
    assert sweep["summary"].endswith("/summary.csv")
    assert view["attempts"] == [], "a sweep's attempts are its tasks'"
    json.dumps(view)  # the --json form


def test_show_of_a_sweep_still_running_reads_the_tasks_records(made):
    bucket, made_runs = made
    run_id = made_runs["sweep"]
    root = bucket.root / runs.run_prefix(run_id)
    for name in ("sweep.json", "summary.csv", "result.json", "tasks/5/attempt.json"):
        (root / name).unlink()  # as it was while task 5 ran: no end records yet
    view = inspect.show(bucket, run_id, PRICES)
    sweep = view["sweep"]
    assert view["status"] == "running" and sweep["tasks"][5]["status"] == "running"
    assert sweep["tasks"][4]["metric"] == 0.95, "metrics of ended tasks, from their results"
    assert sweep["best_task"] == 4, "ranked by the release's catalog while the sweep has no sweep.json"
    assert sweep["priced_tasks"] == 5 and sweep["summary"] == ""


def test_a_gcp_sweeps_tasks_are_priced_in_the_profiles_region(tmp_path):
    bucket = FileBucket(tmp_path / "bucket")
    local = publish_release(FileBucket(tmp_path / "other"), "v2.0.0", CATALOG)
    manifests.publish(bucket, dataclasses.replace(local, profile="gcp"))
    from mlbatch.run.sweep import Sweep, SweepRequest
    from tests.support.memory_provider import MemoryProvider, succeed
    from tests.support.run_records import _QuickTasks

    provider = MemoryProvider(tmp_path / "instances", zones=("us-central1-a",))
    provider.script(succeed(metrics={"accuracy": 0.5}), succeed(metrics={"accuracy": 0.6}))
    outcome, _ = Sweep(bucket, _QuickTasks(bucket, provider, lambda _: None), lambda _: None).run(
        SweepRequest("train", "v2.0.0", sweeps=("seed=1,2",))
    )
    view = inspect.show(bucket, outcome.run_id, PRICES, region="us-central1")
    assert view["sweep"]["priced_as"] == "e2-standard-4 spot in us-central1"
    us = PRICES.cost(PRICES.hourly("e2-standard-4", True, "us-central1"), 0)
    assert view["cost"]["estimated_usd"] == pytest.approx(2 * us, abs=1e-5)
    unknown = inspect.show(bucket, outcome.run_id, PRICES)  # no region: Batch VMs cannot be priced
    assert unknown["sweep"]["priced_tasks"] == 0 and "unknown" in rendered(unknown)


def test_the_list_shows_a_sweeps_best_task_and_its_metric_first(made, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # every column, whole (ui.width)
    bucket, made_runs = made
    (row,) = [r for r in inspect.list_runs(bucket) if r["run_id"] == made_runs["sweep"]]
    assert row["sweep"] == {"tasks": 6, "succeeded": 5, "best_task": 4, "metric": "accuracy"}
    assert row["metrics"] == {"accuracy": 0.95, "train_seconds": 1.0}
    line = next(x for x in inspect_render.render_list([row]).splitlines() if x.startswith(made_runs["sweep"]))
    assert line.endswith("best t4: accuracy=0.95 train_seconds=1.0")
    single = next(r for r in inspect.list_runs(bucket) if r["run_id"] == made_runs["v1.0.0"])
    assert single["sweep"] is None and single["metrics"] == {"accuracy": 0.88, "loss": 0.3}


def _table_lines(text: str, own_line_keys: tuple[str, ...]) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith(own_line_keys)]


OWN_LINES = ("results", "summary", "vm image", "container", "code", "prices", "best", "task ")


def test_the_sweep_table_fits_80_columns_and_uris_are_whole_on_their_own_lines(made):
    bucket, made_runs = made
    view = inspect.show(bucket, made_runs["sweep"], PRICES)
    text = rendered(view)
    header = next(line for line in text.splitlines() if line.lstrip().startswith("task "))
    assert header.split() == ["task", "criterion", "n_estimators", "status", "exit", "accuracy", "results"]
    assert "…" not in text, "no column is cut short"
    assert [line for line in _table_lines(text, OWN_LINES) if len(line) > 80] == []
    lines = text.splitlines()
    assert f"results  {bucket.url(runs.run_prefix(made_runs['sweep']))}/" in lines
    assert f"summary  {bucket.url(sweeps.summary_key(made_runs['sweep']))}" in lines
    assert "best     task 4: accuracy=0.95 (criterion=gini n_estimators=100)" in lines
    rows = [line.split() for line in lines if line.strip().endswith("/results")]
    assert rows[0] == ["4", "gini", "100", "succeeded", "0", "0.95", "tasks/4/results"], "best first"
    assert rows[-1] == ["5", "entropy", "100", "failed", "2", "-", "tasks/5/results"]
    assert any(line.startswith("container") and view["provenance"]["container"] in line for line in lines)


def test_many_params_go_in_one_column_that_wraps_between_params(made):
    bucket, made_runs = made
    view = inspect.show(bucket, made_runs["sweep"], PRICES)
    for task in view["sweep"]["tasks"]:  # as if the sweep had swept five long-named params
        task["params"] = {**task["params"], **{f"regularisation_strength_{i}": 0.001 * i for i in range(3)}}
    view["sweep"]["swept"] += [f"regularisation_strength_{i}" for i in range(3)]
    text = rendered(view)
    header = next(line for line in text.splitlines() if line.lstrip().startswith("task "))
    assert header.split() == ["task", "params", "status", "exit", "accuracy"], "too wide for a results column"
    assert f"results  {view['results']}/<task>/results" in text.splitlines()
    assert [line for line in _table_lines(text, OWN_LINES) if len(line) > 80] == []
    table = text.split(header, 1)[1].split("\nbest ", 1)[0]
    assert table.count("regularisation_strength_1=0.001") == 6, "a param is never split inside name=value"


def test_a_single_runs_uris_are_on_lines_of_their_own(made):
    bucket, made_runs = made
    view = inspect.show(bucket, made_runs["v1.0.0"], PRICES)
    text = rendered(view)
    assert f"results  {view['results']}" in text.splitlines()
    assert [line for line in _table_lines(text, OWN_LINES) if len(line) > 80] == []
    assert view["sweep"] is None and view["spec"]["params"] == {"n_estimators": 50, "criterion": "gini", "seed": 0}
