"""acceleratorTypes (get, list), and what GPUs do to an instance: the zones that offer each
type, the machine shapes that take them, GPU quota, and a driver that loads or not.

Each rule from Google's documentation, not from mlbatch's code:
- Zones per type: "GPU regions and zones availability"
  (https://cloud.google.com/compute/docs/gpus/gpu-regions-zones), the rows of the zones below
  as that page listed them (2025); a type a zone lacks is a 404 on acceleratorTypes.get, as for
  any resource that does not exist.
- Machine shapes: "GPU machine types" (https://cloud.google.com/compute/docs/gpus): G2, A2 and
  A3 types come with a fixed number of their GPU; N1 takes T4, V100, P100 and P4 in the counts
  listed there (the fake's own copy of those tables, below, written from the page).
- Quota: "GPU quota" (https://cloud.google.com/compute/resource-usage#gpu_quota): per region and
  type (NVIDIA_L4_GPUS...; PREEMPTIBLE_NVIDIA_L4_GPUS for Spot VMs where the project has that
  quota) and GPUS_ALL_REGIONS for the project; an insert beyond a limit ends its operation in
  QUOTA_EXCEEDED naming the metric, as for CPUs.
- The driver: Secure Boot loads only kernel modules signed by a key the firmware trusts
  (https://cloud.google.com/compute/docs/instances/modifying-shielded-vm, and "Installing GPU
  drivers": "If Secure Boot is enabled, ... you must sign the driver"); the NVIDIA module
  Debian's nvidia-kernel-dkms builds on the VM is signed by no enrolled key. So a GPU VM boots
  either way; with Secure Boot on its driver does not load and `nvidia-smi` fails as it does
  then ("couldn't communicate with the NVIDIA driver"), with Secure Boot off it lists the GPUs.
  The fake puts a stand-in `nvidia-smi` first on the guest's PATH (/usr/local/bin) that says
  which; it lists the GPUs only when the image carries the driver's own /usr/bin/nvidia-smi.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.fake_compute.errors import ApiError, not_found

_ZONE = "/compute/v1/projects/(?P<project>[^/]+)/zones/(?P<zone>[^/]+)"
ZONE_ACCELERATORS: dict[str, set[str]] = {
    "europe-west4-a": {"nvidia-h100-80gb", "nvidia-tesla-a100", "nvidia-l4", "nvidia-tesla-t4", "nvidia-tesla-v100"},
    "europe-west4-b": {"nvidia-tesla-a100", "nvidia-l4", "nvidia-tesla-p100", "nvidia-tesla-t4", "nvidia-tesla-v100"},
    "europe-west4-c": {"nvidia-h100-80gb", "nvidia-l4", "nvidia-tesla-p4", "nvidia-tesla-t4", "nvidia-tesla-v100"},
    "us-central1-a": {"nvidia-tesla-a100", "nvidia-l4", "nvidia-tesla-p4", "nvidia-tesla-t4", "nvidia-tesla-v100"},
}
DESCRIPTIONS = {
    "nvidia-l4": ("NVIDIA L4", 8, 23034),
    "nvidia-tesla-t4": ("NVIDIA T4", 4, 15360),
    "nvidia-tesla-v100": ("NVIDIA V100", 8, 16384),
    "nvidia-tesla-p100": ("NVIDIA Tesla P100", 4, 16384),
    "nvidia-tesla-p4": ("NVIDIA Tesla P4", 4, 7680),
    "nvidia-tesla-a100": ("NVIDIA A100 40GB", 16, 40960),
    "nvidia-h100-80gb": ("NVIDIA H100 80GB", 8, 81559),
}
# Accelerator-optimized machine types: the GPU and how many each comes with.
FIXED_SHAPES: dict[str, tuple[str, int]] = {
    **{f"g2-standard-{n}": ("nvidia-l4", c) for n, c in ((4, 1), (8, 1), (12, 1), (16, 1), (24, 2), (32, 1), (48, 4), (96, 8))},
    **{f"a2-highgpu-{n}g": ("nvidia-tesla-a100", n) for n in (1, 2, 4, 8)},
    "a2-megagpu-16g": ("nvidia-tesla-a100", 16),
    **{f"a2-ultragpu-{n}g": ("nvidia-a100-80gb", n) for n in (1, 2, 4, 8)},
    "a3-highgpu-8g": ("nvidia-h100-80gb", 8),
}
# N1's attachable GPUs and the counts an N1 VM may have of each.
N1_COUNTS = {
    "nvidia-tesla-t4": (1, 2, 4),
    "nvidia-tesla-v100": (1, 2, 4, 8),
    "nvidia-tesla-p100": (1, 2, 4),
    "nvidia-tesla-p4": (1, 2, 4),
}


def shape_takes(machine: str, kind: str, count: int) -> bool:
    if machine in FIXED_SHAPES:
        return FIXED_SHAPES[machine] == (kind, count)
    return machine.startswith("n1-") and count in N1_COUNTS.get(kind, ())


# Per-type quota metrics (the page above): not every name follows the type's.
QUOTA_METRICS = {
    "nvidia-l4": "NVIDIA_L4_GPUS",
    "nvidia-tesla-t4": "NVIDIA_T4_GPUS",
    "nvidia-tesla-v100": "NVIDIA_V100_GPUS",
    "nvidia-tesla-p100": "NVIDIA_P100_GPUS",
    "nvidia-tesla-p4": "NVIDIA_P4_GPUS",
    "nvidia-tesla-a100": "NVIDIA_A100_GPUS",
    "nvidia-a100-80gb": "NVIDIA_A100_80GB_GPUS",
    "nvidia-h100-80gb": "NVIDIA_H100_GPUS",
}
DRIVER_NOT_LOADED = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running."
)


def accelerators_of(body: dict[str, Any]) -> list[tuple[str, int]]:
    """(type, count) of an instance body's guestAccelerators."""
    return [
        (a.get("acceleratorType", "").rsplit("/", 1)[-1], int(a.get("acceleratorCount", 0)))
        for a in body.get("guestAccelerators") or []
    ]


