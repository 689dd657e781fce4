"""GPU jobs without a GPU: the catalog's refusals, the gce provider's instance and preflight
against the fake Compute API (accelerator types per zone, GPU quota, zone fallback), the Cloud
Batch job body against the fake Batch API, and the refusals of --allow-cpu."""

from __future__ import annotations

import dataclasses
import json
import urllib.error
import urllib.request

import pytest
from google.cloud import batch_v1

from mlbatch.core.catalog import parse_catalog
from mlbatch.core.errors import BadInput, CapacityError, ExitCode, MlbatchError
from mlbatch.core.manifest import Manifest, VmImage
from mlbatch.run.commands import RunOptions
from tests.conftest import ROOT
from tests.support.fake_compute.accelerators import ZONE_ACCELERATORS
from tests.support.tests.test_fake_batch import body as batch_body
from tests.support.tests.test_fake_batch import fake as batch_fake  # noqa: F401 (a fixture)
from tests.support.tests.test_fake_batch import jobs as batch_jobs  # noqa: F401 (a fixture)
from tests.support.tests.test_fake_batch import raw_create
from tests.unit.test_gce_api import PROJECT, ZONE_A, ZONE_B, api, fake, make_provider, provider, request  # noqa: F401

L4 = {"machine_type": "g2-standard-4", "gpu_type": "nvidia-l4", "gpu_count": 1}


def catalog(body: str):
    return parse_catalog(f"jobs:\n  train:\n    container: trainer\n    command: [python, train.py]\n    {body}\n", {"trainer"})


# --- the catalog ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "machine_type: g2-standard-4\n    gpu: {type: nvidia-l4, count: 1}",
        "machine_type: g2-standard-24\n    gpu: {type: nvidia-l4, count: 2}",
        "machine_type: a2-highgpu-1g\n    gpu: {type: nvidia-tesla-a100, count: 1}",
        "machine_type: a3-highgpu-8g\n    gpu: {type: nvidia-h100-80gb, count: 8}",
        "machine_type: n1-standard-8\n    gpu: {type: nvidia-tesla-t4, count: 2}",
        "machine_type: n1-highmem-8\n    gpu: {type: nvidia-tesla-v100, count: 1}",
        "machine_type: n1-custom-12-78848\n    gpu: {type: nvidia-tesla-v100, count: 1}",
    ],
)
def test_gpus_google_offers_on_machine_types_that_take_them(body):
    job = catalog(body)["train"]
    assert job.gpu_count >= 1 and job.gpu_type.startswith("nvidia-")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "machine_type: n1-standard-4\n    gpu: {type: nvidia-k80, count: 1}",
            "invalid gpu type 'nvidia-k80' of job train: expected one of",
        ),
        (
            "machine_type: e2-standard-4\n    gpu: {type: nvidia-l4, count: 1}",
            "expected a machine type that comes with nvidia-l4: g2-standard-4",
        ),
        (
            "machine_type: g2-standard-4\n    gpu: {type: nvidia-l4, count: 2}",
            "expected count 1: g2-standard-4 comes with 1 nvidia-l4; 2 come with g2-standard-24",
        ),
        (
            "machine_type: a2-highgpu-1g\n    gpu: {type: nvidia-l4, count: 1}",
            "expected a machine type that comes with nvidia-l4",
        ),
        (
            "machine_type: g2-standard-4",
            "invalid machine type g2-standard-4 without gpu of job train: expected gpu: {type: nvidia-l4, count: 1}",
        ),
        (
            "machine_type: e2-standard-8\n    gpu: {type: nvidia-tesla-t4, count: 1}",
            "expected an N1 machine type for nvidia-tesla-t4",
        ),
        (
            "machine_type: n1-standard-8\n    gpu: {type: nvidia-tesla-t4, count: 3}",
            "expected a count of 1, 2, 4 for nvidia-tesla-t4",
        ),
        (
            "machine_type: n1-standard-16\n    gpu: {type: nvidia-tesla-v100, count: 1}",
            "at most 12 vCPUs and 78 GB with 1 nvidia-tesla-v100",
        ),
        ("machine_type: n1-standard-4\n    gpu: {type: nvidia-tesla-t4, count: 17}", "jobs.train.gpu.count"),
        ("machine_type: n1-standard-4\n    gpu: {type: nvidia-tesla-t4, cards: 1}", "unknown keys ['cards']"),
    ],
)
def test_gpu_mistakes_are_refused_with_100_naming_job_value_and_form(body, message):
    with pytest.raises(BadInput) as info:
        catalog(body)
    assert info.value.exit_code == ExitCode.BAD_INPUT
    assert "jobs.train.gpu" in str(info.value) and message in str(info.value)


# --- what a run refuses before anything starts -------------------------------------------------


