"""The commands of issue 18 as a user runs them, through `invoke` in a subprocess, on the local
profile (real engine, registry, baked image, agent): release ends with its summary, releases
and images with headers and --format json, the dry runs (nothing written, pushed or created),
logs --follow (Ctrl-C stops following, never the run), runs.download, runs.cost, jobs,
doctor, and the run-end webhook (a receiver on 127.0.0.1; a failing webhook never changes
the exit code)."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.request
import uuid

import pytest

from mlbatch.core import labels, runs
from mlbatch.core.bucket import open_bucket
from mlbatch.core.manifest import load
from mlbatch.local.infra import docker_client
from tests.conftest import make_settings, unique_version
from tests.integration.helpers import INVOKE, ROOT, cli_env, invoke, snapshot
from tests.support.loopback import JsonServer

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.usefixtures("infra")]  # a release first: minutes


@pytest.fixture(scope="module")
def released(infra, tmp_path_factory):
    """`invoke release` into a bucket of its own: (bucket, version, what it printed)."""
    bucket = f"file://{tmp_path_factory.mktemp('cli-bucket')}"
    version = unique_version("v0")
    result = invoke(bucket, "release", "--version", version, timeout=1800)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
    return bucket, version, result.stdout


def ours() -> set[str]:
    """This checkout's mlbatch containers (other checkouts may share the engine)."""
    state_dir = make_settings("file:///unused").state_dir
    return {
        c.id
        for c in docker_client().containers.list(
            all=True, ignore_removed=True, filters={"label": labels.checkout_filter(state_dir)}
        )
    }