class AcceleratorsMixin:
    ROUTES = [
        ("GET", _ZONE + r"/acceleratorTypes", "acceleratorTypes", "list"),
        ("GET", _ZONE + r"/acceleratorTypes/(?P<acceleratorType>[^/]+)", "acceleratorTypes", "get"),
    ]

    def _accelerator(self, project: str, zone: str, kind: str) -> dict[str, Any]:
        name, most, _ = DESCRIPTIONS.get(kind, (kind, 8, 0))
        return {
            "kind": "compute#acceleratorType",
            "id": str(abs(hash((zone, kind))) % 10**10),
            "name": kind,
            "description": name,
            "zone": f"https://www.googleapis.com/compute/v1/projects/{project}/zones/{zone}",
            "maximumCardsPerInstance": most,
            "selfLink": f"https://www.googleapis.com/compute/v1/projects/{project}/zones/{zone}/acceleratorTypes/{kind}",
        }

    def _acceleratorTypes_get(self, project, zone, acceleratorType, params, body):  # noqa: N802, N803 (the API's names)
        self._check_zone(project, zone)
        if acceleratorType not in ZONE_ACCELERATORS.get(zone, set()):
            raise not_found(f"projects/{project}/zones/{zone}/acceleratorTypes/{acceleratorType}")
        return self._accelerator(project, zone, acceleratorType)

    def _acceleratorTypes_list(self, project, zone, params, body):  # noqa: N802
        self._check_zone(project, zone)
        items = [self._accelerator(project, zone, kind) for kind in sorted(ZONE_ACCELERATORS.get(zone, set()))]
        return {"kind": "compute#acceleratorTypeList", "items": items}

    def check_accelerators(self, zone: str, body: dict[str, Any]) -> None:
        """What instances.insert refuses of a body's GPUs: a type its zone lacks, a count its machine type does not take."""
        machine = body.get("machineType", "").rsplit("/", 1)[-1]
        for kind, count in accelerators_of(body):
            if kind not in ZONE_ACCELERATORS.get(zone, set()):
                raise ApiError(
                    400,
                    f"Invalid value for field 'resource.guestAccelerators[0].acceleratorType': "
                    f"'zones/{zone}/acceleratorTypes/{kind}'. Accelerator type '{kind}' does not exist in zone '{zone}'.",
                )
            if not shape_takes(machine, kind, count):
                raise ApiError(400, f"[{machine}, {count} x {kind}] features are not compatible for creating instance.")

    def gpu_quota_problem(self, zone: str, body: dict[str, Any]) -> str:
        """The quota an insert would exceed (self.gpu_quota: metric -> limit, what a test sets), or ""."""
        spot = (body.get("scheduling") or {}).get("provisioningModel") == "SPOT"
        region = zone.rsplit("-", 1)[0]
        for kind, count in accelerators_of(body):
            metric = QUOTA_METRICS.get(kind, kind.upper())
            if spot and f"PREEMPTIBLE_{metric}" in self.gpu_quota:
                metric = f"PREEMPTIBLE_{metric}"
            for name, scope in ((metric, region), ("GPUS_ALL_REGIONS", "")):
                limit = self.gpu_quota.get(name)
                used = self._gpus_in_use(name, region if scope else "")
                if limit is not None and used + count > limit:
                    where = f" in region {region}" if scope else " in the project"
                    return f"Quota '{name}' exceeded.  Limit: {limit:.1f}{where}."
        return ""

    def _gpus_in_use(self, metric: str, region: str) -> int:
        total = 0
        for instance in self.instances.values():
            if region and not instance.zone.startswith(region):
                continue
            spot = (instance.body.get("scheduling") or {}).get("provisioningModel") == "SPOT"
            for kind, count in accelerators_of(instance.body):
                own = QUOTA_METRICS.get(kind, kind.upper())
                if metric in ("GPUS_ALL_REGIONS", own) or (spot and metric == f"PREEMPTIBLE_{own}"):
                    total += count
        return total


def nvidia_smi_stand_in(instance: Any) -> Path | None:
    """The guest's `nvidia-smi` as its driver would answer, for an instance with GPUs; None without."""
    attached = accelerators_of(instance.body)
    if not attached or instance.workdir is None:
        return None
    secure_boot = bool((instance.body.get("shieldedInstanceConfig") or {}).get("enableSecureBoot"))
    lines = [
        f"{DESCRIPTIONS.get(kind, (kind, 0, 0))[0]}, {DESCRIPTIONS.get(kind, (kind, 0, 0))[2]}"
        for kind, count in attached
        for _ in range(count)
    ]
    rows = "\n".join(f'echo "$driver, {line}"' for line in lines)
    script = f"""#!/bin/sh
# The fake Compute API's stand-in for the driver's nvidia-smi (tests/support/fake_compute/accelerators.py).
[ -x /usr/bin/nvidia-smi ] || {{ echo "nvidia-smi: not found" >&2; exit 127; }}
if {"true" if secure_boot else "false"}; then
  echo "{DRIVER_NOT_LOADED}"
  exit 9
fi
driver=$(dpkg-query -W -f='${{Version}}' nvidia-smi 2>/dev/null | cut -d- -f1)
{rows}
"""
    path = instance.workdir / "nvidia-smi"
    path.write_text(script)
    path.chmod(0o755)
    return path
