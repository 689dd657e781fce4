"""The whole gcp release, end to end: `invoke release --profile test` against the emulators.

Preflight (fakes of Service Usage and Resource Manager) -> containers pushed to the
authenticating registry with the ADC token from the loopback token endpoint -> code bundle to
fake-gcs-server -> a fresh bake by Packer 1.6.6's googlecompute builder against the fake
Compute API (through the intercepting proxy) into the candidate family -> the image suite,
`vm` checks included, on a temporary VM over ssh -> promotion into the served family -> the
manifest pinning the image by self link. A second release of another version with the same
inputs reuses that image. The image-test VM has no service account (its metadata server gives
no token), so an agent that started there would power it off: the release passes only because
the agent unit stays off on a VM without a run spec. Then runs on the baked image: single runs
on the fake Compute API, and a sweep on the fake Cloud Batch API whose task VMs boot the image
(its units run there, the agent's stays off) and run the agent as Batch's runnable.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time

import pytest

from mlbatch.core import manifest as manifests
from mlbatch.core import runs, sweeps
from mlbatch.core.bucket import open_bucket
from mlbatch.core.errors import ExitCode
from mlbatch.providers.batch import job_id
from mlbatch.release import bake, gce_image
from tests.conftest import ROOT, repo_config, unique_version
from tests.support.fake_batch import FakeBatch
from tests.support.gcp_world import PROJECT, gcp_world
from tests.support.gcs import create_bucket
from tests.support.packer_edges import add_debian_cloud, packer_edges

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.usefixtures("infra")]
SERVED = f"https://www.googleapis.com/compute/v1/projects/{PROJECT}/global/images/"


@pytest.fixture(scope="module")
def cloud(infra, gcs_emulator, tmp_path_factory):
    with gcp_world(gcs_emulator, tmp_path_factory.mktemp("adc")) as world:
        add_debian_cloud(world.compute)
        with packer_edges(world.compute, world.oauth, world.key_file) as proxy:
            yield world, proxy


def pulled_repositories(docker_ref: str) -> str:
    """The guest engine's repositories.json inside the image behind a fake GCE image."""
    result = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "sh", docker_ref, "-c", "cat /var/lib/docker/image/*/repositories.json"],
        capture_output=True,
        text=True,
    )
    return result.stdout


@pytest.fixture(scope="module")
def bucket(cloud) -> str:
    """The releases' bucket, shared by the tests of this module."""
    name = f"mlbatch-e2e-{secrets.token_hex(4)}"
    create_bucket(name)
    return f"gs://{name}"


@pytest.fixture(scope="module")
def first_release(cloud, bucket) -> str:
    """The first release into the bucket (a fresh bake), made once for the tests that need it,
    whichever of them runs first or alone."""
    world, _ = cloud
    first = unique_version("v0.0.1-e2e")
    started = time.monotonic()
    result = world.cli(bucket, "release", "--version", first, timeout=3600)
    print(f"\nfirst release took {time.monotonic() - started:.0f}s")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    print(result.stdout[-3000:])
    return first


def test_release_bakes_tests_promotes_and_the_next_release_reuses_the_image(cloud, bucket, first_release):
    world, proxy = cloud
    fake = world.compute
    first = first_release

    manifest = manifests.load(open_bucket(bucket), first)
    image = manifest.vm_image
    assert image.ref.startswith(SERVED) and image.ref == fake.images[image.name]["selfLink"]
    assert fake.images[image.name]["family"] == "mlbatch" and fake.images[image.name]["status"] == "READY"
    source = gce_image.bake_source(world.settings(bucket))  # the release hashed the source image it baked from
    assert image.input_hash == bake.input_hash(ROOT, source) and image.baked_by_version == first
    assert len(image.agent_wheel_sha256) == 64  # the manifest names the wheel the image test found installed
    assert [n for n, i in fake.images.items() if i.get("family") == "mlbatch-candidate"] == []
    assert fake.instances == {} and fake.disks == {}, "the build VM, the test VM and their disks are gone"
    # Packer's calls went through the proxy with the token google-auth got from the token endpoint.
    # Packer starts from exactly the image the input hash names (images.get by name, not the family).
    exact = f"/projects/debian-cloud/global/images/{source.image.rsplit('/', 1)[-1]}"
    assert any(exact in e["request"] for e in proxy.exchanges())
    assert world.oauth.grants
    repaired = [e["repaired"] for e in proxy.exchanges() if "repaired" in e]
    print("REPLACED: the proxy repaired Packer's sourceDisk URL (Debian's Packer 1.6.6 build, see intercept.py):", repaired)
    # The release's containers, pinned by digest in the manifest, are pre-pulled in the image.
    assert manifest.containers
    pulled = pulled_repositories(fake.images[image.name]["_docker_ref"])
    for container in manifest.containers.values():
        assert container.repository.startswith(world.registry)
        assert container.ref in pulled, (container.ref, pulled[:2000])
    # The image suite ran on a temporary VM of the fake (created from the candidate, then deleted),
    # a VM without a service account: nothing on it has a token (the agent unit stayed off).
    inserts = [b for m, p, b in fake.requests if m == "POST" and p.endswith("/instances")]
    tested = [b for b in inserts if b["name"].startswith("mlb-imagetest-")]
    assert len(tested) == 1 and "serviceAccounts" not in tested[0]

    second = unique_version("v0.0.2-e2e")
    started = time.monotonic()
    again = world.cli(bucket, "release", "--version", second, timeout=3600)
    print(f"second release took {time.monotonic() - started:.0f}s")
    assert again.returncode == 0, again.stdout[-6000:] + again.stderr[-6000:]
    reused = manifests.load(open_bucket(bucket), second).vm_image
    assert reused.ref == image.ref and reused.baked_by_version == first
    baked = [b for m, p, b in fake.requests if m == "POST" and p.endswith("/instances") and b["name"].startswith("packer-")]
    assert len(baked) == 1, "the second release did not bake"
    assert [n for n, i in fake.images.items() if i.get("family") in ("mlbatch", "mlbatch-candidate")] == [image.name]
    assert fake.instances == {} and fake.disks == {}