def test_a_gpu_job_needs_a_release_with_a_gpu_image_and_boots_it():
    job = catalog("machine_type: g2-standard-4\n    gpu: {type: nvidia-l4, count: 1}")["train"]
    plain = VmImage(name="mlbatch-v1", ref="img-plain", input_hash="h", baked_by_version="v1.0.0")
    old = Manifest("v1.0.0", "sha", "now", "gcp", plain, {}, None, {"train": job})  # type: ignore[arg-type]
    with pytest.raises(BadInput, match="release v1.0.0 has no GPU image"):
        old.image_for(job)
    gpu = dataclasses.replace(plain, ref="img-gpu", gpu=True)
    assert dataclasses.replace(old, gpu_image=gpu).image_for(job).ref == "img-gpu"
    cpu_job = catalog("machine_type: e2-small")["train"]
    assert dataclasses.replace(old, gpu_image=gpu).image_for(cpu_job).ref == "img-plain"


def test_a_gpu_runs_spec_carries_its_gpus_and_boots_the_gpu_image(tmp_path):
    from mlbatch.core.bucket import open_bucket
    from mlbatch.core.manifest import manifest_key
    from mlbatch.run.controller import RunRequest, prepare, run_spec
    from tests.support.releases import publish_release

    bucket = open_bucket(f"file://{tmp_path}")
    gpu_catalog = "jobs:\n  train-gpu:\n    container: trainer\n    command: [python]\n    machine_type: g2-standard-4\n"
    gpu_catalog += "    gpu: {type: nvidia-l4, count: 1}\n  cpu:\n    container: trainer\n    command: [python]\n"
    manifest = publish_release(bucket, catalog=gpu_catalog)
    with pytest.raises(BadInput, match="has no GPU image"):  # a release made before GPU jobs
        prepare(bucket, RunRequest("train-gpu", "v1.0.0"))
    gpu = dataclasses.replace(manifest.vm_image, ref="mlbatch-vm-image:mlbatch-gpu-v1", gpu=True)
    bucket.write(manifest_key("v1.0.1"), dataclasses.replace(manifest, version="v1.0.1", gpu_image=gpu).to_json().encode())
    spec = run_spec(
        bucket, prepare(bucket, RunRequest("train-gpu", "v1.0.1", allow_cpu=True)), "train-gpu-20260101-000000-abcd", ""
    )
    assert (spec.gpu_count, spec.allow_cpu, spec.vm_image) == (1, True, "mlbatch-vm-image:mlbatch-gpu-v1")
    with pytest.raises(BadInput, match="--allow-cpu applies to GPU jobs; job cpu asks for no GPU"):
        prepare(bucket, RunRequest("cpu", "v1.0.1", allow_cpu=True))


def test_allow_cpu_is_for_single_runs():
    with pytest.raises(BadInput, match="--allow-cpu applies to single runs"):
        RunOptions("train", "v1.0.0", sweeps=("n=1,2",), allow_cpu=True).request()


def test_allow_cpu_is_refused_on_compute_engine(provider):  # noqa: F811
    job = dataclasses.replace(request("x", **L4).job)
    with pytest.raises(BadInput, match="--allow-cpu applies to the local profile"):
        provider.check_job(job, allow_cpu=True)


# --- the gce provider against the fake Compute API --------------------------------------------


def test_the_preflight_keeps_the_zones_that_offer_the_type(fake, provider):  # noqa: F811
    assert "nvidia-tesla-p100" in ZONE_ACCELERATORS[ZONE_B] and "nvidia-tesla-p100" not in ZONE_ACCELERATORS[ZONE_A]
    job = request("x", machine_type="n1-standard-4", gpu_type="nvidia-tesla-p100", gpu_count=1).job
    provider.check_job(job)
    assert provider.zones == (ZONE_B,)
    assert fake.calls["acceleratorTypes.get"] >= 2


def test_the_preflight_refuses_a_type_no_configured_zone_offers(fake, provider):  # noqa: F811
    job = request("x", machine_type="n1-standard-4", gpu_type="nvidia-tesla-p4", gpu_count=1).job
    with pytest.raises(BadInput) as info:
        provider.check_job(job)
    assert info.value.exit_code == ExitCode.BAD_INPUT
    assert f"nvidia-tesla-p4 and none of the configured zones ({ZONE_A}, {ZONE_B}) offers it" in str(info.value)


def test_a_gpu_instance_passes_the_fakes_checks(fake, provider):  # noqa: F811
    provider.check_job(request("x", **L4).job)
    provider.create(request("mlb-gpu-1", spot=True, **L4), ZONE_A)
    made = fake.find("mlb-gpu-1").body
    assert made["guestAccelerators"] == [{"acceleratorType": f"zones/{ZONE_A}/acceleratorTypes/nvidia-l4", "acceleratorCount": 1}]
    assert made["scheduling"]["onHostMaintenance"] == "TERMINATE" and made["scheduling"]["provisioningModel"] == "SPOT"
    assert made["shieldedInstanceConfig"]["enableSecureBoot"] is False


