"""A GPU job's attempt through the real agent and the real Docker engine (which has no NVIDIA
runtime here): the driver check on a VM (a stand-in nvidia-smi first on PATH, as the fake
Compute API gives a GPU VM), the engine's refusal of the device request, and --allow-cpu."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from mlbatch.agent.runner import run_attempt
from mlbatch.core import runs
from mlbatch.core.bucket import open_bucket
from mlbatch.core.bundle import build_bundle
from mlbatch.core.catalog import Job
from mlbatch.core.errors import BadInput, ExitCode
from mlbatch.local.infra import docker_client
from tests.unit.test_records import SPEC

pytestmark = pytest.mark.docker

NOT_LOADED = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running."
)


@pytest.fixture(scope="module")
def job_image(infra) -> str:
    """debian:bookworm-slim in the local registry, by digest (the agent pulls what is not pre-pulled)."""
    client = docker_client()
    repository = "127.0.0.1:5000/mlbatch-gpu-test"
    client.images.get("debian:bookworm-slim").tag(repository, "bookworm")
    client.images.push(repository, "bookworm")
    digest = client.images.get_registry_data(f"{repository}:bookworm").id
    return f"{repository}@{digest}"


@pytest.fixture
def spec(tmp_path, job_image) -> runs.RunSpec:
    code = tmp_path / "code"
    code.mkdir()
    (code / "job.sh").write_text("echo trained on the cpu\n")
    bundle = build_bundle(code)
    bucket_dir = tmp_path / "bucket"
    bucket_dir.mkdir()
    bucket = open_bucket(f"file://{bucket_dir}")
    bucket.write("batch_code/v1/batch_code.tar.gz", bundle.data)
    return dataclasses.replace(
        SPEC,
        bucket=f"file://{bucket_dir}",
        container=job_image,
        code_key="batch_code/v1/batch_code.tar.gz",
        code_sha256=bundle.sha256,
        argv=("sh", "job.sh"),
        params={},
        timeout_seconds=60,
        gpu_count=1,
    )


@pytest.fixture
def smi(tmp_path, monkeypatch):
    """Put a stand-in nvidia-smi first on PATH; returns a function that writes its script."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")

    def write(body: str) -> None:
        path = folder / "nvidia-smi"
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)

    return write


def attempt(spec: runs.RunSpec, tmp_path: Path, on_vm: bool) -> tuple[runs.AttemptRecord, str]:
    record = run_attempt(spec, attempt=1, instance="mlb-gpu-test-1", workdir=tmp_path / "work", on_vm=on_vm)
    log = open_bucket(spec.bucket).read(runs.attempt_key(spec.run_id, 1, runs.ATTEMPT_LOG)).decode()
    return record, log


def test_a_vm_whose_driver_did_not_load_fails_104_and_says_why(spec, tmp_path, smi):
    smi(f'echo "{NOT_LOADED}"; exit 9')  # Secure Boot refused the unsigned module
    record, log = attempt(spec, tmp_path, on_vm=True)
    assert record.status == runs.FETCH_FAILED
    assert runs.ResultRecord.of_attempt(record).run_exit_code == ExitCode.FETCH_FAILED == 104
    assert "the NVIDIA driver is not working on this VM" in record.message and "Secure Boot" in record.message
    assert "trained on the cpu" not in log  # never ran on the CPU


def test_a_vm_without_the_driver_fails_104(spec, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")  # no nvidia-smi anywhere
    record, _ = attempt(spec, tmp_path, on_vm=True)
    assert record.status == runs.FETCH_FAILED and "no NVIDIA driver" in record.message


def test_a_driver_that_loads_is_recorded_and_an_engine_without_the_toolkit_refuses_the_gpus(spec, tmp_path, smi):
    smi('echo "535.309.01, NVIDIA L4, 23034"')
    record, log = attempt(spec, tmp_path, on_vm=True)
    assert record.gpu == {"driver": "535.309.01", "gpus": [{"name": "NVIDIA L4", "memory_mib": 23034}]}
    assert record.status == runs.FETCH_FAILED
    assert "the engine cannot give the job's container 1 GPU(s)" in record.message
    assert "trained on the cpu" not in log
    image_id = docker_client().images.get(spec.container).id
    left = [c.name for c in docker_client().containers.list(all=True, ignore_removed=True) if c.attrs["Image"] == image_id]
    assert left == [], "the refused check's container is removed"


def test_a_local_instance_on_an_engine_without_gpus_fails_104(spec, tmp_path):
    record, _ = attempt(spec, tmp_path, on_vm=False)
    assert record.status == runs.FETCH_FAILED and "cannot give the job's container" in record.message


def test_allow_cpu_runs_the_job_on_the_cpu_and_says_so(spec, tmp_path):
    record, log = attempt(dataclasses.replace(spec, allow_cpu=True), tmp_path, on_vm=False)
    assert record.status == runs.SUCCEEDED, record.message
    assert "trained on the cpu" in log
    assert "it runs on the CPU, as --allow-cpu asked" in log
    assert record.gpu == {}


def test_the_local_profile_refuses_a_gpu_job_on_an_engine_without_gpus(infra, tmp_path):
    from mlbatch.providers.local import LocalProvider
    from tests.conftest import make_settings

    provider = LocalProvider(make_settings(f"file://{tmp_path}"))
    job = Job(name="train-gpu", container="trainer", command=("python",), gpu_type="nvidia-l4", gpu_count=1)
    assert not provider.engine_has_gpus()  # this machine: `docker info` lists no nvidia runtime
    with pytest.raises(BadInput) as info:
        provider.check_job(job)
    assert info.value.exit_code == ExitCode.BAD_INPUT
    assert "job train-gpu asks for 1 nvidia-l4 GPU(s)" in str(info.value) and "--allow-cpu" in str(info.value)
    provider.check_job(job, allow_cpu=True)  # runs on the CPU instead
    provider.check_job(dataclasses.replace(job, gpu_type="", gpu_count=0))  # a CPU job: nothing to refuse
