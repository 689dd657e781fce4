"""One pass of a new user's first day on a real project, in order (see conftest.py for how to run it).

What no fake can show: Google's own answers to our preflight, a Packer bake with HashiCorp's
Packer and plugins, the image booting on Compute Engine with the agent, a job container kept off
the VM's metadata server by the agent's DOCKER-USER rule and given a token downscoped by the real
Security Token Service (tests here run jobs on the local profile only), a real Spot preemption
(Compute Engine's simulated maintenance event, the documented way to preempt a Spot VM on
purpose: https://cloud.google.com/compute/docs/instances/simulating-host-maintenance), a Cloud
Batch job of the baked image, and that nothing billable is left behind.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time

import pytest

from mlbatch.core import runs
from mlbatch.core.bucket import open_bucket
from mlbatch.core.names import MANAGED_LABEL_KEY, MANAGED_LABEL_VALUE
from tests.live.conftest import cli

RUN_ID = re.compile(r"\b((?:sleep|fail-on-purpose|probe-credentials-gcs)-\d{8}-\d{6}-[a-z0-9]{4})\b")
STARTED: list[str] = []  # run ids of this pass, for the cleanup check
LEFTOVER_PREFIXES = ("mlb-imagetest-", "packer-")  # the image-test VM, Packer's build VM


@pytest.fixture(scope="module")
def version() -> str:
    """A pre-release, so `--version latest` of real schedules never picks it."""
    return f"v0.0.0-live.{int(dt.datetime.now(dt.UTC).timestamp() * 1000)}"


@pytest.fixture(scope="module")
def released(live, version) -> str:
    done = cli("release", "--version", version, timeout=7200)
    assert done.returncode == 0, "the release failed: see its output above"
    return version


def run_id_of(text: str) -> str:
    found = RUN_ID.findall(text)
    assert found, text[-2000:]
    STARTED.append(found[-1])
    return found[-1]


def test_preflight_of_the_release_and_of_runs(live):
    """Google's answers to what the preflights ask: APIs, permissions, the runner account, the subnet."""
    from mlbatch.providers.gce import GceProvider
    from mlbatch.release.targets.gcp import GcpTarget

    GcpTarget(live).preflight()
    GceProvider(live).preflight()


def test_a_release_bakes_tests_and_promotes_an_image(live, released):
    from mlbatch.core import manifest as manifests

    manifest = manifests.load(open_bucket(live.bucket), released)
    assert manifest.vm_image.ref.startswith(f"https://www.googleapis.com/compute/v1/projects/{live.project}/global/images/")
    assert all(c.digest.startswith("sha256:") for c in manifest.containers.values())


def test_a_failing_job_exits_with_its_own_code(released):
    done = cli("run-batch", "--job", "fail-on-purpose", "--version", released, "--param", "exit_code=7")
    run_id_of(done.stdout)
    assert done.returncode == 7


def test_a_job_runs_and_its_output_comes_back(released):
    done = cli("run-batch", "--job", "sleep", "--version", released, "--param", "seconds=5")
    run_id_of(done.stdout)
    assert done.returncode == 0 and "tick 5/5" in done.stdout


def test_a_job_with_google_access_gets_its_own_token_and_not_the_vms(live, released):
    """On a VM a job with google_access runs on the jobs bridge behind the DOCKER-USER rule and
    gets the agent's downscoped token (docs/architecture.md, "Jobs and the VM's credentials")."""
    from mlbatch.core import manifest as manifests
    from mlbatch.core.access import split_bucket

    name, prefix = split_bucket(live.bucket)
    manifest = prefix + manifests.manifest_key(released)
    scratch = prefix + "runs/JOB/RUN/scratch/out.txt"
    done = cli(
        "run-batch", "--job", "probe-credentials-gcs", "--version", released,
        "--param", "metadata=169.254.169.254", "--param", f"bucket={name}",
        "--param", f"read={manifest}", "--param", f"write={scratch},{manifest}",
    )  # fmt: skip
    run_id = run_id_of(done.stdout)
    assert done.returncode == 0
    found = json.loads(open_bucket(live.bucket).read(f"{runs.results_prefix(run_id)}/probe.json"))
    assert found["metadata"]["GCE_METADATA_HOST"] == "token", found  # the agent's server: the downscoped token
    assert found["metadata"]["given"] != "token", found  # the VM's metadata server: rejected
    assert found["read"] == {manifest: 403} and found["write"] == {scratch: 200, manifest: 403}, found


def test_a_preempted_spot_run_is_retried(live, released):
    from google.cloud import compute_v1

    done = cli("run-batch", "--detach", "--job", "sleep", "--version", released, "--param", "seconds=240")
    assert done.returncode == 0
    run_id = run_id_of(done.stdout.strip().splitlines()[-1])
    bucket = open_bucket(live.bucket)
    record = runs.read_instance(bucket, run_id, 1)
    assert record is not None, "detach records the instance and its zone"
    instances = compute_v1.InstancesClient()
    deadline = time.monotonic() + 600
    while instances.get(project=live.project, zone=record.zone, instance=record.instance).status != "RUNNING":
        assert time.monotonic() < deadline, "the Spot VM never ran"
        time.sleep(5)
    key = runs.attempt_key(run_id, 1, runs.ATTEMPT_LOG)
    while not (bucket.exists(key) and b"tick 1/" in bucket.read(key)):  # the job runs: preempt it mid-way
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(5)
    instances.simulate_maintenance_event(project=live.project, zone=record.zone, instance=record.instance).result(timeout=600)

    waited = cli("runs.wait", run_id, timeout=3600)
    assert waited.returncode == 0, "retried on a new VM after the preemption"
    shown = json.loads(cli("runs.show", run_id, "--json").stdout)
    assert [a["status"] for a in shown["attempts"]] == ["preempted", "succeeded"], shown["attempts"]


def test_a_two_task_sweep_runs_as_one_batch_job(live, released):
    done = cli("run-batch", "--job", "sleep", "--version", released, "--sweep", "seconds=3,6", timeout=3600)
    run_id = run_id_of(done.stdout)
    assert done.returncode == 0
    result = runs.read_result(open_bucket(live.bucket), run_id)
    assert result is not None and result.status == "succeeded", result


def test_nothing_billable_is_left(live, released):
    """No instance of this pass's runs (nor an image-test or bake VM), no candidate image of this release."""
    from google.cloud import compute_v1

    left = []
    for _, scoped in compute_v1.InstancesClient().aggregated_list(request={"project": live.project}):
        for instance in scoped.instances:
            managed = instance.labels.get(MANAGED_LABEL_KEY) == MANAGED_LABEL_VALUE
            if (managed and any(run in instance.name for run in STARTED)) or instance.name.startswith(LEFTOVER_PREFIXES):
                left.append(instance.name)
    assert left == [], f"instances left: {left}"
    label = released.lower().replace(".", "-")
    images = compute_v1.ImagesClient().list(request={"project": live.project, "filter": f'labels.version = "{label}"'})
    candidates = [i.name for i in images if i.family.endswith("-candidate")]
    assert candidates == [], f"candidate images left: {candidates}"