def test_a_gpu_stockout_sends_the_run_to_the_next_zone(fake, provider):  # noqa: F811
    fake.faults.stockout_zones = {ZONE_A}
    with pytest.raises(CapacityError):
        provider.create(request("mlb-gpu-2", **L4), ZONE_A)
    provider.create(request("mlb-gpu-2", **L4), ZONE_B)
    assert fake.find("mlb-gpu-2").zone == ZONE_B


@pytest.mark.parametrize(
    ("quota", "spot", "metric"),
    [
        ({"NVIDIA_L4_GPUS": 0}, False, "NVIDIA_L4_GPUS"),
        ({"PREEMPTIBLE_NVIDIA_L4_GPUS": 0}, True, "PREEMPTIBLE_NVIDIA_L4_GPUS"),
        ({"GPUS_ALL_REGIONS": 1}, False, "GPUS_ALL_REGIONS"),
    ],
)
def test_gpu_quota_is_107_naming_the_metric(fake, provider, quota, spot, metric):  # noqa: F811
    fake.gpu_quota = dict(quota)
    try:
        if metric == "GPUS_ALL_REGIONS":  # the first GPU VM fits the project's limit, the second does not
            provider.create(request("mlb-gpu-q0", spot=spot, **L4), ZONE_A)
        with pytest.raises(MlbatchError) as info:
            provider.create(request("mlb-gpu-q1", spot=spot, **L4), ZONE_A)
    finally:
        fake.gpu_quota = {}
    assert info.value.exit_code == ExitCode.QUOTA_EXCEEDED == 107
    assert f"Quota '{metric}' exceeded" in str(info.value)


def _raw(api_fake, method: str, path: str, payload: dict | None = None) -> tuple[int, dict]:
    url = f"{api_fake.endpoint}/compute/v1/projects/{PROJECT}/zones/{ZONE_A}/{path}"
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_fake_serves_accelerator_types_per_zone(fake):  # noqa: F811
    status, listed = _raw(fake, "GET", "acceleratorTypes")
    assert status == 200 and {i["name"] for i in listed["items"]} == ZONE_ACCELERATORS[ZONE_A]
    assert _raw(fake, "GET", "acceleratorTypes/nvidia-l4")[1]["maximumCardsPerInstance"] == 8
    assert _raw(fake, "GET", "acceleratorTypes/nvidia-tesla-p4")[0] == 404
    assert _raw(fake, "GET", "acceleratorTypes?bogus=1")[0] == 400  # parameters checked against compute.v1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"gpu_type": "nvidia-tesla-p4", "machine_type": "n1-standard-4"}, "does not exist in zone"),
        ({"gpu_count": 2}, "features are not compatible"),
    ],
)
def test_the_fake_refuses_gpus_its_zone_or_machine_does_not_take(fake, provider, change, message):  # noqa: F811
    with pytest.raises(MlbatchError, match=message):
        provider.create(request("mlb-gpu-bad", **{**L4, **change}), ZONE_A)


# --- the Cloud Batch job body against the fake Batch API ---------------------------------------


def _gpu_batch_payload(jobs, batch_api, **gpu) -> dict:
    job = dataclasses.replace(parse_catalog((ROOT_CATALOG).read_text())["sleep"], **{**L4, **gpu})
    made = batch_body(jobs, batch_api)
    jobs_body = jobs.job_body(
        _spec_of(made), job, [job.resolve_params({})], 1, {"managed-by": "mlbatch", "run-id": "sleep-20260101-000000-abcd"}, 900
    )
    return json.loads(batch_v1.Job.to_json(jobs_body, use_integers_for_enums=False))


def _spec_of(made):
    from mlbatch.core import runs

    env = made.task_groups[0].task_spec.runnables[0].environment.variables
    return runs.RunSpec.from_json(env["MLBATCH_RUN_SPEC"])


ROOT_CATALOG = ROOT / "batch_code" / "jobs.yaml"


def test_a_gpu_sweep_names_its_accelerators_and_boots_the_gpu_image(batch_jobs, batch_fake):  # noqa: F811
    payload = _gpu_batch_payload(batch_jobs, batch_fake)
    instance = payload["allocationPolicy"]["instances"][0]
    (accelerator,) = instance["policy"]["accelerators"]
    assert (accelerator["type"], accelerator["count"]) == ("nvidia-l4", "1")
    assert not instance.get("installGpuDrivers")  # the GPU image carries the driver
    status, reply = raw_create(batch_fake, "mlb-gpu-sweep", payload)
    assert status == 200, reply


@pytest.mark.parametrize(
    ("gpu", "message"),
    [({"gpu_type": "nvidia-tesla-p4", "machine_type": "n1-standard-4"}, "not offered"), ({"gpu_count": 2}, "cannot have 2")],
)
def test_the_fake_batch_refuses_gpus_its_zones_or_machine_do_not_take(batch_jobs, batch_fake, gpu, message):  # noqa: F811
    status, reply = raw_create(batch_fake, "mlb-gpu-bad", _gpu_batch_payload(batch_jobs, batch_fake, **gpu))
    assert status == 400 and message in reply["error"]["message"]
