"""Listings (ui.columns) fit the width they are given, 80 in CI logs and Rundeck's output, and
never cut an id or a URI: columns are left out, and said to be, before free text is shortened."""

from mlbatch.core.text import has_control_characters
from mlbatch.run import inspect_render
from mlbatch.ui import columns

RUN_ID = "train-digits-20261130-155540-6sca"
URI = "gs://a-long-bucket-name/runs/train-digits/train-digits-20261130-155540-6sca/attempts/1/results"


def row(**overrides):
    return {
        "run_id": RUN_ID,
        "version": "v1.2.3-rc.10",
        "created": "2026-11-30T15:55:40.123456+00:00",
        "status": "succeeded",
        "exit_code": 0,
        "seconds": 42.0,
        "metrics": {"accuracy": 0.9612345, "n_estimators": 100, "test_size": 0.25, "seed": 0},
    } | overrides


def test_a_wide_listing_shows_every_column(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    header, line = inspect_render.render_list([row()]).splitlines()
    assert header.split() == ["RUN", "VERSION", "CREATED", "STATUS", "EXIT", "TIME", "METRICS"]
    assert "seed=0" in line and "left out" not in line


def test_at_80_columns_runs_leave_out_columns_then_shorten_the_metrics_never_the_run_id(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    lines = inspect_render.render_list([row(), row(run_id=RUN_ID + "x", metrics={})]).splitlines()
    assert max(len(line) for line in lines) <= 80, lines
    assert lines[0].split() == ["RUN", "STATUS", "METRICS"]
    assert lines[1].startswith(RUN_ID + " ") and "accuracy=0.9612" in lines[1] and lines[1].endswith("…")
    assert lines[-1] == "(not shown at 80 columns: CREATED, TIME, VERSION, EXIT; see --format json)"


def test_a_uri_is_never_cut_even_when_it_cannot_fit():
    table = columns(("NAME", "WHERE", "NOTE"), [("a", URI, "some free text")], leave_out=("NOTE",), fit=40)
    assert URI in table and "not shown at 40 columns: NOTE" in table and not has_control_characters(table.replace("\n", ""))


def test_columns_are_only_left_out_as_far_as_needed():
    rows = [("id-1", "x" * 10, "y" * 10)]
    assert columns(("ID", "A", "B"), rows, leave_out=("A", "B"), fit=30).splitlines()[0].split() == ["ID", "A", "B"]
    assert columns(("ID", "A", "B"), rows, leave_out=("A", "B"), fit=20).splitlines()[0].split() == ["ID", "B"]
