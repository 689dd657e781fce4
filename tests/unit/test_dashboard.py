"""The dashboard's pages without a server or a browser: what the data layer reads (and refuses to
write), escaping of everything a job wrote, long logs, page names, the plots' SVG."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from mlbatch.core import runs
from mlbatch.dashboard import data, plots
from mlbatch.dashboard.render import PageNotFound, Site
from mlbatch.run.controller import RunRequest
from mlbatch.run.prices import load_prices
from tests.conftest import ROOT
from tests.support.memory_provider import succeed

VERSION = "v1.0.0"
HOSTILE = "<img src=x onerror=alert(1)>"


class CountingBucket:
    """Counts reads of the bucket under it (a stand-in for a slow gs:// bucket)."""

    def __init__(self, bucket):
        self._bucket, self.uri, self.reads = bucket, bucket.uri, []

    def read(self, key, start=0, end=None):
        self.reads.append(key)
        return self._bucket.read(key, start, end)

    def __getattr__(self, name):
        return getattr(self._bucket, name)


def site(bucket) -> Site:
    return Site(data.Source.of(bucket, load_prices()))


def html(s: Site, name: str) -> str:
    body, content_type = s.page(name)
    assert content_type.startswith("text/html")
    return body.decode()


def test_the_bucket_is_read_only_and_final_records_are_read_once(controller, provider, bucket):
    provider.script(succeed("hello"))
    run_id = controller.run(RunRequest("sleep", VERSION)).run_id
    counting = CountingBucket(bucket)
    readonly = data.ReadOnlyBucket(counting)
    for method, args in (("write", (b"x",)), ("upload", (bucket.root,)), ("write_if_generation", (b"x", 1))):
        with pytest.raises(data.ReadOnly, match="read-only"):
            getattr(readonly, method)("runs/x", *args)
    with pytest.raises(data.ReadOnly):
        readonly.append("runs/x", b"x", at=0)
    pages = Site(data.Source(readonly, load_prices()))
    html(pages, "index.html")
    html(pages, "index.html")
    spec = runs.spec_key(run_id)
    assert counting.reads.count(spec) == 1, "spec.json never changes: read once"
    assert counting.reads.count(f"{runs.results_prefix(run_id, 1)}/metrics.json") > 1, "what may change is read again"


def test_what_a_job_wrote_is_escaped_on_every_page(controller, provider, bucket):
    provider.script(succeed("\x1b]0;title\x07<script>alert(1)</script>\r", metrics={HOSTILE: 1.5, "loss": 0.25}))
    run_id = controller.run(RunRequest("sleep", VERSION)).run_id
    pages = site(bucket)
    for name in ("index.html", f"run-{run_id}.html", f"log-{run_id}.html", "job-sleep.html"):
        page = html(pages, name)
        assert "<img" not in page and "<script" not in page, name
    assert "&lt;img src=x onerror=alert(1)&gt;=1.5" in html(pages, "index.html")
    log = html(pages, f"log-{run_id}.html")
    assert "^[]0;title^G&lt;script&gt;alert(1)&lt;/script&gt;^M" in log, "control characters spelled out, markup escaped"
    job = html(pages, "job-sleep.html")
    assert 'id="points-release-loss"' in job, "a job without a catalog metric: each numeric metric it wrote"
    assert "&lt;img src=x onerror=alert(1)&gt;</text>" in job, "the plot's label is escaped text"


def test_a_long_log_shows_its_head_and_tail(controller, provider, bucket, monkeypatch):
    monkeypatch.setattr(data, "LOG_PART_LIMIT", 200)
    provider.script(succeed("first line", *(f"line {i:04d}" for i in range(300)), "last line"))
    run_id = controller.run(RunRequest("sleep", VERSION)).run_id
    (part,) = data.run_log(data.Source.of(bucket, load_prices()), run_id)["parts"]
    key = runs.attempt_key(run_id, 1, "log")
    assert part["head"].startswith("first line") and "last line" in part["tail"]
    assert part["hidden"] == bucket.size(key) - 200 and part["anchor"] == "attempt-1"
    assert "bytes not shown" in html(site(bucket), f"log-{run_id}.html")


@pytest.mark.parametrize(
    "name",
    [
        "nothing.html",
        "run-../../etc/passwd.html",
        "run-not-a-run-id.html",
        "log-x.html",
        "job-BAD.html",
        "job-none.html",
        "run-sleep-20000101-000000-zzzz.html",
    ],
)
def test_a_page_that_does_not_exist_is_not_found(bucket, name):
    with pytest.raises(PageNotFound):
        site(bucket).page(name)


def test_a_run_whose_records_cannot_be_read_is_listed_with_the_problem(controller, provider, bucket):
    provider.script(succeed(), succeed())
    broken = controller.run(RunRequest("sleep", VERSION)).run_id
    fine = controller.run(RunRequest("sleep", VERSION)).run_id
    bucket.write(runs.attempt_key(broken, 1, "instance.json"), b"{not json")
    rows = {r["run_id"]: r for r in data.run_list(data.Source.of(bucket, load_prices()))["runs"]}
    assert "is not JSON" in rows[broken]["problem"] and "problem" not in rows[fine]


def test_plots_draw_a_point_per_value_and_take_any_text_as_text():
    svg = plots.scatter([("gini", 0.8, False), ("a$b$<c>", 0.9, True), ("gini", 0.85, False)], "criterion", "acc", "criterion")
    points = re.search(r'<g id="points-criterion">.*?</g>\s*</g>', svg, re.S)  # the group and its clipped inner group
    assert points is not None and svg.count("<use", points.start(), points.end()) == 3
    assert 'id="starred-criterion"' in svg and "a$b$&lt;c&gt;" in svg, "no mathtext, escaped"
    assert plots.scatter([(1, 0.1, False)], "x", "y", "same") == plots.scatter([(1, 0.1, False)], "x", "y", "same")
    wide = plots.scatter([(10, 0.5, False), (1000, 0.6, False)], "n", "y", "wide")
    narrow = plots.scatter([(10, 0.5, False), (20, 0.6, False)], "n", "y", "narrow")
    assert "<tspan" in wide and "<tspan" not in narrow, "a log axis (10 with a superscript) for values 100x apart"


def test_the_index_counts_statuses_and_keeps_the_newest_runs(controller, provider, bucket):
    provider.script(*(succeed() for _ in range(3)))
    made = [controller.run(RunRequest("sleep", VERSION)).run_id for _ in range(3)]
    index = data.run_list(data.Source.of(bucket, load_prices(), limit=2))
    assert index["total"] == 3 and index["statuses"] == {"succeeded": 3} and len(index["runs"]) == 2
    assert {r["run_id"] for r in index["runs"]} <= set(made) and index["jobs"] == ["sleep"]
    assert index["runs"][0]["phases"][0]["phase"] == "create"
    json.dumps(index)


def test_without_the_dashboard_extra_the_error_says_how_to_install_it():
    code = "import sys; sys.modules['matplotlib'] = None; import mlbatch.dashboard"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode != 0 and "InfraError: invoke dashboard needs matplotlib: pip install -e '.[dashboard]'" in done.stderr
