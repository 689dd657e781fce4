"""A GPU job's GPUs, as the agent finds them before the job runs (docs/architecture.md, "GPU jobs").

Two checks, each with the failure it names (exit 104, like a container that cannot be pulled:
the instance cannot give the job what the release promised it):

- on a VM, the driver: `nvidia-smi` on the VM. A driver that did not load (Secure Boot on with
  Debian's unsigned, DKMS-built module; no GPU attached) makes it fail, and the job would
  otherwise run on the CPU while the VM bills its GPUs.
- everywhere, the job's view: `nvidia-smi` in a throw-away container of the job's own image with
  the job's device request (NVIDIA's container toolkit mounts its nvidia-smi and the driver's
  libraries into it: the check NVIDIA documents for the toolkit). The engine refuses the request
  when it has no NVIDIA runtime hook (no toolkit) and the hook fails when the driver is not
  there; what runs is exactly what the job's container will get.

The view (driver version, each GPU's name and memory) goes into the attempt's record.
"""

from __future__ import annotations

import contextlib
import subprocess
from typing import Any

from mlbatch.core.errors import GpuUnavailable
from mlbatch.core.scrub import scrub

QUERY = ("--query-gpu=driver_version,name,memory.total", "--format=csv,noheader,nounits")
SMI_TIMEOUT = 120  # seconds: the first nvidia-smi after boot initialises every GPU
# Debian's driver is built by DKMS on the VM's kernel and signed by no key the firmware knows.
SECURE_BOOT_HINT = (
    "Secure Boot refuses the unsigned module of Debian's driver (mlbatch boots GPU VMs with Secure Boot off); "
    "a VM booted from an image without the driver, or without GPUs attached, fails the same way"
)


def device_requests(count: int) -> list[Any]:
    """The job container's request for `count` GPUs (`docker run --gpus N`)."""
    from docker.types import DeviceRequest

    return [DeviceRequest(count=count, capabilities=[["gpu"]])]


def parse_view(text: str) -> dict[str, Any]:
    """nvidia-smi's CSV lines (driver, name, MiB per GPU) -> {"driver": ..., "gpus": [{"name", "memory_mib"}]}."""
    gpus, drivers = [], set()
    for line in text.strip().splitlines():
        driver, name, memory = (part.strip() for part in line.split(",", 2))
        drivers.add(driver)
        try:
            mib: int | str = int(float(memory))
        except ValueError:  # "[N/A]" on some GPUs
            mib = memory
        gpus.append({"name": name, "memory_mib": mib})
    if not gpus:
        raise GpuUnavailable(f"nvidia-smi listed no GPU: {text.strip()[:300]!r}")
    return {"driver": ", ".join(sorted(drivers)), "gpus": gpus}


def _said(text: str) -> str:
    """What nvidia-smi said, on one line, short and without secrets, for the attempt's message."""
    return scrub(" ".join(text.split())[:400])


def host_view() -> dict[str, Any]:
    """nvidia-smi on this VM; GpuUnavailable when it is missing or fails (the driver did not load)."""
    try:
        done = subprocess.run(["nvidia-smi", *QUERY], capture_output=True, text=True, timeout=SMI_TIMEOUT)
    except FileNotFoundError:
        raise GpuUnavailable(
            "this VM has no NVIDIA driver (nvidia-smi is not installed): a GPU job boots the release's GPU image"
        ) from None
    except subprocess.TimeoutExpired:
        raise GpuUnavailable(f"nvidia-smi on this VM did not answer within {SMI_TIMEOUT}s") from None
    if done.returncode != 0:
        said = _said(done.stdout + done.stderr)
        raise GpuUnavailable(
            f"the NVIDIA driver is not working on this VM (nvidia-smi exited {done.returncode}: {said}); {SECURE_BOOT_HINT}"
        )
    return parse_view(done.stdout)


def _refused(count: int, exc: Exception) -> GpuUnavailable:
    explanation = getattr(exc, "explanation", None) or exc
    return GpuUnavailable(
        f"the engine cannot give the job's container {count} GPU(s): {explanation} "
        "(it needs NVIDIA's container toolkit and a working driver)"
    )


def container_view(client, image: str, count: int, labels: dict[str, str]) -> dict[str, Any]:
    """nvidia-smi in a container of the job's image given the job's device request. Created,
    started and removed here rather than by `containers.run(remove=True)`, which leaves the
    container behind when the engine refuses to start it (no toolkit: the usual refusal)."""
    import docker.errors

    try:
        container = client.containers.create(
            image,
            ["nvidia-smi", *QUERY],
            entrypoint=[],
            device_requests=device_requests(count),
            labels=labels,
            network_mode="none",
        )
    except docker.errors.APIError as exc:
        raise _refused(count, exc) from None
    try:
        container.start()
        status = int(container.wait()["StatusCode"])
        if status:
            said = _said(container.logs(stdout=False, stderr=True).decode(errors="replace"))
            raise GpuUnavailable(f"nvidia-smi failed in the job's container (exit {status}: {said})")
        out = container.logs(stdout=True, stderr=False)
    except docker.errors.APIError as exc:
        raise _refused(count, exc) from None
    finally:
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True)
    return parse_view(out.decode(errors="replace"))