def registry_tags(repository: str) -> list[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:5000/v2/{repository}/tags/list", timeout=10) as response:
        return json.load(response).get("tags") or []


def run_ids(bucket: str, job: str) -> list[str]:
    return runs.list_run_ids(open_bucket(bucket), job)


def test_release_ends_with_its_summary_and_the_listings_have_headers(released):
    bucket, version, printed = released
    assert printed.rstrip().splitlines()[-1].startswith("└"), "the steps' summary is the last thing printed"
    assert '"containers"' not in printed, "no manifest after the summary"
    listing = invoke(bucket, "releases", width=200)
    assert listing.stdout.splitlines()[0].split() == ["VERSION", "CREATED", "GIT", "VM", "IMAGE", "JOBS"]
    assert version in listing.stdout
    narrow = invoke(bucket, "releases").stdout  # 80 columns, as in CI logs and Rundeck's output
    assert max(len(line) for line in narrow.splitlines()) <= 80 and version in narrow
    assert "(not shown at 80 columns: GIT" in narrow
    rows = json.loads(invoke(bucket, "releases", "--format", "json").stdout)
    assert [r["version"] for r in rows] == [version]
    shown = json.loads(invoke(bucket, "releases.show", version, "-p", "local", "--format", "json").stdout)
    assert shown == json.loads(load(open_bucket(bucket), version).to_json())
    assert "container trainer" in invoke(bucket, "releases.show", version).stdout
    images = invoke(bucket, "images", width=200)
    assert images.stdout.splitlines()[0].split() == ["IMAGE", "STATUS", "CREATED", "RELEASES"]
    named = [r for r in json.loads(invoke(bucket, "images", "--format", "json").stdout) if version in r["releases"]]
    assert [r["name"] for r in named] == [shown["vm_image"]["name"]]


def test_release_dry_run_pushes_uploads_bakes_and_writes_nothing(released):
    bucket, _, _ = released
    other = unique_version("v0")
    before = (snapshot(bucket), registry_tags("trainer"), {i.id for i in docker_client().images.list()})
    plan = invoke(bucket, "release", "--version", other, "--dry-run", "--format", "json")
    assert plan.returncode == 0, plan.stderr
    data = json.loads(plan.stdout[plan.stdout.index("{") :])
    assert data["version"] == other and data["vm_image"]["reuse"], "the image with the same inputs would be reused"
    assert data["containers"] == [{"name": "trainer", "tag": f"127.0.0.1:5000/trainer:{other}"}]
    assert (snapshot(bucket), registry_tags("trainer"), {i.id for i in docker_client().images.list()}) == before
    assert other not in before[1]


def test_run_batch_dry_run_prints_the_plan_and_starts_nothing(released):
    bucket, version, _ = released
    before = (snapshot(bucket), ours())
    result = invoke(bucket, "run-batch", "-j", "sleep", "-v", version, "--param", "seconds=2", "--dry-run", "--format", "json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    manifest = load(open_bucket(bucket), version)
    assert (plan["release"], plan["params"], plan["argv"]) == (version, {"seconds": 2, "message": "tick"}, [
        "python", "sleep.py", "--seconds=2", "--message=tick"
    ])  # fmt: skip
    body = plan["instance"]["body"]
    assert body["docker_run"]["image"] == manifest.vm_image.ref and body["instance_file"]["spec"]["argv"] == plan["argv"]
    sweep = invoke(bucket, "run-batch", "-j", "sleep", "-v", version, "--sweep", "seconds=1,2", "--dry-run")
    assert sweep.returncode == 0 and "task 1     python sleep.py --seconds=2" in sweep.stdout, sweep.stdout
    refused = invoke(bucket, "run-batch", "-j", "sleep", "-v", version, "--param", "seconds=x", "--dry-run")
    assert refused.returncode == 100 and "invalid param seconds='x'" in refused.stderr
    assert (snapshot(bucket), ours()) == before


def test_logs_follow_stops_on_ctrl_c_and_the_run_goes_on(released):
    bucket, version, _ = released
    started = invoke(bucket, "run-batch", "--job", "sleep", "--version", version, "--param", "seconds=6", "--detach")
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip().splitlines()[-1]
    follow = subprocess.Popen(
        [INVOKE, "logs", run_id, "--follow"], cwd=ROOT, env=cli_env(bucket), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert follow.stdout is not None
    seen = b""
    while b"tick 1/6" not in seen:  # the job's output, as it is written
        line = follow.stdout.readline()
        assert line, f"the log ended before the job printed: {seen!r}"
        seen += line
    follow.send_signal(signal.SIGINT)
    _, err = follow.communicate(timeout=120)
    assert follow.returncode == 0, err
    assert b"stopped following" in err and b"the run goes on" in err
    # followed again to its end: it ran through, never cancelled
    again = invoke(bucket, "logs", run_id, "-f", timeout=300)
    assert again.returncode == 0, again.stderr
    assert "tick 6/6" in again.stdout and f"run {run_id} ended: succeeded (exit code 0)" in again.stderr
    result = runs.read_result(open_bucket(bucket), run_id)
    assert result is not None and (result.status, result.attempt) == ("succeeded", 1)
    assert again.stdout.startswith("===== attempt 1 =====\n"), "a file or pipe gets the log as `invoke logs` writes it"


def test_runs_download_and_runs_cost(released, tmp_path):
    bucket, version, _ = released
    assert invoke(bucket, "run-batch", "-j", "sleep", "-v", version, "--param", "seconds=1").returncode == 0
    run_id = run_ids(bucket, "sleep")[-1]
    got = invoke(bucket, "runs.download", run_id, "--to", str(tmp_path / "one"))
    assert got.returncode == 0, got.stderr
    stored = open_bucket(bucket).read(f"{runs.results_prefix(run_id, 1)}/metrics.json")
    assert (tmp_path / "one" / "metrics.json").read_bytes() == stored
    sweep = invoke(bucket, "run-batch", "-j", "sleep", "-v", version, "--sweep", "seconds=1,2")
    assert sweep.returncode == 0, sweep.stdout + sweep.stderr
    sweep_id = run_ids(bucket, "sleep")[-1]
    assert invoke(bucket, "runs.download", sweep_id, "--to", str(tmp_path / "sweep")).returncode == 0
    assert json.loads((tmp_path / "sweep" / "tasks" / "1" / "metrics.json").read_text()) == {"ticks": 2}
    missing = invoke(bucket, "runs.download", "sleep-20200101-000000-none")
    assert missing.returncode == 101 and "does not exist" in missing.stderr
    report = json.loads(invoke(bucket, "runs.cost", "--since", "1h", "--format", "json").stdout)
    sleep = [r for r in report["rows"] if r["job"] == "sleep"]
    assert sleep and sleep[0]["machine_type"] == "e2-small" and sleep[0]["spot"] is True
    assert 0 < sleep[0]["cost_usd"] < sleep[0]["on_demand_usd"], "Spot costs less than the same hours on-demand"
    table = invoke(bucket, "runs.cost", "--since", "1h", width=200).stdout
    assert table.splitlines()[0].split() == ["JOB", "MACHINE", "VM", "RUNS", "HOURS", "COST", "ON-DEMAND"]


def test_jobs_of_a_release_and_of_the_checkout(released):
    bucket, version, _ = released
    listed = json.loads(invoke(bucket, "jobs", "--version", version, "--format", "json").stdout)
    assert [j["name"] for j in listed] == list(load(open_bucket(bucket), version).jobs)
    table = invoke(bucket, "jobs", width=200).stdout.splitlines()
    assert table[0].split()[:3] == ["JOB", "CONTAINER", "MACHINE"] and any(r.startswith("train-digits ") for r in table)
    narrow = invoke(bucket, "jobs").stdout.splitlines()
    assert narrow[0].split()[:2] == ["JOB", "MACHINE"] and max(len(line) for line in narrow) <= 80


def test_doctor_on_the_local_profile(released, tmp_path):
    bucket, _, _ = released
    ready = invoke(bucket, "doctor")
    assert ready.returncode == 0, ready.stdout + ready.stderr
    assert [line.split()[0] for line in ready.stdout.splitlines()[1:6]] == ["engine", "registry", "bucket", "base", "packer"]
    assert "profile local: ready" in ready.stdout
    env = {**cli_env(f"file://{tmp_path / 'no-such-folder'}"), "INVOKE_MLBATCH_PROFILES_LOCAL_REGISTRY": "127.0.0.1:1"}
    gaps = subprocess.run([INVOKE, "doctor", "--format", "json"], cwd=ROOT, env=env, capture_output=True, text=True)
    found = {c["name"]: c for c in json.loads(gaps.stdout)["checks"]}
    assert (found["registry"]["exit_code"], found["bucket"]["exit_code"], found["engine"]["exit_code"]) == (110, 101, 0)
    assert gaps.returncode == 110, "the worst gap: a service that does not answer (110) over a missing folder (101)"


class Webhook:
    """A chat webhook on loopback answering `status`; records each POST's JSON."""

    def __init__(self, status: int = 200):
        self.posts: list[dict] = []
        self.secret = uuid.uuid4().hex  # what a chat webhook's path carries

        def respond(verb, path, headers, body):
            self.posts.append({"path": path, "json": json.loads(body)})
            return status, {"ok": status == 200}

        self.server = JsonServer(respond)
        self.url = f"{self.server.url}/hooks/{self.secret}"

    def __enter__(self) -> Webhook:
        self.server.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop()


def notified(bucket: str, url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**cli_env(bucket), "INVOKE_MLBATCH_PROFILES_LOCAL_NOTIFY_WEBHOOK": url}
    return subprocess.run([INVOKE, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_a_run_and_a_sweep_notify_the_webhook_when_they_end(released):
    bucket, version, _ = released
    with Webhook() as hook:
        done = notified(bucket, hook.url, "run-batch", "-j", "sleep", "-v", version, "--param", "seconds=1")
        assert done.returncode == 0, done.stderr
        swept = notified(bucket, hook.url, "run-batch", "-j", "sleep", "-v", version, "--sweep", "seconds=1,2")
        assert swept.returncode == 0, swept.stderr
    run, sweep = (post["json"] for post in hook.posts)
    assert hook.posts[0]["path"] == f"/hooks/{hook.secret}"
    assert (run["event"], run["status"], run["exit_code"], run["job"], run["version"]) == (
        "mlbatch.run.ended", "succeeded", 0, "sleep", version
    )  # fmt: skip
    assert run["run_id"] == run_ids(bucket, "sleep")[-2] and run["results"].endswith("/results")
    assert (sweep["event"], sweep["tasks"], sweep["succeeded"]) == ("mlbatch.sweep.ended", 2, 2)
    assert sweep["best"] == {"task": 1, "params": {"seconds": 2, "message": "tick"}, "ticks": 2}
    assert hook.secret not in done.stdout + done.stderr, "the webhook URL is a secret"


def test_a_failing_webhook_never_changes_the_exit_code(released):
    bucket, version, _ = released
    with Webhook(status=500) as hook:
        failed = notified(bucket, hook.url, "run-batch", "-j", "fail-on-purpose", "-v", version, "--param", "exit_code=3")
    assert failed.returncode == 3, "the job's own code, whatever the webhook said"
    assert len(hook.posts) == 3, "a 5xx is tried again, three times in all"
    assert "notification not sent (webhook: the webhook answered HTTP 500); the run's exit code is unchanged" in failed.stdout
    assert hook.secret not in failed.stdout + failed.stderr
    closed = notified(bucket, "http://127.0.0.1:1/hooks/x", "run-batch", "-j", "sleep", "-v", version, "--param", "seconds=1")
    assert closed.returncode == 0 and "the webhook was not reached" in closed.stdout, closed.stdout
