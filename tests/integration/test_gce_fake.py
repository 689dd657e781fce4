"""The gce provider end to end against the fake Compute API (strict, with fault injection),
fake-gcs-server as the bucket, and instances backed by containers running the real agent."""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
import time
import urllib.error
import urllib.request

import pytest
from google.cloud import compute_v1

from mlbatch.core import manifest as manifests
from mlbatch.core import runs
from mlbatch.core.bucket import open_bucket
from mlbatch.core.errors import ExitCode, MlbatchError
from mlbatch.core.names import LABEL_KEY, LABEL_VALUE
from mlbatch.providers.gce import GceProvider
from mlbatch.run.controller import Controller, RunRequest
from mlbatch.run.deadlines import Margins
from mlbatch.run.records import collect_garbage, read_logs
from tests.integration.helpers import release_for_test_profile, run_batch_on_test_profile, settings_for_test_profile, wait_for
from tests.support.fake_compute import FakeCompute, Faults

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.usefixtures("infra")]  # a release first: minutes
PROJECT = "mlbatch-test"


def gce_settings(bucket: str, endpoint: str):
    return settings_for_test_profile(bucket, compute_endpoint=endpoint)


@pytest.fixture(scope="module")
def world(infra, gcs_emulator):
    """A release as the gcp profile writes it (VM image by self link) in fake-gcs, and the fake API."""
    fake = FakeCompute(PROJECT, storage_emulator=gcs_emulator).start()
    bucket, version = release_for_test_profile("gce", fake)
    settings = gce_settings(bucket, fake.endpoint)
    fake.ready_for_runs(settings.region, settings.network, settings.service_account)
    yield settings, version, fake
    fake.stop()


@pytest.fixture
def fake(world):
    world[2].faults = Faults()
    yield world[2]
    world[2].faults = Faults()
    world[2].denied_permissions.clear()


def run(world, job="sleep", params=("seconds=2",), lines=None, **kwargs):
    settings, version, _ = world
    provider = GceProvider(settings)
    provider.serial_poll = 0.2
    say = lines.append if lines is not None else lambda line: None
    return Controller(open_bucket(settings.bucket), provider, say, say).run(RunRequest(job, version, params=params, **kwargs))


def cli(world, *args, **popen):
    settings, _, fake = world
    return run_batch_on_test_profile({"bucket": settings.bucket, "compute_endpoint": fake.endpoint}, *args, **popen)


def test_train_digits_end_to_end_through_the_cli(world, fake):
    proc = cli(world, "--job", "train-digits", "--version", world[1], "--param", "n_estimators=10")
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    assert "metrics:" in output, "the job's output came back over the serial console"
    assert fake.inserts_performed >= 1 and not fake.instances, "the VM deleted itself / was deleted"
    bucket = open_bucket(world[0].bucket)
    run_id = output.split("run ", 1)[1].split(":")[0]
    metrics = json.loads(bucket.read(f"{runs.results_of(bucket, runs.read_result(bucket, run_id))}/metrics.json"))
    assert metrics["n_estimators"] == 10


