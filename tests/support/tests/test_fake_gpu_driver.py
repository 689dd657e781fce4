"""The fake Compute API's GPU VMs: the driver loads only with Secure Boot off (Debian's module
is unsigned), and only on an image that carries it; a VM without GPUs gets no stand-in. Run in a
container as the fake runs its instances (the stand-in first on PATH), with the agent's parser."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mlbatch.agent.gpu import parse_view
from tests.support.fake_compute.accelerators import DRIVER_NOT_LOADED, nvidia_smi_stand_in
from tests.support.fake_compute.state import FakeInstance

# One xdist worker runs them all (`-n 2 --dist loadgroup`): one `infra` (local_infra.up) at a time.
pytestmark = [pytest.mark.docker, pytest.mark.xdist_group("local-engine")]
L4 = [{"acceleratorType": "zones/europe-west4-a/acceleratorTypes/nvidia-l4", "acceleratorCount": 1}]


def stand_in(tmp_path: Path, secure_boot: bool, accelerators=L4) -> Path | None:
    body = {"name": "vm", "guestAccelerators": accelerators, "shieldedInstanceConfig": {"enableSecureBoot": secure_boot}}
    return nvidia_smi_stand_in(FakeInstance(zone="europe-west4-a", body=body, workdir=tmp_path))


def smi_on_the_vm(smi: Path, image_has_driver: bool) -> subprocess.CompletedProcess:
    mounts = ["-v", f"{smi}:/usr/local/bin/nvidia-smi:ro"]
    if image_has_driver:  # the driver package's binary (what the GPU image carries at /usr/bin/nvidia-smi)
        mounts += ["-v", "/bin/true:/usr/bin/nvidia-smi:ro"]
    argv = ["docker", "run", "--rm", "--network", "none", *mounts, "debian:bookworm-slim", "nvidia-smi"]
    return subprocess.run([*argv, "--query-gpu=driver_version,name,memory.total", "--format=csv,noheader,nounits"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_with_secure_boot_the_unsigned_driver_does_not_load(infra, tmp_path):
    result = smi_on_the_vm(stand_in(tmp_path, secure_boot=True), image_has_driver=True)
    assert result.returncode == 9 and DRIVER_NOT_LOADED in result.stdout


def test_without_secure_boot_it_lists_the_attached_gpus(infra, tmp_path):
    result = smi_on_the_vm(stand_in(tmp_path, secure_boot=False), image_has_driver=True)
    assert result.returncode == 0, result.stderr
    assert [g["name"] for g in parse_view(result.stdout)["gpus"]] == ["NVIDIA L4"]


def test_an_image_without_the_driver_has_no_nvidia_smi(infra, tmp_path):
    result = smi_on_the_vm(stand_in(tmp_path, secure_boot=False), image_has_driver=False)
    assert result.returncode == 127 and "not found" in result.stderr


def test_a_vm_without_gpus_gets_no_stand_in(tmp_path):
    assert stand_in(tmp_path, secure_boot=False, accelerators=[]) is None
