"""`invoke dashboard` as a user runs it, over a file:// bucket and a gs:// one (fake-gcs-server):
the pages it serves, what it refuses, that it writes nothing to the bucket, and the export."""

from __future__ import annotations

import re
import signal
import subprocess
import urllib.error
import urllib.request

import pytest

from mlbatch.core.bucket import open_bucket
from tests.conftest import ROOT
from tests.integration.helpers import INVOKE, cli_env, invoke, snapshot
from tests.support.run_records import make_records


@pytest.fixture
def records(any_bucket, tmp_path):
    bucket = open_bucket(any_bucket)
    return bucket, make_records(bucket, tmp_path / "instances").runs


def fetch(url: str, method: str = "GET", host: str | None = None) -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(url, method=method, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def test_serves_every_page_over_either_bucket_and_writes_nothing(records):
    bucket, made = records
    before = snapshot(bucket.uri)
    proc = subprocess.Popen(
        [INVOKE, "dashboard", "--port", "0"], cwd=ROOT, env=cli_env(bucket.uri), stdout=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()
        url = line.split(" at ", 1)[1].split()[0]
        status, index, headers = fetch(url)
        assert status == 200 and all(run_id in index for run_id in made.values())
        assert (
            "script-src" not in headers["Content-Security-Policy"] and "default-src 'none'" in headers["Content-Security-Policy"]
        )
        status, page, _ = fetch(f"{url}run-{made['sweep']}.html")
        assert status == 200 and 'id="points-n_estimators"' in page and 'id="points-criterion"' in page
        status, log, _ = fetch(f"{url}log-{made['sweep']}.html")
        assert status == 200 and 'id="task-5"' in log and "out of memory" in log
        assert fetch(f"{url}job-train.html")[0] == 200 and fetch(f"{url}style.css")[0] == 200
        assert fetch(url, method="HEAD")[0] == 200
        assert fetch(f"{url}run-train-20000101-000000-zzzz.html")[0] == 404, "a run the bucket does not hold"
        assert fetch(f"{url}../../etc/passwd")[0] == 404 and fetch(f"{url}run-..%2Fx.html")[0] == 404
        assert fetch(url, method="POST")[0] == 501, "read-only: GET and HEAD only"
        assert fetch(url, host="attacker.example:80")[0] == 421, "a rebound DNS name gets nothing"
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "dashboard stopped" in out
    assert snapshot(bucket.uri) == before, "the dashboard wrote nothing to the bucket"


def test_export_writes_pages_that_link_to_each_other_and_to_nothing_outside(records, tmp_path):
    bucket, made = records
    before = snapshot(bucket.uri)
    folder = tmp_path / "site"
    done = invoke(bucket.uri, "dashboard", "--export", str(folder))
    assert done.returncode == 0, done.stderr
    names = {p.name for p in folder.iterdir()}
    assert {"index.html", "style.css", "job-train.html"} <= names
    assert all(f"run-{r}.html" in names and f"log-{r}.html" in names for r in made.values())
    for page in folder.glob("*.html"):
        for link in re.findall(r'(?:href|src)="([^"]*)"', page.read_text()):
            if link.startswith("#"):
                continue
            assert "://" not in link and not link.startswith("//"), f"{page.name} links outside: {link} (no CDN)"
            assert link.split("#")[0] in names, f"{page.name} links to {link}, which the export lacks"
    assert snapshot(bucket.uri) == before


def test_export_refuses_a_folder_inside_a_file_bucket_and_a_bad_limit(tmp_path):
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    inside = invoke(f"file://{bucket}", "dashboard", "--export", str(bucket / "site"))
    assert inside.returncode == 100 and "inside the bucket" in inside.stderr
    assert not (bucket / "site").exists()
    bad = invoke(f"file://{bucket}", "dashboard", "--limit", "0")
    assert bad.returncode == 100 and "invalid --limit 0" in bad.stderr