def test_insert_body_policy(world, fake):
    before = len(fake.insert_bodies())
    assert run(world).exit_code == 0
    body = fake.insert_bodies()[before]
    iface = body["networkInterfaces"][0]
    assert "accessConfigs" not in iface, "no external IP by default"
    assert body["shieldedInstanceConfig"] == {"enableSecureBoot": True, "enableVtpm": True, "enableIntegrityMonitoring": True}
    assert body["serviceAccounts"] == [
        {"email": world[0].service_account, "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}
    ]
    metadata = {i["key"]: i["value"] for i in body["metadata"]["items"]}
    assert metadata["block-project-ssh-keys"] == "true" and metadata["enable-oslogin"] == "TRUE"
    blob = json.dumps(body).lower()
    for secret in ("password", "private_key", "begin rsa", "begin private", "access_token", "secret"):
        assert secret not in blob
    labels = body["labels"]
    assert labels["managed-by"] == "mlbatch" and {"job", "run-id", "version", "expiry"} <= set(labels)
    assert all(LABEL_KEY.fullmatch(k) and LABEL_VALUE.fullmatch(v) for k, v in labels.items())
    scheduling = body["scheduling"]
    assert scheduling["provisioningModel"] == "SPOT" and scheduling["instanceTerminationAction"] == "DELETE"
    assert int(scheduling["maxRunDuration"]["seconds"]) > 600 and scheduling["automaticRestart"] is False
    assert body["disks"][0]["initializeParams"]["sourceImage"] == next(iter(fake.images.values()))["selfLink"]


def test_preemption_then_success_on_attempt_two(world, fake):
    fake.faults.preempt_attempts = {1: 4.0}
    outcome = run(world, params=("seconds=6",))
    assert outcome.exit_code == 0 and outcome.result["attempt"] == 2
    bucket = open_bucket(world[0].bucket)
    first = runs.read_json(bucket, runs.attempt_key(outcome.run_id, 1, "attempt.json"))
    assert first["status"] == "preempted"
    preempted = [op for op in fake.operations.values() if op["operationType"] == "compute.instances.preempted"]
    assert preempted and preempted[-1]["targetLink"].endswith(f"mlb-{outcome.run_id}-1")
    assert "===== attempt 2 =====" in read_logs(bucket, outcome.run_id)


def test_on_demand_after_k_preemptions(world, fake):
    """A release whose sleep job falls back to on-demand after one preemption."""
    settings, version, _ = world
    bucket = open_bucket(settings.bucket)
    spot = manifests.load(bucket, version)
    fallback = dataclasses.replace(
        spot,
        version=version + ".ondemand",
        jobs={**spot.jobs, "sleep": dataclasses.replace(spot.jobs["sleep"], on_demand_after_preemptions=1)},
    )
    manifests.publish(bucket, fallback)
    fake.faults.preempt_attempts = {1: 3.0, 2: 3.0}
    before = len(fake.insert_bodies())
    outcome = run((settings, fallback.version, fake), params=("seconds=5",))
    assert outcome.exit_code == 0 and outcome.result["attempt"] == 2
    models = [b["scheduling"]["provisioningModel"] for b in fake.insert_bodies()[before:]]
    assert models == ["SPOT", "STANDARD"]


def test_preempted_beyond_retries_gives_its_exit_code(world, fake):
    fake.faults.preempt_attempts = {1: 3.0, 2: 3.0}
    outcome = run(world, params=("seconds=30",))
    assert outcome.exit_code == ExitCode.PREEMPTED and outcome.result["status"] == "preempted"
    assert not fake.instances


def test_stockout_in_zone_a_then_zone_b(world, fake):
    zone_a, zone_b = world[0].zones[:2]
    fake.faults.stockout_zones = {zone_a}
    start = len(fake.requests)
    lines: list[str] = []
    assert run(world, lines=lines).exit_code == 0
    inserts = [p for m, p, _ in fake.requests[start:] if m == "POST" and p.endswith("/instances")]
    assert [p.split("/zones/")[1].split("/")[0] for p in inserts] == [zone_a, zone_b]
    assert any(f"no capacity in {zone_a}" in line for line in lines)


def test_no_capacity_anywhere(world, fake):
    fake.faults.stockout_zones = set(world[0].zones)
    outcome = run(world)
    assert outcome.exit_code == ExitCode.NO_CAPACITY and "ZONE_RESOURCE_POOL_EXHAUSTED" in outcome.result["message"]


def test_quota_error_gives_its_exit_code(world, fake):
    fake.faults.quota_exceeded = True
    outcome = run(world)
    assert outcome.exit_code == ExitCode.QUOTA_EXCEEDED and "Quota 'CPUS' exceeded" in outcome.result["message"]
    assert not fake.instances


def test_permission_denied_is_not_retried_and_names_what_is_missing(world, fake):
    fake.faults.forbidden = True
    start = len(fake.requests)
    outcome = run(world)
    assert outcome.exit_code == ExitCode.PERMISSION_DENIED and "compute.instances.insert" in outcome.result["message"]
    assert sum(1 for m, p, _ in fake.requests[start:] if m == "POST" and p.endswith("/instances")) == 1


def test_a_missing_image_is_reported_by_name(world, fake):
    name, image = next(iter(fake.images.items()))
    del fake.images[name]
    try:
        outcome = run(world)
    finally:
        fake.images[name] = image
    assert outcome.exit_code == ExitCode.NOT_FOUND and f"global/images/{name}" in outcome.result["message"]


def test_a_lost_insert_response_gives_exactly_one_instance(world, fake):
    fake.faults.lose_insert_responses = 1
    performed, start = fake.inserts_performed, len(fake.requests)
    assert run(world).exit_code == 0
    assert fake.inserts_performed - performed == 1
    insert_ids = [p for m, p, _ in fake.requests[start:] if m == "POST" and p.endswith("/instances")]
    assert len(insert_ids) == 2, "the insert was retried after its response was lost"


def test_503_and_429_bursts_are_survived(world, fake):
    fake.faults.http_burst = [503, 503, 429, 503, 500]
    assert run(world).exit_code == 0


def test_waits_that_return_early(world, fake):
    fake.faults.early_waits = 4
    assert run(world).exit_code == 0


def test_serial_buffer_rollover_is_reported(world, fake):
    fake.faults.serial_buffer_bytes = 200
    lines: list[str] = []
    outcome = run(world, params=("seconds=4", "message=" + "x" * 150), lines=lines)
    assert outcome.exit_code == 0
    assert any("serial console skipped" in line for line in lines)
    log = read_logs(open_bucket(world[0].bucket), outcome.run_id)
    assert all(f"{'x' * 150} {i}/4" in log for i in range(1, 5)), "the bucket log is complete"


def _killed_controller_instance(world):
    proc = cli(world, "--job", "sleep", "--version", world[1], "--param", "seconds=600")
    instance = wait_for(
        lambda: next((i for i in world[2].instances.values() if i.status == "RUNNING"), None), what="the instance"
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    time.sleep(1)
    assert world[2].find(instance.name) is not None, "SIGKILL gave the controller no chance to clean up"
    return instance


def test_killed_controller_leaves_an_instance_that_deletes_itself(world, fake):
    instance = _killed_controller_instance(world)
    fake.advance(Margins().instance_seconds(600))
    # The termination action gives the guest its shutdown window (the agent records, then exits).
    wait_for(lambda: fake.find(instance.name) is None, timeout=120, what="max_run_duration to delete the instance")


def test_gc_removes_expired_leftovers_and_nothing_else(world, fake):
    settings = world[0]
    provider = GceProvider(settings)
    leftover = _killed_controller_instance(world)
    image = next(iter(fake.images.values()))["selfLink"]
    body = compute_v1.Instance(
        name="someone-elses-vm",
        machine_type=f"zones/{settings.zones[0]}/machineTypes/e2-small",
        labels={"owner": "data-team"},
        disks=[compute_v1.AttachedDisk(boot=True, initialize_params=compute_v1.AttachedDiskInitializeParams(source_image=image))],
    )
    provider.instances.insert(project=PROJECT, zone=settings.zones[0], instance_resource=body)
    wait_for(lambda: fake.find("someone-elses-vm"), what="someone else's VM in the same project and zone")
    assert collect_garbage(provider, dry_run=False) == [], "nothing has expired yet"
    removed = collect_garbage(provider, dry_run=False, now=time.time() + Margins().instance_seconds(600) + 60)
    assert [name for name, _ in removed] == [leftover.name]
    assert fake.find(leftover.name) is None and fake.find("someone-elses-vm") is not None
    provider.delete("someone-elses-vm")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": "red"}, 'Unknown name "colour"'),
        ({"scheduling": {"provisioningModel": "CHEAP"}}, "expected one of"),
        ({"name": "Bad_Name"}, "does not match"),
        ({"labels": {"Owner": "x"}}, "Label keys and values"),
    ],
)
def test_the_fake_rejects_what_the_real_api_rejects(world, fake, change, message):
    image = next(iter(fake.images.values()))["selfLink"]
    body = {
        "name": "strict-check",
        "machineType": "zones/europe-west4-a/machineTypes/e2-small",
        "disks": [{"boot": True, "initializeParams": {"sourceImage": image}}],
        **change,
    }
    request = urllib.request.Request(
        f"{fake.endpoint}/compute/v1/projects/{PROJECT}/zones/europe-west4-a/instances",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 400 and message in json.loads(info.value.read())["error"]["message"]
    assert fake.find("strict-check") is None


# --- what real Compute Engine does to a run (issue 8) ------------------------------------------


def _run_in_thread(world, **kwargs):
    outcome: list = []
    thread = threading.Thread(target=lambda: outcome.append(run(world, **kwargs)), daemon=True)
    thread.start()
    return thread, outcome


def test_a_shutdown_that_is_not_a_preemption_is_not_retried(world, fake):
    """The max run duration (DELETE) shuts the VM down as a preemption would, but instance/preempted
    stays FALSE and no preemption operation is recorded: the attempt fails (110), no second attempt."""
    before = len(fake.insert_bodies())
    thread, outcome = _run_in_thread(world, params=("seconds=120",), timeout_seconds=120)
    instance = wait_for(lambda: next((i for i in fake.instances.values() if b" 1/120" in i.serial), None), what="the job")
    fake.advance(Margins().instance_seconds(120))
    thread.join(timeout=300)
    assert outcome, "the run ended"
    assert outcome[0].exit_code == ExitCode.INFRA_FAILED and outcome[0].result["attempt"] == 1
    assert "not a preemption" in outcome[0].result["message"]
    assert len(fake.insert_bodies()) - before == 1 and fake.find(instance.name) is None


def test_an_agent_that_fails_outside_the_job_ends_its_vm_and_says_why(world, fake):
    """A run spec the agent cannot read: the agent prints its marker, records the failure in the
    bucket from the run id and bucket the VM carries apart from the spec, and deletes its VM (a
    real VM keeps running when the agent exits); the controller reports 110 with the marker, at
    once. The record, not the console, carries it: a console read after the VM is gone finds
    nothing, and under load the controller's poll came too late (a race this replaced)."""
    fake.faults.corrupt_run_spec = True
    before = len(fake.insert_bodies())
    outcome = run(world, timeout_seconds=30)
    assert outcome.exit_code == ExitCode.INFRA_FAILED and runs.AGENT_FAILED_MARKER in outcome.result["message"]
    assert "mlbatch-run-spec is not JSON" in outcome.result["message"]
    assert len(fake.insert_bodies()) - before == 1 and not fake.instances


def test_a_metadata_server_that_is_not_ready_at_boot_is_waited_for(world, fake):
    fake.faults.metadata_unavailable = 4
    outcome = run(world, timeout_seconds=60)
    assert outcome.exit_code == 0 and outcome.result["attempt"] == 1


def test_a_run_the_identity_may_not_do_is_refused_before_anything_is_created(world, fake):
    fake.denied_permissions |= {"iam.serviceAccounts.actAs"}
    bucket = open_bucket(world[0].bucket)
    runs_before, inserts_before = set(bucket.list("runs/sleep")), fake.calls["instances.insert"]
    with pytest.raises(MlbatchError) as info:
        run(world)
    assert info.value.exit_code == ExitCode.PERMISSION_DENIED and "iam.serviceAccounts.actAs" in str(info.value)
    assert fake.calls["instances.insert"] == inserts_before and set(bucket.list("runs/sleep")) == runs_before


def test_host_maintenance_does_not_end_a_standard_run(world, fake):
    """A host maintenance event during a standard (non-Spot, no GPU) run: Compute live-migrates a VM
    set to MIGRATE and the run goes on; one set to TERMINATE was stopped, and the run ended as an
    infrastructure failure (110) that is not retried (issue 15, item 8)."""
    settings, version, _ = world
    bucket = open_bucket(settings.bucket)
    spot = manifests.load(bucket, version)
    standard = dataclasses.replace(
        spot,
        version=version + ".std",  # a version is at most 40 characters
        jobs={**spot.jobs, "sleep": dataclasses.replace(spot.jobs["sleep"], spot=False)},
    )
    manifests.publish(bucket, standard)
    thread, outcome = _run_in_thread((settings, standard.version, fake), params=("seconds=20",), timeout_seconds=120)
    instance = wait_for(lambda: next((i for i in fake.instances.values() if b" 2/20" in i.serial), None), what="the job")
    assert instance.body["scheduling"]["provisioningModel"] == "STANDARD"
    fake.host_maintenance(instance.name)
    thread.join(timeout=300)
    assert outcome, "the run ended"
    assert outcome[0].exit_code == 0 and outcome[0].result["attempt"] == 1, outcome[0].result
