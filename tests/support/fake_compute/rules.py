"""Cross-field rules instances.insert enforces beyond the discovery document's schema
(which only knows each field on its own): Spot constraints, what GPUs need, and what
Shielded VM's Secure Boot needs from the boot image. Messages as the real API words them."""

from __future__ import annotations

from typing import Any

from tests.support.fake_compute.errors import ApiError

# Which machine families take which attached accelerators (N1 takes the older NVIDIA cards;
# A2 and G2 come with theirs). E2, N2, C3... take none.
ACCELERATOR_FAMILIES = {
    "nvidia-tesla-t4": {"n1"},
    "nvidia-tesla-v100": {"n1"},
    "nvidia-tesla-p100": {"n1"},
    "nvidia-tesla-p4": {"n1"},
    "nvidia-tesla-a100": {"a2"},
    "nvidia-l4": {"g2"},
}


def _invalid(field: str, value: Any, why: str) -> ApiError:
    return ApiError(400, f"Invalid value for field 'resource.{field}': '{value}'. {why}")


def check_instance_rules(body: dict[str, Any], image: dict[str, Any]) -> None:
    scheduling = body.get("scheduling") or {}
    spot = scheduling.get("provisioningModel") == "SPOT" or scheduling.get("preemptible") is True
    if spot:
        if scheduling.get("automaticRestart") is True:
            raise _invalid("scheduling.automaticRestart", "true", "Spot and preemptible VMs do not support automatic restart.")
        if scheduling.get("onHostMaintenance") == "MIGRATE":
            raise _invalid("scheduling.onHostMaintenance", "MIGRATE", "Spot and preemptible VMs cannot live-migrate.")
    action = scheduling.get("instanceTerminationAction")
    if action and not spot and "maxRunDuration" not in scheduling and "terminationTime" not in scheduling:
        raise _invalid(
            "scheduling.instanceTerminationAction",
            action,
            "An instance termination action needs a Spot VM or a maxRunDuration / terminationTime.",
        )
    accelerators = body.get("guestAccelerators") or []
    if accelerators:
        if scheduling.get("onHostMaintenance", "MIGRATE") != "TERMINATE":
            raise _invalid(
                "scheduling.onHostMaintenance",
                scheduling.get("onHostMaintenance", "MIGRATE"),
                "Instances with guest accelerators do not support live migration.",
            )
        machine = body.get("machineType", "").rsplit("/", 1)[-1]
        for accelerator in accelerators:
            kind = accelerator.get("acceleratorType", "").rsplit("/", 1)[-1]
            if machine.split("-", 1)[0] not in ACCELERATOR_FAMILIES.get(kind, set()):
                raise ApiError(400, f"[{machine}, {kind}] features are not compatible for creating instance.")
    shielded = body.get("shieldedInstanceConfig") or {}
    features = {f.get("type") for f in image.get("guestOsFeatures", [])}
    if shielded.get("enableSecureBoot") and "UEFI_COMPATIBLE" not in features:
        raise _invalid(
            "shieldedInstanceConfig",
            "enableSecureBoot",
            f"Shielded VM Config can only be set when using a UEFI-compatible disk; image {image['name']} is not.",
        )