def test_run_batch_boots_the_baked_image_and_runs_the_job_with_the_prepulled_container(cloud, bucket, first_release):
    """On the first release's image: the fake boots the baked guest image, systemd starts the agent
    unit, which runs the job through the guest's Docker engine with the pre-pulled container."""
    world, _ = cloud
    started = time.monotonic()
    result = world.cli(bucket, "run-batch", "--job", "sleep", "--version", first_release, "--param", "seconds=3", timeout=1200)
    print(f"\nrun-batch took {time.monotonic() - started:.0f}s")
    print(result.stdout[-4000:])
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    assert "tick" in result.stdout, "the job's output came back over the serial console"
    assert "is pre-pulled in the image: no pull" in result.stdout
    assert world.compute.instances == {}, "the VM deleted itself / was deleted"

    # The headline job: train-digits (scikit-learn in the pre-pulled trainer container) on the baked image.
    result = world.cli(
        bucket, "run-batch", "--job", "train-digits", "--version", first_release, "--param", "n_estimators=10", timeout=1200
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    run_id = result.stdout.split("run ", 1)[1].split(":")[0]
    store = open_bucket(bucket)
    metrics = json.loads(store.read(f"{runs.results_of(store, runs.read_result(store, run_id))}/metrics.json"))
    assert metrics["n_estimators"] == 10 and metrics["accuracy"] > 0.8, metrics
    assert world.compute.instances == {}, "the VM deleted itself / was deleted"


@pytest.fixture(scope="module")
def batch(cloud, gcs_emulator):
    """The fake Cloud Batch API of the same project; the runner may report to it (README)."""
    fake = FakeBatch(PROJECT, storage_emulator=gcs_emulator).start()
    fake.grant_runner(repo_config()["profiles"]["test"]["service_account"])
    yield fake
    fake.stop()
    assert fake.running_containers() == []


def test_a_sweep_on_batch_boots_the_baked_image_and_runs_the_agent_only_as_the_runnable(cloud, bucket, batch, monkeypatch):
    """After the releases above: each task VM boots the baked guest image (systemd, the image's
    units: the agent unit's condition keeps it off, as the VM carries no run spec), then Batch
    runs the agent as the task's runnable. Task 1's Spot VM is preempted once: its agent records
    the preemption and Batch retries the task."""
    world, _ = cloud
    version = manifests.list_versions(open_bucket(bucket))[0]
    image = manifests.load(open_bucket(bucket), version).vm_image
    batch.add_image(image.name, world.compute.images[image.name]["_docker_ref"])  # the project's images, as Batch sees them
    batch.faults.preempt_tasks = {1: 8.0}
    monkeypatch.setenv("INVOKE_MLBATCH_PROFILES_TEST_BATCH_ENDPOINT", batch.endpoint)
    started = time.monotonic()
    result = world.cli(bucket, "run-batch", "--job", "sleep", "--version", version, "--sweep", "seconds=2,20", timeout=1800)
    print(f"\nthe sweep took {time.monotonic() - started:.0f}s")
    print(result.stdout[-3000:])
    run_id = result.stdout.split("sweep ", 1)[1].split(":", 1)[0]
    job = batch.find(job_id(run_id))
    assert job is not None, result.stdout[-6000:] + result.stderr[-6000:]
    what_batch_saw = [(t.events[-3:], [o[-1500:] for o in t.outputs]) for t in job.tasks]
    assert result.returncode == 0, (result.stdout[-4000:], what_batch_saw)
    assert [t.state for t in job.tasks] == ["SUCCEEDED", "SUCCEEDED"]
    executions = [e["taskExecution"]["exitCode"] for e in job.tasks[1].events if "taskExecution" in e]
    assert executions == [ExitCode.PREEMPTED, 0], (executions, job.tasks[1].outputs)
    assert len(job.consoles) == 3, "a VM per task attempt"
    for vm, console in job.consoles.items():
        assert "not a run VM, the agent does not start" in console, (vm, console[-3000:])
        assert runs.AGENT_FAILED_MARKER not in console, (vm, console[-3000:])
    record = runs.read_json(open_bucket(bucket), sweeps.sweep_key(run_id))
    assert [(t["status"], t["attempts"]) for t in record["tasks"]] == [("succeeded", 1), ("succeeded", 2)]
    assert [t["metrics"]["ticks"] for t in record["tasks"]] == [2, 20]
