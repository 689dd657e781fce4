"""runs.show and the run list, from records written by the real controller and agent record path
(in-memory provider, file:// bucket)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from mlbatch.core import runs
from mlbatch.core.errors import BadInput, NotFound
from mlbatch.run import detach, inspect, inspect_render
from mlbatch.run.controller import RunRequest
from mlbatch.run.prices import load_prices
from tests.support.memory_provider import fail, hang, preempt, succeed

VERSION = "v1.0.0"


def test_show_has_spec_attempts_provenance_metrics_and_cost(controller, provider, bucket):
    provider.no_capacity_in.add("europe-west4-a")
    provider.script(preempt("tick 1"), succeed("done"))
    outcome = controller.run(RunRequest("spot-then-on-demand", VERSION, idempotency_key="slot-1"))
    bucket.write(
        f"{runs.results_of(bucket, outcome.record)}/metrics.json", json.dumps({"accuracy": 0.97, "curve": [1, 2]}).encode()
    )
    view = inspect.show(bucket, outcome.run_id, load_prices())
    assert (view["status"], view["exit_code"], view["job"]) == ("succeeded", 0, "spot-then-on-demand")
    assert view["spec"]["version"] == VERSION and view["spec"]["idempotency_key"] == "slot-1"
    assert view["provenance"]["git_sha"] == "0" * 40 and view["provenance"]["container"].endswith("@sha256:" + "0" * 64)
    assert view["provenance"]["code_sha256"] == "f" * 64 and view["provenance"]["agent"]
    first, second = view["attempts"]
    assert (first["status"], first["zone"], first["provisioning"]) == ("preempted", "europe-west4-b", "spot")
    assert (second["status"], second["machine_type"]) == ("succeeded", "e2-standard-4")
    assert {"create", "teardown"} <= set(first["phases"]) and first["deleted"]
    assert first["priced_as"] == "e2-standard-4 spot in europe-west4"
    minimum = load_prices().cost(load_prices().hourly("e2-standard-4", True, "europe-west4"), 0)
    assert first["cost_usd"] == pytest.approx(minimum, abs=1e-6), "a short instance bills the one-minute minimum"
    assert view["cost"]["estimated_usd"] == pytest.approx(first["cost_usd"] + second["cost_usd"], abs=1e-6)
    assert "2024-06-01" in view["cost"]["prices"]
    assert view["metrics"] == {"accuracy": 0.97}, "scalars only"
    json.dumps(view)  # the --json form


def test_show_of_a_running_detached_run_and_of_an_unknown_run(controller, provider, bucket):
    provider.script(hang("tick"))
    run_id = detach.start(controller, RunRequest("sleep", VERSION))
    view = inspect.show(bucket, run_id, load_prices())
    assert view["status"] == "running" and view["exit_code"] is None
    (attempt,) = view["attempts"]
    assert attempt["status"] == "running" and attempt["detached"] and attempt["cost_usd"] is not None
    detach.cancel(controller, run_id)
    with pytest.raises(NotFound, match="does not exist"):
        inspect.show(bucket, "sleep-20000101-000000-zzzz", load_prices())


def test_list_filters_by_job_status_and_time_and_carries_metrics(controller, provider, bucket, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # every column (ui.width: the terminal's, else $COLUMNS)
    provider.script(succeed(), fail(3), succeed())
    ok = controller.run(RunRequest("sleep", VERSION)).run_id
    failed = controller.run(RunRequest("sleep", VERSION)).run_id
    other = controller.run(RunRequest("no-retries", VERSION)).run_id
    bucket.write(f"{runs.results_prefix(ok, 1)}/metrics.json", b'{"loss": 0.123456}')
    rows = inspect.list_runs(bucket)
    assert {r["run_id"] for r in rows} == {ok, failed, other}
    assert [r["run_id"] for r in inspect.list_runs(bucket, job="sleep", status="failed")] == [failed]
    assert [r["exit_code"] for r in inspect.list_runs(bucket, status="failed")] == [3]
    assert inspect.list_runs(bucket, since="1h") and not inspect.list_runs(bucket, since="2999-01-01")
    (row,) = [r for r in rows if r["run_id"] == ok]
    assert row["metrics"] == {"loss": 0.123456} and row["seconds"] is not None
    table = inspect_render.render_list(rows)
    assert table.splitlines()[0].split() == ["RUN", "VERSION", "CREATED", "STATUS", "EXIT", "TIME", "METRICS"]
    assert "loss=0.1235" in table


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"status": "done"}, "invalid --status 'done'"), ({"since": "yesterday"}, "invalid --since")]
)
def test_list_refuses_bad_filters(bucket, kwargs, message):
    with pytest.raises(BadInput, match=message):
        inspect.list_runs(bucket, **kwargs)


def test_since_forms():
    now = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
    assert inspect.parse_since("90m", now) == now - dt.timedelta(minutes=90)
    assert inspect.parse_since("7d", now) == now - dt.timedelta(days=7)
    assert inspect.parse_since("2026-11-24", now) == dt.datetime(2026, 11, 24, tzinfo=dt.UTC)
